"""`hfadapt targets MODEL`: candidate adapter target modules, their shapes and LoRA parameter counts.

Only the config is fetched: the model is built on the meta device, so no weights are downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import HfadaptError, first_line


@dataclass(frozen=True)
class TargetRow:
    name: str  # leaf module name, as written in adapter.target_modules
    count: int
    shapes: tuple[tuple[int, int], ...]
    lora_params: int  # trainable parameters LoRA of rank r adds on all of them


@dataclass(frozen=True)
class TargetReport:
    model: str
    model_type: str
    rows: tuple[TargetRow, ...]
    peft_default: tuple[str, ...] | None  # peft's LoRA default for this architecture
    heads: tuple[str, ...]
    r: int

    def params_for(self, names: list[str]) -> int:
        return sum(row.lora_params for row in self.rows if row.name in names)


def list_targets(model: str, task: str | None = None, r: int = 8, revision: str | None = None, trust_remote_code: bool = False) -> TargetReport:
    import transformers
    from accelerate import init_empty_weights

    from .adapters import head_modules, linear_module_names, peft_default_targets
    from .modeling import auto_model_class

    the_task = None
    if task is not None:
        from .tasks import TASKS

        the_task = TASKS.get(task, field="--task")
    try:
        config = transformers.AutoConfig.from_pretrained(model, revision=revision, trust_remote_code=trust_remote_code)
        auto = auto_model_class(the_task, config) if the_task is not None else transformers.AutoModel
        with init_empty_weights():
            skeleton = auto.from_config(config, trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001
        raise HfadaptError(f"targets: cannot build '{model}' from its config: {first_line(e)}") from e
    heads = head_modules(skeleton, extra=getattr(the_task, "fresh_heads", ()))
    found = linear_module_names(skeleton, exclude=heads)
    rows = tuple(
        TargetRow(name, len(shapes), tuple(sorted(set(shapes))), sum(r * (i + o) for i, o in shapes))
        for name, shapes in sorted(found.items())
    )
    default = peft_default_targets(config.model_type)
    return TargetReport(model, config.model_type, rows, tuple(default) if default else None, tuple(heads), r)


def format_report(rep: TargetReport) -> str:
    lines = [f"{rep.model} ({rep.model_type}); LoRA rank r={rep.r}", ""]
    width = max([len(r.name) for r in rep.rows] + [6])
    lines.append(f"{'module':<{width}}  {'count':>5}  {'in x out':<22}  {'LoRA params':>12}")
    for row in rep.rows:
        shapes = ", ".join(f"{i}x{o}" for i, o in row.shapes)
        lines.append(f"{row.name:<{width}}  {row.count:>5}  {shapes:<22}  {row.lora_params:>12,}")
    lines.append("")
    if rep.peft_default:
        lines.append(f"peft default ({', '.join(rep.peft_default)}): {rep.params_for(list(rep.peft_default)):,} LoRA params")
    else:
        lines.append("peft has no default for this architecture: hfadapt targets all linear layers")
    lines.append(f"all linear layers: {sum(r.lora_params for r in rep.rows):,} LoRA params")
    if rep.heads:
        lines.append(f"task head(s), trained fully via modules_to_save: {', '.join(rep.heads)}")
    return "\n".join(lines)
