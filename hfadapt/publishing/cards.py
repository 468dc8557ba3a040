"""Model cards rendered from the templates in the top-level model_cards/ folder.

Metadata follows what the Hub validates: base_model and datasets are Hub ids or absent
(never local paths), library_name, pipeline_tag, tags, license, and a model-index built from
metrics.json.
"""

from __future__ import annotations

from hfadapt.tasks.base import get_task
import copy
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from hfadapt.core.shipped import model_cards_dir
from hfadapt.modeling.models import RUN_PLACEHOLDER  # the run directory in published copies
from hfadapt.rundir.layout import RunDir, RunMetrics

if TYPE_CHECKING:
    from huggingface_hub import ModelCardData

# owner/name, or a legacy canonical name such as "bert-base-uncased"
HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")
METHOD_LABELS = {
    "lora": "LoRA", "ia3": "IA³", "loha": "LoHa", "lokr": "LoKr", "adalora": "AdaLoRA",
    "prefix": "prefix-tuning", "prompt": "prompt-tuning", "full": "fully fine-tuned", "freeze": "linear-probe",
}


def hub_id_or_none(value: str | None) -> str | None:
    """`value` if it names a Hub repo, None if it is a local path."""
    if not value or value.startswith(("/", "./", "../", "~")) or "\\" in value or ".." in value:
        return None
    if Path(value).exists() or not HUB_ID.match(value):
        return None
    return value


def publish_path(value: str, run_path: Path | None = None) -> str:
    """How a path is shown outside this machine: Hub ids unchanged, the run directory as `<run>`
    (paths inside it relative to it), any other local path as `<local>/NAME`."""
    from hfadapt.modeling.models import LOCAL_PLACEHOLDER

    if hub_id_or_none(value.removeprefix("hub:")) is not None:
        return value
    path = Path(value).expanduser()
    if run_path is not None:
        try:
            rel = path.resolve().relative_to(Path(run_path).resolve())
            return RUN_PLACEHOLDER if str(rel) == "." else f"{RUN_PLACEHOLDER}/{rel.as_posix()}"
        except (ValueError, OSError):
            pass
    return f"{LOCAL_PLACEHOLDER}/{path.name or value.strip('/')}"


def public_command(command: str, run_path: Path | None = None) -> str:
    """The launch command with absolute local paths (arguments and key=value overrides) replaced."""
    if not command:
        return command
    try:
        words = shlex.split(command.split("  # ")[0])
    except ValueError:
        return ""
    out = []
    for w in words:
        key, eq, value = w.partition("=")
        if eq and not w.startswith("-") and _is_absolute(value):
            out.append(f"{key}={publish_path(value, run_path)}")
        elif _is_absolute(w):
            out.append(publish_path(w, run_path))
        else:
            out.append(w)
    # placeholders stay readable (unquoted): the line documents the run, it is not meant to be pasted as is
    return " ".join(w if ("<local>" in w or RUN_PLACEHOLDER in w) else shlex.quote(w) for w in out)


def _is_absolute(value: str) -> bool:
    return value.startswith(("/", "~")) or bool(re.match(r"^[A-Za-z]:[\\/]", value))


# Recipe fields that can name a path of this machine, and what a user gives there instead.
PATH_FIELDS = {
    "model.name_or_path": "YOUR_BASE_MODEL",
    "model.adapter": "YOUR_SFT_ADAPTER",  # preference from an SFT run: a run directory or hub:user/name
    "data.dataset": "YOUR_DATASET",
    "data.train_files": "YOUR_FILES",
    "data.validation_files": "YOUR_FILES",
    "data.test_files": "YOUR_FILES",
    "output.dir": "YOUR_RUN_DIR",
}


def publish_recipe(raw: dict[str, Any], run_path: Path | None = None) -> dict[str, Any]:
    """A copy of a recipe mapping for the Hub: local paths in PATH_FIELDS become placeholders
    (`<local>/NAME`, `<run>`); Hub ids stay. The run directory keeps the real values."""
    from hfadapt.modeling.models import LOCAL_PLACEHOLDER

    out = copy.deepcopy(raw)
    for dotted in PATH_FIELDS:
        section, key = dotted.split(".")
        value = (out.get(section) or {}).get(key)
        if not value:
            continue
        if dotted == "output.dir":
            out[section][key] = RUN_PLACEHOLDER
        elif isinstance(value, list):  # data files: always local, whatever their name looks like
            out[section][key] = [f"{LOCAL_PLACEHOLDER}/{Path(str(v)).name}" for v in value]
        else:
            out[section][key] = publish_path(str(value), run_path)
    return out


def is_placeholder(value: Any) -> bool:
    from hfadapt.modeling.models import LOCAL_PLACEHOLDER

    values = value if isinstance(value, list) else [value]
    return any(isinstance(v, str) and v.startswith((LOCAL_PLACEHOLDER, RUN_PLACEHOLDER)) for v in values)


def unpublished_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """The PATH_FIELDS of a recipe mapping that hold a placeholder instead of a usable value."""
    out = {}
    for dotted in PATH_FIELDS:
        section, key = dotted.split(".")
        value = (raw.get(section) or {}).get(key)
        if is_placeholder(value):
            out[dotted] = value
    return out


def render_adapter_card(run: RunDir, repo_id: str, license: str | None = None) -> str:
    return _render(run, repo_id, "adapter.md", license, merged=False)


def render_merged_card(run: RunDir, repo_id: str, license: str | None = None) -> str:
    return _render(run, repo_id, "merged.md", license, merged=True)


def render_combined_card(run: RunDir, repo_id: str, sources: list[str], method: str, weights: list[float],
                         density: float | None, license: str | None = None) -> str:
    """The card of an adapter made by `hfadapt merge A B OUT --method M`: the adapter card plus its sources."""
    rows = "\n".join(f"| `{publish_path(s) if Path(s).exists() else s}` | {w:g} |" for s, w in zip(sources, weights))
    return _render(run, repo_id, "adapter.md", license, merged=False) + (
        f"\n## Merged from\n\nMerged with hfadapt by peft's `add_weighted_adapter`, combination `{method}`"
        + (f", density {density:g}" if density is not None else "")
        + f". Whole modules (the task head) are the sources' copies averaged with the weights.\n\n| source | weight |\n|---|---|\n{rows}\n"
    )


def _metadata(run: RunDir, repo_id: str, license: str | None, merged: bool, results: list[dict[str, Any]]) -> Any:
    """The card's YAML header, as the Hub validates it."""
    from huggingface_hub import EvalResult, ModelCardData

    from hfadapt.modeling.adapters import is_peft

    recipe, method = run.recipe, run.recipe.adapter.method
    base = hub_id_or_none(recipe.model.name_or_path)
    dataset = hub_id_or_none(recipe.data.dataset)
    eval_results = [
        EvalResult(
            task_type=get_task(run.recipe.task).pipeline_tag, dataset_type=dataset or "custom", dataset_name=dataset or "local data",
            dataset_config=recipe.data.config_name if dataset else None,
            dataset_split=(recipe.data.validation_split if r["split"] == "validation" else recipe.data.test_split) if dataset else None,
            metric_type=r["metric"], metric_value=r["value"],
        )
        for r in results
    ]
    peft_adapter = is_peft(method) and not merged
    card_data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        base_model=base,
        datasets=[dataset] if dataset else None,
        library_name="peft" if peft_adapter else "transformers",
        pipeline_tag=get_task(run.recipe.task).pipeline_tag,
        license=license or recipe.hub.license,
        tags=["hfadapt", recipe.task, method] + (["peft"] if is_peft(method) else []) + (["merged"] if merged else []),
        eval_results=eval_results or None,
    )
    _add_timm_metadata(card_data, run, merged)
    return card_data


def _render(run: RunDir, repo_id: str, template: str, license: str | None, merged: bool) -> str:
    from huggingface_hub import ModelCard
    from jinja2 import Template

    from hfadapt.modeling.adapters import is_peft

    recipe, info, metrics = run.recipe, run.info, run.metrics
    method = recipe.adapter.method
    base = hub_id_or_none(recipe.model.name_or_path)
    dataset = hub_id_or_none(recipe.data.dataset)
    results = _results(metrics)
    base_note = None
    if base is None:
        base_note = (
            f"The base model was the local directory `{publish_path(recipe.model.name_or_path, run.path)}`"
            + (" (random weights built from a config, saved in the training run as base_model/)" if recipe.model.init == "config" else "")
            + ", so no `base_model` is declared; load the adapter onto the same weights "
            "(with hfadapt: `--base-model PATH|HUB_ID` on predict, eval and merge). "
            "Local paths are not published: `<local>/NAME` stands for a local folder or file called NAME "
            "(also in adapter_config.json and run_info.json), `<run>` for the training run's directory."
        )
    label = METHOD_LABELS.get(method, method)
    summary = (
        f"A {label} adapter for **{recipe.task}** on top of "
        if is_peft(method) else f"A {label} model for **{recipe.task}** from "
    ) + (f"[{base}](https://huggingface.co/{base})" if base else "a local base model") + ", trained with hfadapt."
    data_md = (
        f"[{dataset}](https://huggingface.co/datasets/{dataset})" + (f" (config `{recipe.data.config_name}`)" if recipe.data.config_name else "")
        if dataset else "Local files (not published): " + ", ".join(f"`{Path(f).name}`" for f in (recipe.data.train_files or [recipe.data.dataset or ""]))
    )
    versions = ", ".join(f"{k} {v}" for k, v in info.versions.items()) or "unknown"
    # The pushed recipe.yaml has placeholders for local paths: the command names what to give there.
    unpublished = [f for f in unpublished_fields(publish_recipe(recipe.to_dict(), run.path)) if f != "output.dir"]
    reproduce = f"hfadapt train hub:{repo_id}" + "".join(f" {f}={PATH_FIELDS[f]}" for f in unpublished)
    if info.command:
        reproduce += f"\n# originally: {public_command(info.command, run.path)}"
    usage = ""
    if not merged:
        task_template = model_cards_dir() / "tasks" / f"{recipe.task}.md"
        usage = Template(task_template.read_text()).render(
            repo_id=repo_id, base_model=base or "PATH/TO/BASE_MODEL", example=get_task(run.recipe.task).card_example,
            auto_class=_auto_class_name(run), recipe=recipe,  # online-rl's card lists its rewards
            reward_hashes=info.reward_functions,  # and the sha256 of each reward file (pushed under rewards/)
        )
    card = ModelCard.from_template(
        _metadata(run, repo_id, license, merged, results),
        template_str=(model_cards_dir() / template).read_text(),
        model_name=repo_id.split("/")[-1],
        summary=summary,
        base_note=base_note,
        results=results,
        data_md=data_md,
        adapter_yaml=yaml.safe_dump(recipe.adapter.model_dump(mode="json"), sort_keys=False),
        modules_to_save=(", ".join(recipe.adapter.modules_to_save or []) or "task head") if is_peft(method) else "",
        train_yaml=yaml.safe_dump(recipe.train.model_dump(mode="json"), sort_keys=False),
        steps=int(metrics.train.get("steps", 0)),
        hardware=info.hardware,
        num_processes=info.num_processes,
        distributed_type=info.distributed_type,
        mixed_precision=info.mixed_precision or recipe.train.mixed_precision,
        versions=versions,
        reproduce=reproduce,
        usage=usage,
        repo_id=repo_id,
        auto_class=_auto_class_name(run),
    )
    return str(card)


def _add_timm_metadata(card_data: ModelCardData, run: RunDir, merged: bool) -> None:
    """A run on a timm backbone: the Hub lists it with timm models (tag `timm`); a merged model is a
    plain timm checkpoint (library_name timm: `timm.create_model("hf-hub:REPO", pretrained=True)`).
    An adapter stays library_name peft: timm alone cannot load adapter weights."""
    from hfadapt.modeling.timm_models import is_timm_folder

    if not is_timm_folder(str(run.model_dir)):
        return
    if merged:
        card_data.library_name = "timm"
    card_data.tags = list(dict.fromkeys(["timm", *(card_data.tags or [])]))


def _auto_class_name(run: RunDir) -> str:
    """The run's Auto* class: the task's, or for speech-recognition the one its saved config calls for."""
    import json

    task = get_task(run.recipe.task)
    config = run.model_dir / "config.json"
    if task.auto_class_from_config and config.is_file():
        return task.auto_class_for(json.loads(config.read_text()))
    return task.auto_class


def _results(metrics: RunMetrics) -> list[dict[str, Any]]:
    rows = []
    for split, results in (("validation", metrics.eval), ("test", metrics.test)):
        for name, value in results.items():
            if name not in ("samples", "loss") and isinstance(value, (int, float)):
                rows.append({"split": split, "metric": name, "value": float(value)})
    return rows
