"""What a server has loaded: each base model once, every adapter inside it under its name.

An ADAPTER argument is a run directory, a Hub adapter id or a folder written by `hfadapt merge
--method` (all read by `resolve_run`, as `hfadapt predict` reads them), with an optional `NAME=`
prefix. Adapters of one base, head and adapter type share one peft model (`load_adapter`); the
base's own name serves the bare base (the adapter switched off).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hfadapt.core.errors import HfadaptError

if TYPE_CHECKING:
    from hfadapt.core.recipe import Recipe
    from hfadapt.data.labels import LabelInfo
    from hfadapt.rundir.layout import RunDir
    from hfadapt.tasks.base import Processor, Task

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
BASE_ROWS = "__base__"  # peft's name for rows that run without an adapter in a mixed batch
# How requests reach a task: generation (chat and completions), transcription, or /v1/classify.
GENERATIVE = {"causal-lm": "causal", "preference": "causal", "seq2seq": "seq2seq"}
TRANSCRIBE = ("speech-recognition",)
# config.json fields that do not change the model a base is loaded as
_CONFIG_NOISE = ("_name_or_path", "transformers_version", "architectures")


@dataclass
class ModelGroup:
    """One loaded base model and the adapters inside it."""

    model: Any  # a PeftModel (or a standalone model for a full fine-tune run)
    base_name: str | None  # how requests name the bare base; None for a standalone model
    peft: bool
    mixable: bool  # LoRA: rows of different adapters run in one forward (peft's adapter_names)
    adapters: list[str] = field(default_factory=list)
    base_ref: str | None = None  # the base as its adapters' configs name it (a Hub id or a folder)
    revision: str | None = None


@dataclass
class Served:
    """One name requests can ask for: an adapter, or a bare base (peft_name None)."""

    name: str
    task: str
    recipe: Recipe
    processor: Processor
    info: LabelInfo | None
    group: ModelGroup
    peft_name: str | None  # the adapter's name in group.model; None: the bare base (or a standalone model)
    ref: str
    folder: str | None = None  # the adapter's (or standalone model's) folder

    @property
    def base(self) -> str | None:
        return self.group.base_name

    @property
    def kind(self) -> str:
        if self.task in GENERATIVE:
            return "generate"
        return "transcribe" if self.task in TRANSCRIBE else "classify"

    @property
    def task_obj(self) -> Task:
        from hfadapt.tasks.base import get_task

        return get_task(self.task)


def parse_spec(spec: str) -> tuple[str | None, str]:
    """'NAME=REF' -> (NAME, REF); 'REF' -> (None, REF). A path that exists with '=' in it is a REF."""
    name, sep, ref = spec.partition("=")
    if not sep or Path(spec).exists():
        return None, spec
    if not NAME.match(name):
        raise HfadaptError(f"serve: '{name}' is not a valid adapter name (letters, digits and . _ - : /, at most 128)")
    if not ref:
        raise HfadaptError(f"serve: '{spec}' names no adapter after '='")
    return name, ref


def default_name(ref: str) -> str:
    path = Path(ref)
    name = path.resolve().name if path.exists() else ref.removeprefix("hub:")
    return name if NAME.match(name) else re.sub(r"[^A-Za-z0-9._:/-]", "-", name)[:128] or "adapter"


def _base_display_name(base_ref: str) -> str:
    """A Hub id as it is; a local folder by its last component."""
    return Path(base_ref).name if Path(base_ref).exists() else base_ref


@dataclass
class Registry:
    served: dict[str, Served] = field(default_factory=dict)
    groups: list[ModelGroup] = field(default_factory=list)

    def get(self, name: str) -> Served | None:
        return self.served.get(name)

    def adapters(self) -> list[Served]:
        return list(self.served.values())


def _check_run(run: RunDir, ref: str) -> None:
    from hfadapt.modeling.adapters import is_peft

    if run.recipe.model.trust_remote_code:
        raise HfadaptError(f"serve: {ref} needs model.trust_remote_code; serve never runs code from a model repo")
    folder = run.model_dir
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt"))
    if pickles:
        raise HfadaptError(f"serve: {ref} holds pickle weights ({', '.join(pickles)}); serve loads safetensors only")
    if is_peft(run.recipe.adapter.method) and not (folder / "adapter_model.safetensors").is_file():
        raise HfadaptError(f"serve: {ref} has no adapter_model.safetensors in {folder}")


def _group_key(run: RunDir, task: Task) -> tuple:
    """Adapters with equal keys load into one base model: same base, head config, dtype and adapter type."""
    from peft import PeftConfig

    cfg = PeftConfig.from_pretrained(str(run.model_dir))
    config = json.loads((run.model_dir / "config.json").read_text()) if (run.model_dir / "config.json").is_file() else {}
    for k in _CONFIG_NOISE:
        config.pop(k, None)
    return (cfg.base_model_name_or_path, cfg.revision, task.name if task.name not in GENERATIVE else GENERATIVE[task.name],
            run.recipe.model.dtype, json.dumps(config, sort_keys=True), str(cfg.peft_type))


def _mixable(model: Any) -> bool:
    """peft mixes adapters in one batch (adapter_names) for plain LoRA; DoRA and other types go by adapter."""
    from peft import PeftType

    configs = list(getattr(model, "peft_config", {}).values())
    return bool(configs) and all(c.peft_type == PeftType.LORA and not getattr(c, "use_dora", False) for c in configs)


def load(specs: list[str], say: Any = print) -> Registry:
    """Load every adapter named in `specs`; one line per adapter through `say`."""
    import transformers

    from hfadapt.modeling.adapters import is_peft
    from hfadapt.modeling.models import load_run_model
    from hfadapt.publishing.hub import resolve_run
    from hfadapt.tasks.base import get_task

    if not specs:
        raise HfadaptError("serve: no adapter given")
    from hfadapt.inference.onnx_model import is_export_folder

    named: list[tuple[str, str]] = []
    for spec in specs:  # every name and path checked before a model is loaded
        name, ref = parse_spec(spec)
        name = name or default_name(ref)
        if name in (n for n, _ in named):
            raise HfadaptError(f"serve: two adapters are named '{name}'; give one another name with NAME={ref}")
        if is_export_folder(ref):
            raise HfadaptError(f"serve: {ref} is an ONNX export (hfadapt export); serve the run it came from, "
                               f"or run the export with `hfadapt predict {ref}`")
        named.append((name, ref))
    reg = Registry()
    by_key: dict[tuple, ModelGroup] = {}
    for name, ref in named:
        run = resolve_run(ref)
        _check_run(run, ref)
        task = get_task(run.recipe.task)
        if not is_peft(run.recipe.adapter.method):  # a full fine-tune: a standalone model of its own
            model = load_run_model(run, task, ref=ref, safetensors_only=True).eval()
            group = ModelGroup(model=model, base_name=None, peft=False, mixable=False, adapters=[name])
            reg.groups.append(group)
            peft_name = None
        else:
            key = _group_key(run, task)
            group = by_key.get(key)
            if group is None:
                model = load_run_model(run, task, ref=ref, adapter_name=name, safetensors_only=True)
                group = ModelGroup(model=model, base_name=_base_display_name(key[0]), peft=True, mixable=False,
                                   base_ref=key[0], revision=key[1])
                by_key[key] = group
                reg.groups.append(group)
            else:
                group.model.load_adapter(str(run.model_dir), adapter_name=name)
            group.model.eval()
            group.adapters.append(name)
            group.mixable = _mixable(group.model)
            peft_name = name
        config = transformers.AutoConfig.from_pretrained(run.model_dir)
        processor = task.load_processor(run.recipe, path=str(run.model_dir))
        reg.served[name] = Served(name=name, task=task.name, recipe=run.recipe, processor=processor,
                                  info=task.info_from_config(config), group=group, peft_name=peft_name, ref=str(ref),
                                  folder=str(run.model_dir))
        base = f" on {group.base_name}" if group.base_name else ""
        say(f"serve: {name}: {task.name} {run.recipe.adapter.method} adapter{base} ({ref})")
    for group in reg.groups:  # the bare bases, under names no adapter took
        if group.base_name and group.base_name not in reg.served:
            first = reg.served[group.adapters[0]]
            reg.served[group.base_name] = Served(name=group.base_name, task=first.task, recipe=first.recipe, processor=first.processor,
                                                 info=first.info, group=group, peft_name=None, ref=group.base_name,
                                                 folder=group.base_ref)
    return reg
