"""`hfadapt eval RUN` and `hfadapt predict RUN INPUT...` on a finished run directory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hfadapt.tasks.base import get_task
from hfadapt.core.errors import HfadaptError
from hfadapt.publishing.hub import resolve_run
from hfadapt.rundir.layout import RunDir

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

    from hfadapt.core.recipe import Recipe
    from hfadapt.data.labels import LabelInfo
    from hfadapt.tasks.base import Processor


def load_model_and_processor(
    run: RunDir, base_model: str | None = None, ref: str | Path | None = None
) -> tuple[PreTrainedModel | PeftModel, Processor, LabelInfo | None]:
    """The run's model (its adapter on `base_model` where given), processor and label info; `ref` names
    the run in messages (the user's run directory or Hub id)."""
    from hfadapt.modeling.models import load_run_model

    model = load_run_model(run, get_task(run.recipe.task), base_model=base_model, ref=ref)
    processor = get_task(run.recipe.task).load_processor(run.recipe, path=str(run.model_dir))
    info = get_task(run.recipe.task).info_from_config(model.config)
    model.eval()
    return model, processor, info


def with_generation(recipe: Recipe, overrides: dict[str, Any]) -> Recipe:
    """A copy of `recipe` with generation fields replaced, each validated; `recipe` is unchanged."""
    from pydantic import ValidationError

    generation = recipe.generation.model_copy(deep=True)
    for key, value in overrides.items():
        if key not in type(generation).model_fields:
            raise HfadaptError(f"predict: unknown generation setting '{key}'")
        try:
            setattr(generation, key, value)  # validated on assignment, on the copy
        except ValidationError as e:
            raise HfadaptError(f"generation.{key}: {e.errors()[0]['msg']} (got {value!r})") from None
    return recipe.model_copy(update={"generation": generation}) if overrides else recipe


def predict(run_dir: str | Path, inputs: list[str], batch_size: int = 16, generation: dict | None = None,
            base_model: str | None = None) -> list[dict]:
    """Predictions for text strings or image paths, one dict per input.

    `generation` overrides the run's recipe.generation fields (max_new_tokens, temperature, ...) for
    these predictions; the run's recipe is left as it was. `base_model` (local folder or Hub id) is
    the base the adapter is loaded onto instead of the one its config names: needed for a pulled
    adapter whose base was a local folder (`--base-model`).
    """
    from hfadapt.inference.onnx_model import is_export_folder, load_export

    exported = is_export_folder(run_dir)  # `hfadapt export` output: the ONNX model through onnxruntime, same hooks
    run = None if exported else resolve_run(run_dir)
    if not inputs:
        raise HfadaptError("predict: no inputs given")
    if run is None:
        model, processor, info, recipe = load_export(run_dir)
        recipe = with_generation(recipe, generation or {})
    else:
        recipe = with_generation(run.recipe, generation or {})
        model, processor, info = load_model_and_processor(run, base_model=base_model, ref=run_dir)
    from hfadapt.data.grouping import in_input_order, longest_first

    if get_task(recipe.task).paired_inputs:
        inputs = pair_inputs(inputs)

    # Text inputs longest first (characters: a free proxy for tokens), so each chunk pads (and
    # generates) about as long as its own rows; the results come back in input order.
    order = None
    if get_task(recipe.task).modality == "text" and len(inputs) > batch_size:
        order = longest_first([len(x) if isinstance(x, str) else 0 for x in inputs])
    items = [inputs[i] for i in order] if order is not None else list(inputs)
    out: list[dict] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        for item, pred in zip(chunk, get_task(recipe.task).predict(model, processor, chunk, recipe, info)):
            out.append({"input": item, **pred})
    return in_input_order(order, out)


def pair_inputs(inputs: list[str]) -> list[str]:
    """`FILE TEXT FILE TEXT ...` -> ["FILE\tTEXT", ...] for tasks whose input is a file and a text
    (Task.paired_inputs); inputs already written FILE<TAB>TEXT stay as they are."""
    if all("\t" in x for x in inputs):
        return list(inputs)
    if any("\t" in x for x in inputs) or len(inputs) % 2:
        raise HfadaptError(
            f"predict: give each input as an image and its question (IMAGE QUESTION [IMAGE QUESTION ...]) or as "
            f"IMAGE<TAB>QUESTION; got {len(inputs)} strings"
        )
    return [f"{inputs[i]}\t{inputs[i + 1]}" for i in range(0, len(inputs), 2)]


def evaluate_run(run_dir: str | Path, split: str = "validation", overrides: list[str] | None = None,
                 base_model: str | None = None) -> dict[str, float]:
    """Re-evaluate a finished run on its recipe's validation (or test) split.

    `overrides` ('data.test_files=[x.csv]', ...) change the recipe's data section only: evaluate on
    other data, or give the data files a pushed recipe names but did not publish. `base_model` as
    for predict: the base a pulled adapter of a local base model is loaded onto.
    """
    from accelerate import Accelerator

    from hfadapt.publishing.cards import PATH_FIELDS, unpublished_fields
    from hfadapt.data.sources import load_raw
    from hfadapt.core.recipe import Recipe
    from hfadapt.modeling.models import BASE_MODEL_FLAG, unpublished_base, unpublished_base_error
    from hfadapt.tasks import EvalContext
    from hfadapt.training.loaders import build_eval_loader

    run = resolve_run(run_dir)
    recipe, task = run.recipe, get_task(run.recipe.task)
    for item in overrides or []:
        if not item.startswith(("data.", "model.adapter=", "rl.trust_reward_code=")):
            raise HfadaptError(f"eval: only data.* fields (and model.adapter, a preference run's reference; rl.trust_reward_code, "
                               f"an online-rl run's reward code) can be overridden, got '{item}'")
    if overrides:
        recipe = Recipe.from_dict(recipe.to_dict(), overrides=overrides, base=Path.cwd())
    unpublished = {f: v for f, v in unpublished_fields(recipe.to_dict()).items() if f.startswith(("data.", "model.adapter"))}
    missing_base = unpublished_base(run) if base_model is None else None
    if unpublished:
        named = ", ".join(f"{f} ({v if isinstance(v, str) else ', '.join(v)})" for f, v in unpublished.items())
        give = " ".join(f"{f}={PATH_FIELDS[f]}" for f in unpublished)
        if missing_base:  # both at once, so that one retry works
            named += f", and its base model ({missing_base})"
            give += f" {BASE_MODEL_FLAG} PATH|HUB_ID"
        raise HfadaptError(
            f"eval: the recipe of {run_dir} names local files of its author that were not published: {named}; "
            f"give yours: hfadapt eval {run_dir} {give}"
        )
    if missing_base:
        raise unpublished_base_error(run_dir, missing_base)
    accelerator = Accelerator()  # first: the process state preprocessing and printing ask for
    model, processor, info = load_model_and_processor(run, base_model=base_model, ref=run_dir)
    start = getattr(recipe.model, "adapter", None)
    if start and task.reference_adapter:  # a preference run from an SFT adapter: that adapter is its reference
        from hfadapt.modeling.adapters import add_reference_adapter

        try:
            reference = resolve_run(start)
        except HfadaptError as e:
            raise HfadaptError(f"eval: the reference of {run_dir} is the adapter it started from (model.adapter): {e}") from None
        add_reference_adapter(model, str(reference.model_dir))
        model.eval()
    raw = load_raw(recipe, task)
    ds = {"validation": raw.validation, "test": raw.test}.get(split)
    if ds is None:
        raise HfadaptError(f"eval --split: the recipe of {run.path} has no {split} split")
    prepared = task.preprocess(ds, split, processor, recipe, info, train=False)
    built = build_eval_loader(recipe, task, prepared, task.collator(processor), accelerator)  # as training's evaluations
    model = accelerator.prepare(model)
    ctx = EvalContext(
        accelerator=accelerator, recipe=recipe, processor=processor, info=info, dataset=prepared, split=split,
        metric_names=tuple(recipe.eval.metrics or task.default_metrics(recipe)),
        run_dir=None if run.from_hub else run.path, order=tuple(built.order) if built.order is not None else None,
    )
    return {f"{split}/{k}": v for k, v in task.evaluate(ctx, model, built.loader).items()}
