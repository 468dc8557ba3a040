"""`hfadapt merge RUN OUT`: fold the adapter into the base weights -> a standalone transformers model."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from typing import TYPE_CHECKING, Any, Callable

from hfadapt.core.errors import HfadaptError, first_line
from hfadapt.rundir.layout import check_writable_folder

if TYPE_CHECKING:
    from peft import PeftModel
    from torch import Tensor
    from transformers import PreTrainedModel

    from hfadapt.rundir.layout import RunDir
    from hfadapt.tasks.base import Processor


def check_output_folder(out: Path) -> None:
    """OUT must be a folder or not exist, under a folder that can be written; checked before any work."""
    check_writable_folder(out, "merge", "output folder")


def check_output_apart_from_run(out: Path, run_path: Path, command: str = "merge") -> None:
    """OUT must not be the run, a folder holding it, or a folder inside it: --overwrite would delete the run."""
    o, r = out.resolve(), Path(run_path).resolve()
    if o == r:
        raise HfadaptError(f"{command}: the output folder {out} is the run itself; choose a folder outside the run")
    if o in r.parents:
        raise HfadaptError(f"{command}: the output folder {out} contains the run {run_path}; choose a folder outside the run")
    if r in o.parents:
        raise HfadaptError(f"{command}: the output folder {out} is inside the run {run_path}; choose a folder outside the run")


def _fold(run_ref: str | Path, out: Path, overwrite: bool, allow_quantized: bool, base_model: str | None) -> Path:
    """Today's `merge RUN OUT`: the run's adapter folded into its base."""
    from hfadapt.modeling.adapters import is_peft
    from hfadapt.publishing.cards import render_merged_card
    from hfadapt.publishing.hub import resolve_run

    check_output_folder(out)
    run = resolve_run(run_ref)
    check_output_apart_from_run(out, run.path)
    recipe = run.recipe
    if not is_peft(recipe.adapter.method):
        raise HfadaptError(f"merge: {run.path} was trained with adapter.method={recipe.adapter.method}; its model/ is already standalone")
    check_mergeable(run, "merge")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise HfadaptError(f"merge: {out} exists and is not empty; choose another folder or pass --overwrite")
    merged, processor = folded_model(run, run_ref, base_model, allow_quantized, "merge")

    def save(tmp: Path) -> None:
        merged.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "README.md").write_text(render_merged_card(run, out.name))

    return write_folder(out, save)


def check_mergeable(run: RunDir, command: str) -> None:
    """Prefix and prompt tuning add virtual tokens, not weight deltas: nothing to fold."""
    method = run.recipe.adapter.method
    if method in ("prefix", "prompt"):
        raise HfadaptError(f"{command}: {method} tuning adds virtual tokens, not weight deltas; there is nothing to merge")


def folded_model(run: RunDir, ref: str | Path, base_model: str | None, allow_quantized: bool,
                 command: str) -> tuple[PreTrainedModel, Processor]:
    """The run's model with its adapter folded into the base weights (a plain transformers model; a
    full or freeze run's model as it is), and its processor. `command` names the caller in errors."""
    from hfadapt.inference.run_model import load_model_and_processor

    check_mergeable(run, command)
    model, processor, _ = load_model_and_processor(run, base_model=base_model, ref=ref)
    return fold_loaded(model, run, allow_quantized, command), processor


def fold_loaded(model: PeftModel | PreTrainedModel, run: RunDir, allow_quantized: bool, command: str) -> PreTrainedModel:
    """`model`, the run's model as loaded, with its adapter folded in (in place)."""
    from hfadapt.modeling.adapters import is_peft

    check_mergeable(run, command)
    if not is_peft(run.recipe.adapter.method):
        return model
    base = model.get_base_model()
    quantized = getattr(base.config, "quantization_config", None) is not None or getattr(base, "is_quantized", False)
    if quantized and not allow_quantized:
        raise HfadaptError(
            f"{command}: the base model is quantized; merging into quantized weights rounds the adapter away. "
            "Load the base unquantized (model.dtype) or pass --allow-quantized to merge anyway"
        )
    return model.merge_and_unload()


def write_folder(out: Path, save: Callable[[Path], None]) -> Path:
    """Write beside OUT under a fresh name, then swap: the old OUT goes only once the new one is complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        save(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # only the folder made above
        raise
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old)  # an empty fresh folder: rename over it
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)
    return out


METHODS = ("linear", "cat", "svd", "ties", "dare_linear", "dare_ties", "magnitude_prune")
DENSITY_METHODS = ("ties", "dare_linear", "dare_ties", "magnitude_prune")
MERGED = "merged"


def merge(sources: str | Path | list[str | Path], out: str | Path, overwrite: bool = False, allow_quantized: bool = False,
          base_model: str | None = None, method: str | None = None, weights: list[float] | None = None,
          density: float | None = None, full: bool = False, majority_sign_method: str = "total",
          svd_rank: int | None = None) -> Path:
    """Save the run's adapter merged into its base as a standalone model in `out`; `base_model` (local
    folder or Hub id) is the base to merge into instead of the one the adapter config names (`--base-model`:
    needed for a pulled adapter whose base was a local folder).

    With `method` (or several sources, or `weights`), the LoRA adapters of `sources` (run directories or
    Hub adapter ids of one base and task) are combined by peft's `add_weighted_adapter` into a new adapter
    folder that plain peft and `hfadapt predict` load; `full=True` folds that adapter into the base."""
    srcs = [sources] if isinstance(sources, (str, Path)) else list(sources)
    if not srcs:
        raise HfadaptError("merge: no adapter given")
    if method is None and len(srcs) == 1 and weights is None and density is None:
        return _fold(srcs[0], Path(out), overwrite, allow_quantized, base_model)
    return _combine(srcs, Path(out), overwrite, allow_quantized, base_model, method or "linear", weights, density,
                    full, majority_sign_method, svd_rank)


def _check_combine_args(srcs: list, method: str, weights: list[float] | None, density: float | None,
                        majority_sign_method: str) -> list[float]:
    if method not in METHODS:
        raise HfadaptError(f"merge --method: unknown method '{method}'; one of {', '.join(METHODS)}")
    if weights is None:
        weights = [1.0] * len(srcs)
    if len(weights) != len(srcs):
        raise HfadaptError(f"merge --weights: {len(weights)} weight(s) for {len(srcs)} adapter(s); give one weight per adapter")
    if density is not None and method not in DENSITY_METHODS:
        raise HfadaptError(f"merge --density: only for {', '.join(DENSITY_METHODS)}, not --method {method}")
    if method in DENSITY_METHODS and density is None:
        raise HfadaptError(f"merge --method {method}: needs --density (the share of weights kept, between 0 and 1)")
    if density is not None and not 0 < density <= 1:
        raise HfadaptError(f"merge --density: {density} is not in (0, 1]")
    if majority_sign_method not in ("total", "frequency"):
        raise HfadaptError(f"merge: majority_sign_method must be total or frequency, not {majority_sign_method}")
    return [float(w) for w in weights]


def _check_sources(runs: list, refs: list, out: Path) -> None:
    """One base, one task, one label set, LoRA only; the offending source is named."""
    import json

    first = runs[0]
    seen: dict[Path, str] = {}
    for run, ref in zip(runs, refs):
        where = run.path.resolve()
        if where in seen:
            raise HfadaptError(f"merge: {ref} is given twice (also as {seen[where]}); a merge combines different adapters")
        seen[where] = str(ref)
        check_output_apart_from_run(out, run.path)
        method = run.recipe.adapter.method
        if method != "lora":
            raise HfadaptError(f"merge --method: {ref} is a {method} adapter; merge methods combine LoRA adapters only")
        if getattr(run.recipe.adapter, "use_dora", False):
            raise HfadaptError(f"merge --method: {ref} is a DoRA adapter; peft's add_weighted_adapter merges plain LoRA only")
    def base_of(run: RunDir) -> str:
        cfg = json.loads((run.model_dir / "adapter_config.json").read_text())
        return str(cfg.get("base_model_name_or_path") or run.recipe.model.name_or_path)

    def labels_of(run: RunDir) -> dict[str, str] | None:
        f = run.model_dir / "config.json"
        return json.loads(f.read_text()).get("id2label") if f.is_file() else None

    for run, ref in zip(runs[1:], refs[1:]):
        if run.recipe.task != first.recipe.task:
            raise HfadaptError(f"merge --method: {ref} is a {run.recipe.task} adapter, {refs[0]} a {first.recipe.task} one; merge adapters of one task")
        if base_of(run) != base_of(first):
            raise HfadaptError(f"merge --method: {ref} adapts the base {base_of(run)}, {refs[0]} the base {base_of(first)}; merge adapters of one base")
        if labels_of(run) != labels_of(first):
            raise HfadaptError(f"merge --method: {ref} has other labels than {refs[0]}; merge adapters of one label set")


def _combine(srcs: list, out: Path, overwrite: bool, allow_quantized: bool, base_model: str | None, method: str,
             weights: list[float] | None, density: float | None, full: bool, majority_sign_method: str,
             svd_rank: int | None) -> Path:
    import torch
    from peft import PeftConfig, PeftModel, set_peft_model_state_dict
    from safetensors.torch import load_file

    from hfadapt.publishing.hub import resolve_run
    from hfadapt.inference.run_model import load_model_and_processor

    weights = _check_combine_args(srcs, method, weights, density, majority_sign_method)
    check_output_folder(out)
    runs = [resolve_run(s) for s in srcs]
    _check_sources(runs, srcs, out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise HfadaptError(f"merge: {out} exists and is not empty; choose another folder or pass --overwrite")
    model, processor, _ = load_model_and_processor(runs[0], base_model=base_model, ref=srcs[0])
    names = ["default"]
    heads: list[dict[str, torch.Tensor]] = [_head_state(model, "default")]
    for i, run in enumerate(runs[1:], start=1):
        config = PeftConfig.from_pretrained(str(run.model_dir))
        config.modules_to_save = None  # whole modules (the task head) are averaged below, not by peft
        name = f"source{i}"
        # PeftModel's own add_adapter: the task subclass would put the classifier back into modules_to_save
        PeftModel.add_adapter(model, name, config)
        lora = {k: v for k, v in load_file(str(run.model_dir / "adapter_model.safetensors")).items() if "lora_" in k}
        set_peft_model_state_dict(model, lora, adapter_name=name)
        model.load_adapter(str(run.model_dir), adapter_name=f"head{i}")  # read its whole modules, then drop it
        heads.append(_head_state(model, f"head{i}"))
        model.delete_adapter(f"head{i}")
        names.append(name)
    kwargs: dict[str, Any] = {"density": density} if density is not None else {}
    if method in ("ties", "dare_ties"):
        kwargs["majority_sign_method"] = majority_sign_method
    if method == "svd" and svd_rank is not None:
        kwargs["svd_rank"] = svd_rank
    torch.manual_seed(0)  # dare_* drop weights at random: the same sources give the same merge
    try:
        model.add_weighted_adapter(names, weights, MERGED, combination_type=method, **kwargs)
    except ValueError as e:
        raise HfadaptError(f"merge --method {method}: peft refused the merge: {first_line(e)}") from None
    _set_merged_head(model, names, heads, weights)
    model.set_adapter(MERGED)
    for name in names:
        model.delete_adapter(name)
    model.eval()
    if full:
        base = model.get_base_model()
        quantized = getattr(base.config, "quantization_config", None) is not None or getattr(base, "is_quantized", False)
        if quantized and not allow_quantized:
            raise HfadaptError("merge: the base model is quantized; pass --allow-quantized to merge anyway")
        merged = model.merge_and_unload()
        return write_folder(out, lambda tmp: _save_full(merged, processor, runs, tmp, out, srcs, method))
    return write_folder(out, lambda tmp: _save_adapter(model, processor, runs, tmp, out, srcs, method, weights, density))


def _head_state(model: PeftModel, name: str) -> dict[str, Any]:
    """The fully trained modules (modules_to_save) of adapter `name`, by module path."""
    from peft.utils import ModulesToSaveWrapper

    return {path: {k: v.detach().clone() for k, v in m.modules_to_save[name].state_dict().items()}
            for path, m in model.named_modules() if isinstance(m, ModulesToSaveWrapper) and name in m.modules_to_save}


def _set_merged_head(model: PeftModel, names: list[str], heads: list[dict[str, Tensor]], weights: list[float]) -> None:
    """The merged adapter's whole modules (the task head): the sources' copies averaged with the weights
    normalised to sum 1 (peft would give the untrained module). A source that lacks a module is left out."""
    import torch
    from peft.utils import ModulesToSaveWrapper

    first = heads[0]
    for path, m in model.named_modules():
        if not (isinstance(m, ModulesToSaveWrapper) and MERGED in m.modules_to_save and path in first):
            continue
        parts = [(w, head[path]) for w, head in zip(weights, heads) if path in head]
        total = sum(w for w, _ in parts) or 1.0
        with torch.no_grad():
            for k, p in m.modules_to_save[MERGED].named_parameters():
                p.copy_(sum(w * part[k].to(p.dtype) for w, part in parts) / total)


def _merged_recipe(runs: list[RunDir], out: Path, r: int) -> str:
    """The first source's recipe with the merged adapter's rank (peft sets alpha = r) and OUT as its folder."""
    import yaml

    raw = runs[0].recipe.to_dict()
    raw["adapter"]["r"] = r
    raw["adapter"]["alpha"] = r
    raw["output"]["dir"] = str(out.resolve())
    return yaml.safe_dump(raw, sort_keys=False)


def _save_adapter(model: PeftModel, processor: Processor, runs: list[RunDir], tmp: Path, out: Path, srcs: list[str], method: str,
                  weights: list[float], density: float | None) -> None:
    """A run-like folder: recipe.yaml, the adapter files at the root (as a pulled Hub repo has them), README.md."""
    from hfadapt.publishing.cards import render_combined_card
    from hfadapt.rundir.layout import RunDir

    model.save_pretrained(str(tmp), selected_adapters=[MERGED])
    nested = tmp / MERGED  # peft saves a non-default adapter under its name
    if nested.is_dir():
        for f in nested.iterdir():
            os.replace(f, tmp / f.name)
        nested.rmdir()
    model.get_base_model().config.save_pretrained(tmp)  # id2label, as the run's adapter/ has it
    processor.save_pretrained(tmp)
    (tmp / "recipe.yaml").write_text(_merged_recipe(runs, out, model.peft_config[MERGED].r))
    (tmp / "README.md").write_text(render_combined_card(RunDir(tmp), out.name, [str(s) for s in srcs], method, weights, density))


def _save_full(merged: PreTrainedModel, processor: Processor, runs: list[RunDir], tmp: Path, out: Path, srcs: list[str], method: str) -> None:
    from hfadapt.publishing.cards import render_merged_card

    merged.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    card = render_merged_card(runs[0], out.name)
    (tmp / "README.md").write_text(card + _sources_note([str(s) for s in srcs], method))


def _sources_note(srcs: list[str], method: str) -> str:
    return f"\n## Merged adapters\n\nMethod `{method}` (peft `add_weighted_adapter`) over: " + ", ".join(f"`{s}`" for s in srcs) + "\n"
