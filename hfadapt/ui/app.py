"""`hfadapt ui`: one Gradio page with tabs (Recipe, Train, Runs, Try, Publish) over what the commands do.

Every action calls the same functions the CLI calls; a failing one shows its one-line hfadapt error
and changes nothing. Training runs in separate processes (jobs.py) and is watched through the run's
own files (live.py), so the page never holds a model while training.
"""

from __future__ import annotations

import html
import json
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from hfadapt.core.errors import HfadaptError, first_line
from hfadapt.ui import form
from hfadapt.ui.jobs import Jobs
from hfadapt.ui.live import read_progress
from hfadapt.ui.safety import auth_pair, confined

THIS_MACHINE = "hfadapt train (this process, no launcher)"
RUN_COLUMNS = ["name", "task", "base", "method", "trainable", "best", "steps", "time", "state"]
CSS = ".field-error p{color:#c0392b;margin:0 0 .4em 0;font-size:.9em} .ok p{color:#1e8449}"


def error_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename:
        return f"hfadapt: error: {e.filename}: {e.strerror or e}"
    return f"hfadapt: error: {first_line(e) if not isinstance(e, HfadaptError) else str(e)}"


@dataclass
class Context:
    runs: Path
    jobs: Jobs

    @property
    def roots(self) -> list[Path]:
        return [Path.cwd().resolve(), self.runs.resolve()]

    def run_names(self) -> list[str]:
        from hfadapt.insight.runs import find_runs

        if not self.runs.is_dir():
            return []
        return [str(p.relative_to(self.runs)) if p != self.runs else p.name for p in find_runs(self.runs)]

    def run_path(self, name: str | None) -> Path:
        if not name:
            raise HfadaptError("choose a run first")
        path = confined(str(self.runs / name), self.roots, "run")
        if not (path / "recipe.yaml").is_file():
            raise HfadaptError(f"{name}: not a run under {self.runs}")
        return path


def launchers() -> dict[str, Path | None]:
    """The Accelerate configs of examples/launch (the repository's, or the working directory's)."""
    out: dict[str, Path | None] = {THIS_MACHINE: None}
    for folder in (Path.cwd() / "examples" / "launch", Path(__file__).resolve().parents[2] / "examples" / "launch"):
        for f in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
            out.setdefault(f"accelerate launch --config_file examples/launch/{f.name}", f)
    return out


# ---- Recipe --------------------------------------------------------------------------------------
def recipe_sources() -> list[str]:
    from hfadapt.core.recipe import task_names
    from hfadapt.core.shipped import shipped_recipes

    return list(shipped_recipes()) + [f"blank: {t}" for t in task_names()]


def load_source(name: str) -> tuple[str, str]:
    """(YAML text, the folder its relative paths start from) of a shipped recipe or a blank task."""
    if name.startswith("blank: "):
        task = name.removeprefix("blank: ")
        return form.dump({"name": "my-run", "task": task, "model": {"name_or_path": ""}, "data": {"train_files": []}}), str(Path.cwd())
    from hfadapt.core.shipped import resolve_recipe_path

    file = resolve_recipe_path(name)
    return file.read_text(encoding="utf-8"), str(file.parent)


def _task_and_method(text: str) -> tuple[str | None, str]:
    try:
        raw = form.parse(text)
    except HfadaptError:
        return None, "lora"
    adapter = raw.get("adapter") if isinstance(raw.get("adapter"), dict) else {}
    task = raw.get("task") if isinstance(raw.get("task"), str) else None
    return task, str(adapter.get("method") or "lora")


def validated(text: str, base: str, ctx: Context) -> Any:
    """The recipe of the YAML box, ready to train: valid, and its output folder inside the allowed ones."""
    recipe, problems = form.check(text, Path(base))
    if problems:
        raise HfadaptError("; ".join(problems))
    if recipe.output.dir:
        confined(recipe.output.dir, ctx.roots, "output.dir")
    else:
        recipe.output.dir = str(ctx.runs.resolve() / recipe.run_name)
    return recipe


def _read_and_place(text: str, base: str, paths: list[str]) -> tuple[dict[str, Any] | None, dict[str, list[str]]]:
    """The YAML as data (None when it does not parse) and validate's messages by the field they name."""
    try:
        raw = form.parse(text)
        _, problems = form.check(text, Path(base))
    except HfadaptError as e:
        raw, problems = None, [str(e)]
    placed = form.place(problems, paths)
    if not problems:
        placed[""] = ["✓ valid recipe"]
    return raw, placed


@lru_cache(maxsize=64)
def _form_paths(task: str, method: str) -> list[str]:
    from hfadapt.core.recipe import adapter_methods

    try:
        sections = form.form_fields(task, method if method in adapter_methods() else "lora")
    except HfadaptError:
        return []
    return [s.path for fields in sections.values() for s in fields]


def _top_line(placed: dict[str, list[str]]) -> str:
    return "\n\n".join(placed.get("", []))


def build(runs: Path) -> Any:
    import gradio as gr

    from hfadapt.core.recipe import adapter_methods, task_names
    from hfadapt.modeling import adapters  # noqa: F401  (registers the adapter methods' sections)

    ctx = Context(Path(runs), Jobs(Path(runs)))
    launch_choices = launchers()

    def attempt(fn: Callable[..., Any], outputs: int) -> Callable[..., Any]:
        """Run an action; on failure, its error line in the first output and nothing else changed."""
        def wrapped(*args: Any) -> Any:
            try:
                return fn(*args)
            except (HfadaptError, OSError, ValueError) as e:
                line = error_line(e)
                return (line,) + (gr.skip(),) * (outputs - 1) if outputs > 1 else line
        return wrapped

    with gr.Blocks(title="hfadapt", analytics_enabled=False) as demo:
        gr.Markdown(f"## hfadapt · runs folder `{ctx.runs}`")
        base_state = gr.State(str(Path.cwd()))
        with gr.Tabs():
            # ---- Recipe ----
            with gr.Tab("Recipe", id="recipe", elem_id="tab-recipe"):
                with gr.Row():
                    source = gr.Dropdown(recipe_sources(), label="Start from a shipped recipe or a blank task", value=None,
                                         elem_id="recipe-source", scale=3)
                    file_box = gr.Textbox(label="…or a recipe file (inside the working directory)", elem_id="recipe-file", scale=2)
                    load_btn = gr.Button("Load file", elem_id="recipe-load", scale=1)
                with gr.Row():
                    task_dd = gr.Dropdown(task_names(), label="task", elem_id="recipe-task", value=None)
                    method_dd = gr.Dropdown(adapter_methods(), label="adapter.method", value="lora", elem_id="recipe-method")
                recipe_msg = gr.Markdown("", elem_id="recipe-status")
                task_state, method_state = gr.State(None), gr.State("lora")
                with gr.Row():
                    with gr.Column(scale=3):
                        form_box = gr.Column()
                    with gr.Column(scale=2):
                        yaml_box = gr.Textbox(label="recipe YAML", lines=28, max_lines=60, elem_id="recipe-yaml")
                        errors_md = gr.Markdown("", elem_id="recipe-errors", elem_classes="field-error")
                        with gr.Row():
                            plan_btn = gr.Button("Plan", elem_id="recipe-plan")
                            save_path = gr.Textbox(label="save to", placeholder="my-recipe.yaml", elem_id="recipe-save-path")
                            save_btn = gr.Button("Save", elem_id="recipe-save")
                        plan_out = gr.Textbox(label="plan: parameters and memory per device", lines=8, elem_id="recipe-plan-out",
                                              interactive=False)

                def pick_source(name: str) -> tuple:
                    text, base = load_source(name)
                    task, method = _task_and_method(text)
                    return "", text, base, task, method, task, method

                source.input(attempt(pick_source, 7), source,
                             [recipe_msg, yaml_box, base_state, task_dd, method_dd, task_state, method_state])

                def load_file(typed: str) -> tuple:
                    path = confined(typed, ctx.roots, "recipe file")
                    if not path.is_file():
                        raise HfadaptError(f"recipe file: {typed}: not found")
                    text = path.read_text(encoding="utf-8")
                    task, method = _task_and_method(text)
                    return f"loaded {path}", text, str(path.parent), task, method, task, method

                load_btn.click(attempt(load_file, 7), file_box,
                               [recipe_msg, yaml_box, base_state, task_dd, method_dd, task_state, method_state])

                def set_key(path: str) -> Callable[[str, str], tuple]:
                    def fn(value: str, text: str) -> tuple:
                        raw = form.parse(text)
                        form.set_value(raw, path, value or None)
                        return "", form.dump(raw), value, raw.get("adapter", {}).get("method", "lora") if path == "adapter.method" else value
                    return fn

                task_dd.input(attempt(set_key("task"), 4), [task_dd, yaml_box], [recipe_msg, yaml_box, task_state, task_state])
                method_dd.input(attempt(set_key("adapter.method"), 4), [method_dd, yaml_box], [recipe_msg, yaml_box, method_state, method_state])

                def follow_yaml(text: str, base: str, task: str | None, method: str) -> tuple:
                    new_task, new_method = _task_and_method(text)
                    if new_task not in task_names():
                        new_task = task
                    paths = _form_paths(new_task, new_method) if new_task else []
                    top = _top_line(_read_and_place(text, base, paths)[1])
                    same = new_task == task and new_method == method
                    return (top,) + ((gr.skip(),) * 4 if same else (new_task, new_method, new_task, new_method))

                yaml_box.change(follow_yaml, [yaml_box, base_state, task_state, method_state],
                                [errors_md, task_dd, method_dd, task_state, method_state], trigger_mode="always_last",
                                show_progress="hidden")

                with form_box:  # the form's place on the page: left of the YAML
                    @gr.render(inputs=[task_state, method_state, yaml_box, base_state],
                               triggers=[task_state.change, method_state.change, demo.load])
                    def render_form(task: str | None, method: str, text: str, base: str) -> None:
                        if not task:
                            gr.Markdown("Pick a shipped recipe, a blank task or a file to start.", elem_id="form-empty")
                            return
                        try:
                            sections = form.form_fields(task, method if method in adapter_methods() else "lora")
                        except HfadaptError as e:
                            gr.Markdown(error_line(e))
                            return
                        all_paths = [s.path for fields in sections.values() for s in fields]
                        raw, placed = _read_and_place(text, base, all_paths)
                        specs: list[form.FieldSpec] = []
                        comps: list[Any] = []
                        errs: list[Any] = []
                        section_errs: dict[str, Any] = {}

                        def add(spec: form.FieldSpec) -> None:
                            eid = "f-" + spec.path.replace(".", "-")
                            key = f"{task}:{method}:{spec.path}"
                            value = form.shown(spec, form.get(raw or {}, spec.path))
                            info = spec.help or None
                            if spec.kind == "bool":
                                c = gr.Checkbox(value=value, label=spec.path, info=info, elem_id=eid, key=key, interactive=True)
                            elif spec.kind == "choice":
                                c = gr.Dropdown(list(spec.choices), value=value, label=spec.path, info=info, elem_id=eid, key=key, interactive=True)
                            else:
                                c = gr.Textbox(value=value, label=spec.path, info=info, elem_id=eid, key=key, max_lines=1, interactive=True,
                                               placeholder="" if spec.default is None else f"default: {spec.default}")
                            e = gr.Markdown("\n\n".join(placed.get(spec.path, [])), elem_id="err-" + spec.path.replace(".", "-"),
                                            elem_classes="field-error", key=key + ":err")
                            specs.append(spec)
                            comps.append(c)
                            errs.append(e)

                        for section, fields in sections.items():
                            with gr.Group():
                                if section:
                                    gr.Markdown(f"**{section}**")
                                for spec in (s for s in fields if not s.advanced):
                                    add(spec)
                                folded = [s for s in fields if s.advanced]
                                if folded:
                                    with gr.Accordion(f"{section} · advanced", open=False):
                                        for spec in folded:
                                            add(spec)
                                if section:
                                    section_errs[section] = gr.Markdown("\n\n".join(placed.get(section, [])), elem_id=f"err-section-{section}",
                                                                        elem_classes="field-error", key=f"{task}:{method}:{section}:err")
                        paths = [s.path for s in specs]
                        section_names = list(section_errs)

                        def to_yaml(i: int) -> Callable[[Any, str], str]:
                            def fn(value: Any, text: str) -> Any:
                                try:
                                    raw = form.parse(text)
                                except HfadaptError:
                                    return gr.skip()  # the YAML's own error is shown under it; fix it there first
                                form.set_value(raw, specs[i].path, form.typed(specs[i], value))
                                return form.dump(raw)
                            return fn

                        for i, c in enumerate(comps):  # .input: the user's edits only, never the updates from the YAML
                            c.input(to_yaml(i), [c, yaml_box], yaml_box, trigger_mode="always_last", show_progress="hidden")

                        def from_yaml(text: str, base: str, *current: Any) -> list:
                            raw, placed = _read_and_place(text, base, paths)
                            values = []
                            for spec, now in zip(specs, current):
                                if raw is None:
                                    values.append(gr.skip())
                                    continue
                                new = form.shown(spec, form.get(raw, spec.path))
                                same = now == new or (spec.kind == "text" and form.typed(spec, now) == form.typed(spec, new))
                                values.append(gr.skip() if same else new)
                            messages = ["\n\n".join(placed.get(p, [])) for p in paths]
                            sections_out = ["\n\n".join(placed.get(s, [])) for s in section_names]
                            return values + messages + sections_out

                        yaml_box.change(from_yaml, [yaml_box, base_state, *comps],
                                        comps + errs + [section_errs[s] for s in section_names],
                                        trigger_mode="always_last", show_progress="hidden")

                def do_plan(text: str, base: str) -> str:
                    from hfadapt.training.plan import format_plan, plan_recipe

                    return format_plan(plan_recipe(validated(text, base, ctx)), 8)

                plan_btn.click(attempt(do_plan, 1), [yaml_box, base_state], plan_out)

                def do_save(text: str, typed: str) -> str:
                    path = confined(typed, ctx.roots, "save to")
                    if path.suffix not in (".yaml", ".yml"):
                        raise HfadaptError(f"save to: {typed}: give a .yaml file name")
                    form.parse(text)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(text, encoding="utf-8")
                    return f"saved {path}"

                save_btn.click(attempt(do_save, 1), [yaml_box, save_path], recipe_msg)

            # ---- Train ----
            with gr.Tab("Train", id="train", elem_id="tab-train"):
                with gr.Row():
                    launcher = gr.Dropdown(list(launch_choices), value=THIS_MACHINE, label="launch with", elem_id="train-launcher", scale=3)
                    launch_btn = gr.Button("Train the recipe", variant="primary", elem_id="train-launch", scale=1)
                train_msg = gr.Markdown("", elem_id="train-status")
                with gr.Row():
                    train_run = gr.Dropdown(ctx.run_names(), label="run", elem_id="train-run", allow_custom_value=False, scale=3)
                    stop_btn = gr.Button("Stop (checkpoint and exit)", elem_id="train-stop", scale=1)
                    resume_btn = gr.Button("Resume", elem_id="train-resume", scale=1)
                progress_md = gr.Markdown("", elem_id="train-progress")
                with gr.Row():
                    loss_plot = gr.LinePlot(x="step", y="value", title="training loss", elem_id="train-loss", height=260)
                    lr_plot = gr.LinePlot(x="step", y="value", title="learning rate", elem_id="train-lr", height=260)
                evals_df = gr.Dataframe(label="evaluations", elem_id="train-evals", interactive=False)
                seen = gr.State("")
                timer = gr.Timer(1.0)

                def do_launch(text: str, base: str, how: str) -> tuple:
                    recipe = validated(text, base, ctx)
                    job = ctx.jobs.launch(recipe, launch_choices.get(how))
                    name = str(job.run.relative_to(ctx.runs.resolve())) if job.run.is_relative_to(ctx.runs.resolve()) else job.run.name
                    return f"started {name} (pid {job.process.pid})", gr.update(choices=ctx.run_names() + [name], value=name), ""

                launch_btn.click(attempt(do_launch, 3), [yaml_box, base_state, launcher], [train_msg, train_run, seen])

                def watch(name: str | None, last: str) -> tuple:
                    if not name:
                        return (gr.skip(),) * 6
                    try:
                        run = ctx.run_path(name)
                    except HfadaptError:
                        outcome = next((ctx.jobs.outcome(r) for r in list(ctx.jobs.jobs) if r.name == Path(name).name), None)
                        return (gr.skip(), outcome or "starting…") + (gr.skip(),) * 4
                    log, status = run / "train_log.jsonl", run / "status.json"
                    stamp = f"{name}:" + ":".join(str(p.stat().st_mtime_ns) if p.exists() else "-" for p in (log, status))
                    stamp += f":{run in ctx.jobs.active()}"
                    if stamp == last:
                        return (gr.skip(),) * 6  # nothing new: send nothing (the UI's own CPU use stays low)
                    import pandas as pd

                    from hfadapt.insight.runs import describe

                    p = read_progress(run)
                    state = describe(run, ctx.runs)["state"]
                    outcome = ctx.jobs.outcome(run)
                    line = f"**{state}** · {p.line()}" + (f"\n\n{outcome}" if outcome else "")
                    curves = pd.DataFrame(p.curves or [], columns=["step", "value", "series"])
                    loss = curves[curves.series == "loss"] if len(curves) else curves
                    lr = curves[curves.series == "lr"] if len(curves) else curves
                    return stamp, line, loss, lr, pd.DataFrame(p.evals), gr.skip()

                timer.tick(watch, [train_run, seen], [seen, progress_md, loss_plot, lr_plot, evals_df, train_msg],
                           show_progress="hidden")
                train_run.change(lambda: "", None, seen)

                def do_stop(name: str) -> str:
                    ctx.jobs.stop(ctx.run_path(name))
                    return f"stopping {name}: a checkpoint is saved at the current step"

                stop_btn.click(attempt(do_stop, 1), train_run, train_msg)

                def do_resume(name: str, how: str) -> tuple:
                    job = ctx.jobs.resume(ctx.run_path(name), launch_choices.get(how))
                    return f"resumed {name} (pid {job.process.pid})", ""

                resume_btn.click(attempt(do_resume, 2), [train_run, launcher], [train_msg, seen])

            # ---- Runs ----
            with gr.Tab("Runs", id="runs", elem_id="tab-runs"):
                with gr.Row():
                    sort_box = gr.Textbox(label="sort by metric (best first)", placeholder="accuracy", elem_id="runs-sort")
                    refresh_btn = gr.Button("Refresh", elem_id="runs-refresh")
                runs_msg = gr.Markdown("", elem_id="runs-status")
                table = gr.Dataframe(headers=RUN_COLUMNS, interactive=False, elem_id="runs-table")
                with gr.Row():
                    runs_pick = gr.Dropdown(ctx.run_names(), label="run", elem_id="runs-select")
                    report_btn = gr.Button("Open report", elem_id="runs-report-btn")
                report_html = gr.HTML("", elem_id="runs-report")
                gr.Markdown("### compare two runs")
                with gr.Row():
                    cmp_a = gr.Dropdown(ctx.run_names(), label="run A", elem_id="cmp-a")
                    cmp_b = gr.Dropdown(ctx.run_names(), label="run B", elem_id="cmp-b")
                    cmp_btn = gr.Button("Compare", elem_id="cmp-btn")
                cmp_table = gr.Dataframe(interactive=False, elem_id="cmp-metrics")
                cmp_plot = gr.LinePlot(x="step", y="value", color="run", title="training loss", elem_id="cmp-loss", height=260)

                def do_table(sort: str) -> tuple:
                    import pandas as pd

                    from hfadapt.insight.runs import _cells, list_runs

                    found = list_runs(ctx.runs, sort=sort.strip() or None) if ctx.runs.is_dir() else []
                    names = ctx.run_names()
                    pick = gr.update(choices=names)
                    return ("" if found else f"no runs under {ctx.runs}", pd.DataFrame([_cells(r) for r in found], columns=RUN_COLUMNS),
                            pick, pick, pick)

                refresh_btn.click(attempt(do_table, 5), sort_box, [runs_msg, table, runs_pick, cmp_a, cmp_b])
                sort_box.submit(attempt(do_table, 5), sort_box, [runs_msg, table, runs_pick, cmp_a, cmp_b])

                def do_report(name: str) -> tuple:
                    from hfadapt.insight.report import write_report

                    run = ctx.run_path(name)
                    out = ctx.runs.resolve() / ".ui" / "reports" / f"{run.name}-report.html"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    page = write_report(run, out).read_text(encoding="utf-8")
                    frame = f'<iframe id="report-frame" style="width:100%;height:900px;border:1px solid #ddd" srcdoc="{html.escape(page)}"></iframe>'
                    return "", frame

                report_btn.click(attempt(do_report, 2), runs_pick, [runs_msg, report_html])

                def do_compare(a: str, b: str) -> tuple:
                    import pandas as pd

                    from hfadapt.insight.runs import describe

                    runs = [ctx.run_path(a), ctx.run_path(b)]
                    rows = [describe(r, ctx.runs) for r in runs]
                    keys = sorted(set(rows[0]["metrics"]) | set(rows[1]["metrics"]))
                    table = pd.DataFrame({"metric": keys, a: [rows[0]["metrics"].get(k) for k in keys],
                                          b: [rows[1]["metrics"].get(k) for k in keys]})
                    curves = []
                    for name, run in zip((a, b), runs):
                        curves += [{"step": c["step"], "value": c["value"], "run": name}
                                   for c in read_progress(run).curves if c["series"] == "loss"]
                    return "", table, pd.DataFrame(curves, columns=["step", "value", "run"])

                cmp_btn.click(attempt(do_compare, 3), [cmp_a, cmp_b], [runs_msg, cmp_table, cmp_plot])

            # ---- Try ----
            with gr.Tab("Try", id="try", elem_id="tab-try"):
                with gr.Row():
                    try_run = gr.Dropdown(ctx.run_names(), label="finished run", elem_id="try-run")
                try_msg = gr.Markdown("", elem_id="try-status")
                with gr.Group(visible=True) as text_group:
                    try_text = gr.Textbox(label="text", elem_id="try-text")
                    try_pair = gr.Textbox(label="second text (text pairs; empty for single texts)", elem_id="try-pair")
                with gr.Group(visible=False) as qa_group:
                    try_question = gr.Textbox(label="question", elem_id="try-question")
                    try_context = gr.Textbox(label="context", lines=5, elem_id="try-context")
                with gr.Group(visible=False) as image_group:
                    try_image = gr.Image(type="filepath", label="image", elem_id="try-image")
                with gr.Group(visible=False) as audio_group:
                    try_audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="audio", elem_id="try-audio")
                with gr.Group(visible=False) as chat_group:
                    chat = gr.Chatbot(label="chat", elem_id="try-chat")
                    chat_in = gr.Textbox(label="message", elem_id="try-chat-input")
                try_btn = gr.Button("Predict", variant="primary", elem_id="try-go")
                label_out = gr.Label(label="labels", elem_id="try-label", visible=True)
                highlight_out = gr.HighlightedText(label="entities", elem_id="try-entities", visible=False)
                text_out = gr.Textbox(label="output", elem_id="try-output", visible=False, interactive=False)
                raw_out = gr.Textbox(label="what `hfadapt predict` prints", elem_id="try-raw", interactive=False, lines=3)

                def pick_try(name: str) -> tuple:
                    from hfadapt.rundir.layout import RunDir

                    task = RunDir(ctx.run_path(name)).recipe_dict().get("task")
                    groups = {"text": task in ("text-classification", "token-classification", "seq2seq", "reward-model"),
                              "qa": task == "question-answering", "image": task == "image-classification",
                              "audio": task in ("audio-classification", "speech-recognition"), "chat": task == "causal-lm"}
                    label_like = task in ("text-classification", "image-classification", "audio-classification")
                    return (f"task: {task}", *(gr.update(visible=v) for v in groups.values()),
                            gr.update(visible=label_like), gr.update(visible=task == "token-classification"),
                            gr.update(visible=not label_like and task != "token-classification"))

                try_run.input(attempt(pick_try, 9), try_run,
                              [try_msg, text_group, qa_group, image_group, audio_group, chat_group, label_out, highlight_out, text_out])

                def do_try(name: str, text: str, pair: str, question: str, context: str, image: str | None, audio: str | None) -> tuple:
                    from hfadapt.inference.run_model import predict
                    from hfadapt.rundir.layout import RunDir

                    run = ctx.run_path(name)
                    task = RunDir(run).recipe_dict().get("task")
                    if task == "question-answering":
                        item = f"{question}\t{context}"
                    elif task == "image-classification":
                        item = image
                    elif task in ("audio-classification", "speech-recognition"):
                        item = audio
                    else:
                        item = f"{text}\t{pair}" if pair.strip() else text
                    if not item or not str(item).strip():
                        raise HfadaptError("predict: no input given")
                    row = predict(str(run), [item])[0]
                    scores = row.get("scores") if isinstance(row.get("scores"), dict) else None
                    label = {k: float(v) for k, v in scores.items()} if scores else ({row["label"]: float(row.get("score", 1.0))} if "label" in row else None)
                    entities = _entities(row, str(item))
                    shown_text = next((str(row[k]) for k in ("text", "answer", "generated", "prediction", "score") if k in row), "")
                    return "", label, entities, shown_text, json.dumps(row)

                try_btn.click(attempt(do_try, 5), [try_run, try_text, try_pair, try_question, try_context, try_image, try_audio],
                              [try_msg, label_out, highlight_out, text_out, raw_out])

                def do_chat(name: str, message: str, history: list) -> Any:
                    try:
                        run = ctx.run_path(name)
                        history = (history or []) + [{"role": "user", "content": message}, {"role": "assistant", "content": ""}]
                        for piece in _stream(run, message):
                            history[-1]["content"] += piece
                            yield history, "", ""
                    except (HfadaptError, OSError, ValueError) as e:
                        yield gr.skip(), gr.skip(), error_line(e)

                chat_in.submit(do_chat, [try_run, chat_in, chat], [chat, chat_in, try_msg])

            # ---- Publish ----
            with gr.Tab("Publish", id="publish", elem_id="tab-publish"):
                gr.Markdown("Push a finished run to the Hub. The token comes from `HF_TOKEN` or `hf auth login`; it is never shown here.")
                pub_run = gr.Dropdown(ctx.run_names(), label="run", elem_id="pub-run")
                with gr.Row():
                    pub_repo = gr.Textbox(label="repo id (namespace/name)", elem_id="pub-repo")
                    pub_license = gr.Textbox(label="license", placeholder="apache-2.0", elem_id="pub-license")
                    pub_private = gr.Checkbox(label="private", elem_id="pub-private")
                pub_btn = gr.Button("Push", elem_id="pub-go")
                pub_out = gr.Markdown("", elem_id="pub-status")

                def do_push(name: str, repo: str, license: str, private: bool) -> str:
                    from huggingface_hub import get_token

                    from hfadapt.publishing.hub import push

                    run = ctx.run_path(name)
                    if not get_token():
                        raise HfadaptError("push: no Hugging Face token; set HF_TOKEN or run `hf auth login`, then push again")
                    url = push(str(run), repo.strip(), private=private, license=license.strip() or None)
                    return f"pushed {name} to {repo}: {url}"

                pub_btn.click(attempt(do_push, 1), [pub_run, pub_repo, pub_license, pub_private], pub_out)

        def refresh_runs() -> tuple:
            names = ctx.run_names()
            return tuple(gr.update(choices=names) for _ in range(6))

        demo.load(refresh_runs, None, [train_run, runs_pick, cmp_a, cmp_b, try_run, pub_run])
        for tab_pick in (train_run, runs_pick, cmp_a, cmp_b, try_run, pub_run):
            tab_pick.focus(lambda: gr.update(choices=ctx.run_names()), None, tab_pick)
    demo.ctx = ctx  # the jobs, for a clean shutdown
    return demo


def _entities(row: dict[str, Any], text: str) -> list[tuple[str, str | None]] | None:
    """token-classification: the text with its entities marked, for HighlightedText."""
    ents = row.get("entities")
    if not isinstance(ents, list):
        return None
    out, at = [], 0
    for e in ents:
        start, end = e.get("start"), e.get("end")
        if not isinstance(start, int) or not isinstance(end, int) or start < at:
            continue
        out += [(text[at:start], None), (text[start:end], str(e.get("label") or e.get("entity")))]
        at = end
    return out + [(text[at:], None)]


def _stream(run: Path, prompt: str) -> Any:
    """causal-lm: the completion of `prompt` token by token (TextIteratorStreamer over the run's model)."""
    from threading import Thread

    from transformers import TextIteratorStreamer

    from hfadapt.inference.run_model import load_model_and_processor
    from hfadapt.rundir.layout import RunDir

    rd = RunDir.open(run)
    model, tokenizer, _ = load_model_and_processor(rd, ref=run)
    g = rd.recipe.generation
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    inputs = tokenizer(prompt, return_tensors="pt")
    kwargs = dict(**inputs, max_new_tokens=g.max_new_tokens, do_sample=g.do_sample, streamer=streamer)
    if g.do_sample:
        kwargs.update(temperature=g.temperature, top_p=g.top_p)
    Thread(target=model.generate, kwargs=kwargs, daemon=True).start()
    yield from streamer


def serve(runs: str, host: str = "127.0.0.1", port: int = 7860, auth: str | None = None) -> None:
    """`hfadapt ui`: build the page and serve it until Ctrl-C; runs it started are stopped (checkpointed)."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise HfadaptError("ui: Gradio is not installed; pip install 'hfadapt[ui]'") from None
    credentials = auth_pair(auth, host)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build(Path(runs))
    demo.queue(default_concurrency_limit=4)
    print(f"hfadapt ui: http://{host}:{port} (runs folder {Path(runs).resolve()})", flush=True)
    try:
        demo.launch(server_name=host, server_port=port, auth=credentials, quiet=True, show_error=False, prevent_thread_lock=True,
                    css=CSS)
        while True:
            time.sleep(3600)
    finally:
        demo.ctx.jobs.stop_all()
        demo.close()
