"""Base models: load from the Hub or a local folder (or build from a config), and reload a run's model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hfadapt.modeling import timm_models
from hfadapt.core.errors import HfadaptError, first_line

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from hfadapt.tasks.base import Task

# Published copies of a run (hub push) name a local base model as "<local>/NAME": its path stays in
# the run directory only.
LOCAL_PLACEHOLDER = "<local>"
DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16", "auto": "auto"}




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


def load_base_model(recipe: Any, task: Task, info: Any, processor: Any = None, path: str | None = None) -> Any:
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


def load_run_model(run: Any, task: Task) -> Any:
    """The fine-tuned model of a finished run: base + adapter (peft) or the saved full model."""
    import transformers

    from hfadapt.modeling.adapters import is_peft

    recipe = run.recipe
    auto = auto_model_class(task, transformers.AutoConfig.from_pretrained(run.model_dir) if task.auto_class_from_config else None)
    if not is_peft(recipe.adapter.method):
        return auto.from_pretrained(run.model_dir, dtype=DTYPES[recipe.model.dtype])
    from peft import PeftConfig, PeftModel

    peft_config = PeftConfig.from_pretrained(str(run.model_dir))
    base_ref = peft_config.base_model_name_or_path or ""
    if base_ref.startswith(LOCAL_PLACEHOLDER):
        raise HfadaptError(
            f"{run.model_dir}: the adapter was trained on a local base model ({base_ref}) that was not published; "
            "load it with peft onto the same base weights (see the model card)"
        )
    check_local_path(base_ref, f"the base model of {run.model_dir}")
    config = timm_models.drop_duplicate_num_classes(transformers.AutoConfig.from_pretrained(run.model_dir, trust_remote_code=recipe.model.trust_remote_code))
    try:
        base = auto.from_pretrained(
            peft_config.base_model_name_or_path,
            config=config,
            revision=peft_config.revision or recipe.model.revision,
            dtype=DTYPES[recipe.model.dtype],
            trust_remote_code=recipe.model.trust_remote_code,
            # the run's head (other classes than the base's) comes from the adapter's modules_to_save
            ignore_mismatched_sizes=True,
        )
    except Exception as e:  # noqa: BLE001
        raise HfadaptError(f"cannot load the base model '{peft_config.base_model_name_or_path}' of {run.model_dir}: {first_line(e)}") from e
    return PeftModel.from_pretrained(base, str(run.model_dir))
