"""The `hfadapt` command. Heavy libraries are imported inside the subcommands that need them,
so `--help`, `validate`, `recipes` and `schema` start instantly."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hfadapt.core.errors import HfadaptError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hfadapt", description="Parameter-efficient fine-tuning from declarative recipes.")
    flags = {
        "--debug": "show full tracebacks",
        "--verbose": "also show the libraries' output: transformers/datasets/Hub progress bars, logs and warnings",
    }
    # The global flags are accepted after the subcommand too (`hfadapt train R --verbose`); default=SUPPRESS
    # keeps a subcommand from resetting a flag given before it.
    common = argparse.ArgumentParser(add_help=False)
    for flag, text in flags.items():
        p.add_argument(flag, action="store_true", help=text)
        common.add_argument(flag, action="store_true", default=argparse.SUPPRESS, help=text)
    p.add_argument("--version", action="version", version="hfadapt 0.1.0")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", parents=[common], help="train a recipe (file or shipped name) with optional key.sub=value overrides")
    t.add_argument("recipe")
    t.add_argument("overrides", nargs="*", metavar="key.sub=value")
    t.add_argument("--resume", action="store_true", help="continue the run from its latest checkpoint")

    v = sub.add_parser("validate", parents=[common], help="check a recipe without loading models or data")
    v.add_argument("recipe")
    v.add_argument("overrides", nargs="*", metavar="key.sub=value")
    v.add_argument("--search", metavar="FILE", help="also check a search file for `hfadapt tune`")

    e = sub.add_parser("eval", parents=[common], help="evaluate a finished run (a run directory or a Hub adapter id)")
    e.add_argument("run")
    e.add_argument("overrides", nargs="*", metavar="data.key=value", help="evaluate on other data (data section only)")
    e.add_argument("--split", default="validation", choices=["validation", "test"])
    _base_model_flag(e)

    pr = sub.add_parser("predict", parents=[common], help="predict with a finished run: text strings or image paths")
    pr.add_argument("run", help="run directory or Hub adapter id (user/adapter)")
    pr.add_argument("inputs", nargs="*")
    pr.add_argument("--file", help="a file with one input per line (TEXT<TAB>PAIR for text pairs)")
    pr.add_argument("--batch-size", type=int, default=16)
    _base_model_flag(pr)
    gen = pr.add_argument_group("generation (causal-lm, seq2seq; defaults from the recipe's generation section)")
    gen.add_argument("--max-new-tokens", type=int)
    gen.add_argument("--temperature", type=float)
    gen.add_argument("--top-p", type=float)
    gen.add_argument("--num-beams", type=int)
    gen.add_argument("--do-sample", action="store_true", default=None, help="sample instead of greedy decoding")

    pl = sub.add_parser("plan", parents=[common], help="parameters and memory per device of a recipe, from the model config only")
    pl.add_argument("recipe")
    pl.add_argument("overrides", nargs="*", metavar="key.sub=value")
    pl.add_argument("--processes", type=int, default=8, help="devices for the DDP and FSDP rows (default 8)")

    tg = sub.add_parser("targets", parents=[common], help="list candidate adapter target modules of a model")
    tg.add_argument("model", help="Hub id or local directory")
    tg.add_argument("--task", help="build the task's head model (e.g. text-classification)")
    tg.add_argument("--r", type=int, default=8, help="LoRA rank for the parameter counts")
    tg.add_argument("--revision")
    tg.add_argument("--trust-remote-code", action="store_true")

    pu = sub.add_parser("push", parents=[common], help="push a run's adapter, recipe, metrics and model card to the Hub")
    pu.add_argument("run")
    pu.add_argument("repo_id", help="namespace/name")
    pu.add_argument("--private", action="store_true")
    pu.add_argument("--revision", help="branch to push to (created if missing)")
    pu.add_argument("--commit-message")
    pu.add_argument("--license", help="license id for the model card, e.g. apache-2.0")

    mg = sub.add_parser("merge", parents=[common], help="merge the adapter into the base model and save a standalone model, "
                                                       "or combine LoRA adapters into a new one (--method)")
    mg.add_argument("paths", nargs="+", metavar="PATH", help="RUN_OR_ADAPTER [RUN_OR_ADAPTER ...] OUT: run directories or Hub adapter ids, then the output folder")
    mg.add_argument("--method", choices=["linear", "cat", "svd", "ties", "dare_linear", "dare_ties", "magnitude_prune"],
                    help="combine the adapters into a new adapter with peft's add_weighted_adapter")
    mg.add_argument("--weights", help="one weight per adapter, comma-separated (default 1 each)")
    mg.add_argument("--density", type=float, help="share of weights kept: ties, dare_linear, dare_ties, magnitude_prune")
    mg.add_argument("--full", action="store_true", help="with --method: fold the combined adapter into the base model")
    mg.add_argument("--overwrite", action="store_true")
    mg.add_argument("--allow-quantized", action="store_true", help="merge even into a quantized base")
    _base_model_flag(mg)

    _export_parser(sub, common)

    rp = sub.add_parser("report", parents=[common], help="one self-contained HTML page about a run: curves, per-task views, recipe, speed")
    rp.add_argument("run", help="run directory or Hub adapter id (user/adapter)")
    rp.add_argument("--out", help="output file (default: RUN/report.html, or ./NAME-report.html for a Hub adapter)")
    _base_model_flag(rp)

    rs = sub.add_parser("runs", parents=[common], help="a table of the runs under a folder: state, best metric, steps, time")
    rs.add_argument("dir", nargs="?", default="runs", help="folder to search (default: runs)")
    rs.add_argument("--sort", metavar="METRIC", help="best first by this evaluation metric (e.g. accuracy, loss)")
    rs.add_argument("--json", action="store_true", help="print JSON instead of a table")

    _ui_parser(sub, common)
    from hfadapt.serving import command as serve_command

    serve_command.add_parser(sub, common)

    _tune_parser(sub, common)
    sub.add_parser("recipes", parents=[common], help="list the shipped recipes")
    sub.add_parser("schema", parents=[common], help="print the recipe JSON Schema")
    return p


def _ui_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    ui = sub.add_parser("ui", parents=[common], help="a web page to compose recipes, launch and watch runs, read reports and try adapters (Gradio)")
    ui.add_argument("--runs", default="runs", metavar="DIR", help="runs folder (default: runs)")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; others need --auth)")
    ui.add_argument("--port", type=int, default=7860)
    ui.add_argument("--auth", metavar="USER:PASS", help="password for the page (or HFADAPT_UI_AUTH); required off 127.0.0.1")


def _ui(args: argparse.Namespace) -> None:
    from hfadapt.ui.app import serve

    serve(args.runs, host=args.host, port=args.port, auth=args.auth)
def _tune_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    tu = sub.add_parser("tune", parents=[common], help="hyperparameter search over recipe fields (Optuna): trials under runs/NAME/trial-NNN, best.yaml")
    tu.add_argument("recipe")
    tu.add_argument("overrides", nargs="*", metavar="key.sub=value")
    tu.add_argument("--search", metavar="FILE", help="a search file (default: the recipe's own search section)")
    tu.add_argument("--trials", type=int, help="search.n_trials")
    tu.add_argument("--workers", type=int, default=1, help="trial processes on this machine (one GPU each when there are GPUs)")


def _tune(args: argparse.Namespace) -> None:
    from hfadapt.publishing.loading import load_recipe
    from hfadapt.tuning.study import tune

    tune(load_recipe(args.recipe, overrides=args.overrides), args.search, n_trials=args.trials, workers=args.workers)


def _base_model_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-model", metavar="PATH|HUB_ID",
                   help="the base model to load the adapter onto instead of the one it names; needed for a pulled "
                        "adapter whose base was a local folder (published as <local>/NAME or <run>/base_model)")


def _export_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    ex = sub.add_parser("export", parents=[common], help="fold the adapter into its base and export it for onnxruntime (--format onnx)")
    ex.add_argument("run", help="run directory or Hub adapter id (user/adapter)")
    ex.add_argument("out", help="output folder: model.onnx, config.json, processor files, export_info.json")
    ex.add_argument("--format", default="onnx", help="onnx (default)")
    ex.add_argument("--opset", type=int, help="ONNX opset (default: PyTorch's exporter's)")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty OUT")
    ex.add_argument("--allow-quantized", action="store_true", help="fold the adapter even into a quantized base")
    _base_model_flag(ex)


def _export(args: argparse.Namespace) -> None:
    from hfadapt.inference.export import export
    from hfadapt.inference.onnx_model import read_export_info

    out = export(args.run, args.out, format=args.format, opset=args.opset, overwrite=args.overwrite,
                 base_model=args.base_model, allow_quantized=args.allow_quantized)
    info = read_export_info(out)
    print(f"exported {info['task']} model to {out}/model.onnx (opset {info['opset']}); "
          f"max abs difference to PyTorch: {info['max_abs_diff']:.2g}")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # parse_known_args: overrides may follow flags (`train R --resume train.epochs=5`).
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides += extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from hfadapt.core.verbosity import configure

    configure(verbose=args.verbose)  # before any library is imported
    try:
        return _run(args)
    except HfadaptError as e:
        if args.debug:
            raise
        print(f"hfadapt: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`hfadapt runs --json | head`): stop quietly, as Unix tools do. Python
        # would report the failed flush of stdout at exit, so point stdout at /dev/null first.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:
        # A file the user pointed at that the OS refuses (permissions, a file where a folder belongs):
        # one line naming it. Without a file name it is no user error: show the traceback.
        if args.debug or not e.filename:
            raise
        print(f"hfadapt: error: {e.filename}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM during training (a checkpoint saved: the message says so)
        print(f"hfadapt: {e}" if str(e) else "hfadapt: interrupted", file=sys.stderr)
        return getattr(e, "exit_code", 130)


def _run(args: argparse.Namespace) -> int:
    command = COMMANDS.get(args.command)
    if command is None:
        raise HfadaptError(f"unknown command {args.command}")
    command(args)
    return 0


# ---- one function per subcommand; heavy libraries are imported inside ------------------------------
def _positive(value: int, flag: str) -> None:
    if value < 1:
        raise HfadaptError(f"{flag}: must be a positive integer, got {value}")


def _validate(args: argparse.Namespace) -> None:
    from hfadapt.publishing.loading import load_recipe

    recipe = load_recipe(args.recipe, overrides=args.overrides)
    if args.search:
        from hfadapt.core.recipe import with_search

        recipe = with_search(recipe, args.search)
    searched = f", search: {len(recipe.search.space)} fields, {recipe.search.n_trials} trials" if recipe.search else ""
    print(f"{recipe.source}: ok ({recipe.task}, {recipe.model.name_or_path}, {recipe.adapter.method}{searched})")


def _recipes(args: argparse.Namespace) -> None:
    from hfadapt.core.shipped import recipes_dir, shipped_recipes

    for name in shipped_recipes():
        print(name)
    print(f"({recipes_dir()})", file=sys.stderr)


def _schema(args: argparse.Namespace) -> None:
    from hfadapt.core.recipe import recipe_json_schema

    print(json.dumps(recipe_json_schema(), indent=2))


def _train(args: argparse.Namespace) -> None:
    from hfadapt.publishing.loading import load_recipe
    from hfadapt.training.coordinator import train

    result = train(load_recipe(args.recipe, overrides=args.overrides), resume=args.resume)
    _print_metrics(result.metrics, result.output_dir)


def _eval(args: argparse.Namespace) -> None:
    from hfadapt.inference.run_model import evaluate_run

    _print_metrics(evaluate_run(args.run, split=args.split, overrides=args.overrides, base_model=args.base_model), Path(args.run))


def _predict(args: argparse.Namespace) -> None:
    _positive(args.batch_size, "predict --batch-size")
    inputs = list(args.inputs)
    if args.file:
        inputs += _read_input_lines(Path(args.file))
    from hfadapt.inference.run_model import predict

    settings = ("max_new_tokens", "temperature", "top_p", "num_beams", "do_sample")
    generation = {k: getattr(args, k) for k in settings if getattr(args, k) is not None}
    for row in predict(args.run, inputs, batch_size=args.batch_size, generation=generation, base_model=args.base_model):
        print(json.dumps(row))


def _push(args: argparse.Namespace) -> None:
    from hfadapt.publishing.hub import push

    url = push(args.run, args.repo_id, private=args.private, revision=args.revision,
               commit_message=args.commit_message, license=args.license)
    print(f"pushed {args.run} to {args.repo_id}: {url}")


def _merge(args: argparse.Namespace) -> None:
    from hfadapt.inference.merge import merge

    if len(args.paths) < 2:
        raise HfadaptError("merge: give at least one run or adapter and the output folder")
    *sources, out = args.paths
    weights = None
    if args.weights is not None:
        try:
            weights = [float(w) for w in args.weights.split(",")]
        except ValueError:
            raise HfadaptError(f"merge --weights: {args.weights!r} is not a comma-separated list of numbers") from None
    combine = args.method is not None or len(sources) > 1 or weights is not None or args.density is not None
    if args.full and not combine:
        raise HfadaptError("merge --full: only with --method; `merge RUN OUT` folds the adapter into the base already")
    done = merge(sources if combine else sources[0], out, overwrite=args.overwrite, allow_quantized=args.allow_quantized,
                 base_model=args.base_model, method=args.method if combine else None, weights=weights,
                 density=args.density, full=args.full)
    what = "merged model" if (args.full or not combine) else "merged adapter"
    print(f"{what} written to {done}")


def _plan(args: argparse.Namespace) -> None:
    _positive(args.processes, "plan --processes")
    from hfadapt.publishing.loading import load_recipe
    from hfadapt.training.plan import format_plan, plan_recipe

    print(format_plan(plan_recipe(load_recipe(args.recipe, overrides=args.overrides)), args.processes))


def _report(args: argparse.Namespace) -> None:
    from hfadapt.insight.report import write_report

    print(f"report written to {write_report(args.run, args.out, base_model=args.base_model)}")


def _runs(args: argparse.Namespace) -> None:
    from hfadapt.insight.runs import format_table, list_runs

    if not Path(args.dir).is_dir():
        raise HfadaptError(f"runs: {args.dir}: no such folder")
    found = list_runs(args.dir, sort=args.sort)
    if args.json:
        print(json.dumps(found, indent=2))
    elif found:
        print(format_table(found))
    else:
        print(f"no runs under {args.dir}", file=sys.stderr)


def _targets(args: argparse.Namespace) -> None:
    _positive(args.r, "targets --r")
    from hfadapt.insight.targets import format_report, list_targets

    print(format_report(list_targets(args.model, task=args.task, r=args.r, revision=args.revision, trust_remote_code=args.trust_remote_code)))


def _serve(args: argparse.Namespace) -> None:
    from hfadapt.serving.command import run

    run(args)


COMMANDS = {
    "validate": _validate, "recipes": _recipes, "schema": _schema, "train": _train, "eval": _eval,
    "predict": _predict, "push": _push, "merge": _merge, "plan": _plan, "report": _report, "runs": _runs,
    "targets": _targets, "export": _export, "ui": _ui, "serve": _serve, "tune": _tune,
}


def _read_input_lines(path: Path) -> list[str]:
    """predict --file: one input per line, UTF-8; a bad byte is reported with its line."""
    if not path.is_file():
        raise HfadaptError(f"predict --file: not found: {path}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise HfadaptError(f"predict --file: line {line} of {path} is not UTF-8 (byte 0x{data[e.start]:02x}); save the file as UTF-8") from None
    return [line for line in text.splitlines() if line.strip()]


def _print_metrics(metrics: dict, where: Path) -> None:
    from accelerate import PartialState

    if not PartialState().is_main_process:  # set up by the run's Accelerator
        return
    for k, v in metrics.items():
        if k.startswith("perf/"):
            continue  # summed up in the run's "hfadapt: trained in ..." line; all of them are in metrics.json
        print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    print(f"run directory: {where}")
