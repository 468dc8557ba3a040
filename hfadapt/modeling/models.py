"""Base models: load from the Hub or a local folder (or build from a config), and reload a run's model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hfadapt.modeling import timm_models
from hfadapt.core.errors import HfadaptError, first_line

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PretrainedConfig, PreTrainedModel

    from hfadapt.core.recipe import Recipe
    from hfadapt.data.labels import LabelInfo
    from hfadapt.rundir.layout import RunDir
    from hfadapt.tasks.base import Processor, Task

# Published copies of a run (hub push) name a local base model as "<local>/NAME" and a path inside the
# run directory (model.init=config: its saved random base) as "<run>/...": the real paths stay in the
# run directory only.
LOCAL_PLACEHOLDER = "<local>"
RUN_PLACEHOLDER = "<run>"
DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16", "auto": "auto"}
# transformers 5 swaps layers for Hub kernels (code fetched from kernels-community at run time) by
# default, and re-fetches them each time a CUDA model switches between train and eval mode. That is
# remote code the recipe never asked for, and offline it crashes the first evaluation on a GPU.
NO_HUB_KERNELS = {"use_kernels": False}
BASE_MODEL_FLAG = "--base-model"
# Config fields that decide whether an adapter's weights fit a base model (model.adapter).
ARCHITECTURE_KEYS = ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "n_embd", "n_layer", "n_head", "d_model")


def looks_local(source: str) -> bool:
    """Whether a model reference means a local folder rather than a Hub id: absolute, ./ ../ ~, a
    Windows path, more than one '/', or a path whose parent folder exists here."""
    if source.startswith(("/", "./", "../", "~", ".\\")) or "\\" in source or source in (".", ".."):
        return True
    if len(source) > 2 and source[1] == ":" and source[0].isalpha():
        return True
    path = Path(source)
    return path.exists() or source.count("/") > 1 or (len(path.parts) > 1 and path.parent.is_dir())


def check_local_path(source: str, field: str) -> None:
    """A local-looking model path must exist before from_pretrained turns it into a bad Hub repo id."""
    if not looks_local(source):
        return
    path = Path(source).expanduser()
    if not path.exists():
        raise HfadaptError(f"{field}: local path {source} does not exist")
    if not path.is_dir():
        raise HfadaptError(f"{field}: {source} is a file; give the model's folder or a Hub id")
    timm_models.check_timm_folder(source, field)


def quantization_config(mode: str) -> Any:
    """bitsandbytes settings for QLoRA, or None; a clear error where they can't work."""
    if mode == "none":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    if not torch.cuda.is_available():
        raise HfadaptError(f"model.quantization: {mode} (QLoRA) needs a CUDA GPU; none is available here. Use model.quantization=none")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise HfadaptError(f"model.quantization: {mode} needs bitsandbytes: pip install bitsandbytes") from None
    if mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute)


def auto_model_class(task: Task, config: PretrainedConfig | None = None) -> Any:
    """The transformers Auto* class of a task's model: `task.auto_class_for(config)`, which is
    `task.auto_class` unless the head depends on the architecture (speech-recognition: encoder-decoder or CTC)."""
    import transformers

    return getattr(transformers, task.auto_class_for(config))


def load_base_model(
    recipe: Recipe, task: Task, info: LabelInfo | None, processor: Processor | None = None, path: str | None = None
) -> PreTrainedModel:
    """The task's Auto* model, with a fresh head where the task needs one (task.model_kwargs).

    `path` overrides where weights come from (a run's saved random base for model.init=config).
    """
    import torch
    import transformers

    m = recipe.model
    source = path or m.name_or_path
    check_local_path(source, "model.name_or_path" if path is None else f"the run's base model {path}")
    quant = quantization_config(m.quantization)
    auto = getattr(transformers, task.auto_class)
    extra = dict(task.model_kwargs(info))
    extra.update(task.processor_model_kwargs(processor))  # CTC: the head is sized to the processor's vocabulary
    try:
        if task.auto_class_from_config:
            auto = auto_model_class(task, transformers.AutoConfig.from_pretrained(
                source, revision=None if path else m.revision, trust_remote_code=m.trust_remote_code))
        if m.init == "config" and path is None:
            config = transformers.AutoConfig.from_pretrained(
                source, revision=m.revision, trust_remote_code=m.trust_remote_code, **extra
            )
            model = auto.from_config(timm_models.drop_duplicate_num_classes(config), trust_remote_code=m.trust_remote_code)
            if m.dtype not in ("float32", "auto"):
                model = model.to(getattr(torch, m.dtype))
        else:
            revision = None if path else m.revision
            # timm checkpoints: labels go into the config first (see timm_models.checkpoint_config)
            timm_config = timm_models.checkpoint_config(source, revision, m.trust_remote_code, task.model_kwargs(info)) if task.modality == "image" else None
            model = auto.from_pretrained(
                source,
                revision=revision,
                trust_remote_code=m.trust_remote_code,
                dtype=DTYPES[m.dtype],
                ignore_mismatched_sizes=True,  # a base fine-tuned on other labels gets a new head
                **NO_HUB_KERNELS,
                **({"quantization_config": quant} if quant is not None else {}),
                **({"config": timm_config} if timm_config is not None else extra),
            )
    except Exception as e:  # noqa: BLE001 - any loading failure becomes one line naming the field
        if isinstance(e, HfadaptError):
            raise
        raise HfadaptError(f"model.name_or_path: cannot load {auto.__name__} from '{source}': {first_line(e)}") from e
    timm_models.sync_label_names(model)  # the data's class names, not the base checkpoint's
    if recipe.adapter.method != "full":
        timm_models.freeze_batch_norm(model)
    task.configure_model(model, recipe)
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=recipe.train.gradient_checkpointing)
    tok = processor if hasattr(processor, "pad_token_id") else None
    if tok is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id
    return model


def adapter_base(model_dir: str | Path) -> str | None:
    """The base model an adapter folder names (adapter_config.json), or None without one (full, freeze)."""
    import json

    config = Path(model_dir) / "adapter_config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text()).get("base_model_name_or_path") or ""
    except (ValueError, AttributeError):
        return None  # peft reports an unreadable config itself, naming the file


def unpublished_base(run: RunDir) -> str | None:
    """The placeholder a pulled adapter names instead of its unpublished local base (`<local>/NAME`,
    `<run>/base_model`), or None when the base can be loaded from where the adapter says."""
    base = adapter_base(run.model_dir)
    return base if base and base.startswith((LOCAL_PLACEHOLDER, RUN_PLACEHOLDER)) else None


def unpublished_base_error(ref: str | Path, base: str) -> HfadaptError:
    """One line for an adapter whose base model was not published: the user must give it."""
    what = (f"a random base model built from a config ({base}), saved in its training run only and not published"
            if base.startswith(RUN_PLACEHOLDER) else f"a local base model ({base}) that was not published")
    return HfadaptError(f"{ref} was trained on {what}; give it with {BASE_MODEL_FLAG} PATH|HUB_ID")


def check_base_model(base_model: str) -> str:
    """A --base-model value: a Hub id, or a local folder that must exist (`~` expanded)."""
    check_local_path(base_model, BASE_MODEL_FLAG)
    path = Path(base_model).expanduser()
    return str(path) if path.exists() else base_model


def load_run_model(
    run: RunDir, task: Task, base_model: str | None = None, ref: str | Path | None = None,
    adapter_name: str = "default", safetensors_only: bool = False,
) -> PreTrainedModel | PeftModel:
    """The fine-tuned model of a finished run: base + adapter (peft) or the saved full model.

    `base_model` (a local folder or Hub id) replaces the base the adapter config names: a pulled adapter
    trained on a local base names a placeholder there (see unpublished_base). `ref` is how messages
    name the run (the user's run directory or Hub id; its folder by default). `adapter_name` is the
    name the adapter gets in the peft model (serve loads several); `safetensors_only` refuses pickle
    weights of the base (serve).
    """
    import transformers

    from hfadapt.modeling.adapters import is_peft

    recipe = run.recipe
    ref = ref if ref is not None else run.model_dir
    if base_model is not None and not is_peft(recipe.adapter.method):
        raise HfadaptError(f"{BASE_MODEL_FLAG}: {ref} holds a standalone model (adapter.method={recipe.adapter.method}); it loads without a base model")
    auto = auto_model_class(task, transformers.AutoConfig.from_pretrained(run.model_dir) if task.auto_class_from_config else None)
    if not is_peft(recipe.adapter.method):
        return auto.from_pretrained(run.model_dir, dtype=DTYPES[recipe.model.dtype], **NO_HUB_KERNELS,
                                    **({"use_safetensors": True} if safetensors_only else {}))
    from peft import PeftConfig, PeftModel

    peft_config = PeftConfig.from_pretrained(str(run.model_dir))
    if base_model is not None:
        base_ref, revision = check_base_model(base_model), None
    else:
        base_ref, revision = peft_config.base_model_name_or_path or "", peft_config.revision or recipe.model.revision
        placeholder = unpublished_base(run)
        if placeholder is not None:
            raise unpublished_base_error(ref, placeholder)
        check_local_path(base_ref, f"the base model of {run.model_dir}")
    config = timm_models.drop_duplicate_num_classes(transformers.AutoConfig.from_pretrained(run.model_dir, trust_remote_code=recipe.model.trust_remote_code))
    try:
        base = auto.from_pretrained(
            base_ref,
            config=config,
            revision=revision,
            dtype=DTYPES[recipe.model.dtype],
            trust_remote_code=recipe.model.trust_remote_code,
            # the run's head (other classes than the base's) comes from the adapter's modules_to_save
            ignore_mismatched_sizes=True,
            **NO_HUB_KERNELS,
            **({"use_safetensors": True} if safetensors_only else {}),
        )
    except Exception as e:  # noqa: BLE001
        where = f"given with {BASE_MODEL_FLAG}" if base_model is not None else f"of {run.model_dir}"
        raise HfadaptError(f"cannot load the base model '{base_ref}' {where}: {first_line(e)}") from e
    return PeftModel.from_pretrained(base, str(run.model_dir), adapter_name=adapter_name)


# ---- model.adapter: starting from a trained adapter --------------------------------------------------
@dataclass(frozen=True)
class StartingAdapter:
    """A resolved model.adapter: the adapter folder, and where the base weights come from when the run
    builds its base from a config (model.init=config: the starting run's saved random base)."""

    ref: str  # as the recipe gives it, for messages
    folder: str
    random_base: str | None = None
    note: str | None = None  # a line to print: the base model is named differently from the starting run's


SHAPE_FIELDS = ("r", "alpha", "target_modules", "use_rslora", "use_dora", "init_r", "target_r")  # what a continued adapter keeps


def starting_adapter(recipe: Recipe, run: RunDir, task: Task) -> StartingAdapter:
    """Check that `run` (model.adapter, resolved) holds a peft adapter of the recipe's base model, of the
    recipe's adapter method and the task's model kind; one line naming model.adapter otherwise."""
    import json

    import transformers

    from hfadapt.modeling.adapters import is_peft

    ref, where = recipe.model.adapter, "model.adapter"
    sft = run.recipe
    folder = run.model_dir
    if not is_peft(sft.adapter.method) or adapter_base(folder) is None:
        raise HfadaptError(f"{where}: {ref} holds a whole model (adapter.method={sft.adapter.method}), not an adapter to continue; "
                           "give it as model.name_or_path instead")
    config = json.loads((folder / "adapter_config.json").read_text())
    if sft.adapter.method != recipe.adapter.method:
        raise HfadaptError(f"{where}: {ref} is a {sft.adapter.method} adapter and training continues it; set adapter.method={sft.adapter.method}")
    # The continued adapter keeps its own shape: a recipe value that says otherwise would be ignored. A
    # value equal to the schema's default is not taken as a request (a saved recipe.yaml writes them all).
    fields = type(recipe.adapter).model_fields
    for name in SHAPE_FIELDS:
        if name in fields and hasattr(sft.adapter, name):
            ours_value, theirs_value = getattr(recipe.adapter, name), getattr(sft.adapter, name)
            if ours_value != theirs_value and ours_value != fields[name].default:
                raise HfadaptError(
                    f"adapter.{name}: {ours_value!r}, but the adapter model.adapter continues ({ref}) has {theirs_value!r} "
                    f"and keeps it; leave adapter.{name} out or set it to {theirs_value!r}"
                )
    if task.peft_task_type and config.get("task_type") not in (None, task.peft_task_type):
        raise HfadaptError(f"{where}: {ref} is a {config.get('task_type')} adapter ({sft.task}); {recipe.task} continues {task.peft_task_type} adapters")
    base = config.get("base_model_name_or_path") or ""
    m = recipe.model
    try:
        ours = transformers.AutoConfig.from_pretrained(m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code).to_dict()
    except Exception as e:  # noqa: BLE001 - the base model's own loading errors come later, naming model.name_or_path
        raise HfadaptError(f"model.name_or_path: cannot read the config of '{m.name_or_path}': {first_line(e)}") from e
    saved = folder / "config.json"  # the base model's config, saved with every hfadapt adapter
    theirs = json.loads(saved.read_text()) if saved.is_file() else {}
    # a pulled adapter of a local base names a placeholder (<local>/NAME, <run>/base_model): model.name_or_path
    # is the base then, accepted where its architecture is the adapter's
    unpublished = base if base.startswith((LOCAL_PLACEHOLDER, RUN_PLACEHOLDER)) else None
    differ = [k for k in ARCHITECTURE_KEYS if k in ours and k in theirs and ours[k] != theirs[k]]
    if differ:
        what = ", ".join(f"{k} {theirs[k]} vs {ours[k]}" for k in differ)
        todo = (f"set model.name_or_path to the base it was trained on ({unpublished}, not published: a copy of those weights)"
                if unpublished else f"start from an adapter trained on {m.name_or_path}")
        raise HfadaptError(
            f"{where}: {ref} is an adapter of another base model ({unpublished or sft.model.name_or_path}) than model.name_or_path "
            f"{m.name_or_path} ({what}); {todo}"
        )
    random_base = None
    if m.init == "config":  # the random weights the adapter was trained on: the starting run's saved base
        if sft.model.init != "config" or base.startswith((RUN_PLACEHOLDER, LOCAL_PLACEHOLDER)) or not Path(base).is_dir():
            raise HfadaptError(f"{where}: model.init=config builds random weights, but {ref} was not trained on a random base "
                               "saved with it; set model.init=pretrained and model.name_or_path to its base model")
        random_base = base
    note = None
    if m.init != "config" and unpublished:
        note = (f"model.adapter: {ref} was trained on a base model that was not published ({unpublished}); continuing it on "
                f"model.name_or_path {m.name_or_path}, which has its architecture: it must hold the weights the adapter was trained on")
    elif m.init != "config" and sft.model.name_or_path != m.name_or_path:
        note = f"model.adapter: {ref} was trained on {sft.model.name_or_path}; continuing it on {m.name_or_path} (same architecture)"
    return StartingAdapter(str(ref), str(folder), random_base, note)
