"""`hfadapt targets MODEL`: candidate adapter target modules, their shapes and LoRA parameter counts.

Only the config is fetched: the model is built on the meta device, so no weights are downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from hfadapt.core.errors import HfadaptError, first_line


@dataclass(frozen=True)
class TargetRow:
    name: str  # leaf module name, as written in adapter.target_modules
    count: int
    shapes: tuple[tuple[int, int], ...]
    lora_params: int  # trainable parameters LoRA of rank r adds on all of them
    kind: str = "linear"  # or "conv KxK" (timm ConvNets)
    tower: str = ""  # vision-language models: "language", "vision", "projector" or "other"; "" otherwise


@dataclass(frozen=True)
class TargetReport:
    model: str
    model_type: str
    rows: tuple[TargetRow, ...]
    peft_default: tuple[str, ...] | None  # peft's LoRA default for this architecture
    heads: tuple[str, ...]
    r: int
    timm_family: str | None = None  # "transformer" or "convnet" for timm backbones
    timm_default: tuple[str, ...] | None = None  # hfadapt's default targets for that family
    timm_default_params: int = 0
    projector: str = ""  # vision-language models: the projector's module (model.train_projector trains it fully)

    def params_for(self, names: list[str]) -> int:
        return sum(row.lora_params for row in self.rows if row.name in names)


def list_targets(model: str, task: str | None = None, r: int = 8, revision: str | None = None, trust_remote_code: bool = False) -> TargetReport:
    import transformers
    from accelerate import init_empty_weights

    from hfadapt.modeling.adapters import head_modules, linear_module_names, peft_default_targets
    from hfadapt.modeling.models import auto_model_class, check_local_path

    from hfadapt.modeling import timm_models

    the_task = None
    if task is not None:
        from hfadapt.tasks import TASKS

        the_task = TASKS.get(task, field="--task")
    check_local_path(model, "targets")
    try:
        config = transformers.AutoConfig.from_pretrained(model, revision=revision, trust_remote_code=trust_remote_code)
        auto = auto_model_class(the_task, config) if the_task is not None else transformers.AutoModel
        if timm_models.is_timm(config):
            config = timm_models.drop_duplicate_num_classes(config)
            if task is None:  # with its classifier, so the report names it (trained fully, not adapted)
                auto = transformers.AutoModelForImageClassification
        with init_empty_weights():
            skeleton = auto.from_config(config, trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001
        raise HfadaptError(f"targets: cannot build '{model}' from its config: {first_line(e)}") from e
    heads = head_modules(skeleton, extra=the_task.fresh_heads if the_task is not None else ())
    found = linear_module_names(skeleton, exclude=heads)
    rows = tuple(
        TargetRow(name, len(shapes), tuple(sorted(set(shapes))), sum(r * (i + o) for i, o in shapes))
        for name, shapes in sorted(found.items())
    )
    if timm_models.is_timm(config):
        return _timm_report(model, skeleton, heads, r)
    from hfadapt.modeling.towers import find_towers

    towers = find_towers(skeleton)
    if towers.language and towers.vision:
        return _tower_report(model, config.model_type, skeleton, towers, tuple(heads), r)
    default = peft_default_targets(config.model_type)
    return TargetReport(model, config.model_type, rows, tuple(default) if default else None, tuple(heads), r)


def _tower_report(model: str, model_type: str, skeleton: object, towers: object, heads: tuple[str, ...], r: int) -> TargetReport:
    """A vision-language model's linear layers per tower: the same leaf name (q_proj, fc1) recurs in both."""
    import torch.nn as nn

    found: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for name, module in skeleton.named_modules():  # type: ignore[attr-defined]
        if isinstance(module, nn.Linear) and not any(name == h or name.startswith(h + ".") for h in heads):
            found.setdefault((towers.tower_of(name), name.rsplit(".", 1)[-1]), []).append((module.in_features, module.out_features))  # type: ignore[attr-defined]
    order = {"language": 0, "vision": 1, "projector": 2, "other": 3}
    rows = tuple(
        TargetRow(leaf, len(shapes), tuple(sorted(set(shapes))), sum(r * (i + o) for i, o in shapes), tower=tower)
        for (tower, leaf), shapes in sorted(found.items(), key=lambda kv: (order[kv[0][0]], kv[0][1]))
    )
    return TargetReport(model, model_type, rows, None, heads, r, projector=towers.projector)  # type: ignore[attr-defined]


def _format_towers(rep: TargetReport) -> str:
    lines = [f"{rep.model} ({rep.model_type}, vision-language); LoRA rank r={rep.r}"]
    width = max([len(r.name) for r in rep.rows] + [6])
    for tower in ("language", "vision", "projector", "other"):
        rows = [r for r in rep.rows if r.tower == tower]
        if not rows:
            continue
        lines += ["", f"{tower} {'model' if tower == 'language' else 'tower' if tower == 'vision' else 'layers' if tower == 'other' else ''}".rstrip() + ":"]
        lines.append(f"  {'module':<{width}}  {'count':>5}  {'in x out':<22}  {'LoRA params':>12}")
        for row in rows:
            shapes = ", ".join(f"{i}x{o}" for i, o in row.shapes)
            shapes = shapes if len(shapes) <= 22 else shapes[:19] + "..."
            lines.append(f"  {row.name:<{width}}  {row.count:>5}  {shapes:<22}  {row.lora_params:>12,}")
    language = sum(r.lora_params for r in rep.rows if r.tower == "language")
    vision = sum(r.lora_params for r in rep.rows if r.tower == "vision")
    lines += ["", f"hfadapt default (image-text-to-text): the language model's linear layers: {language:,} LoRA params",
              f"model.adapt_vision: true adds the vision tower's: {vision:,} LoRA params"]
    if rep.projector:
        lines.append(f"model.train_projector: true trains {rep.projector} fully (modules_to_save)")
    return "\n".join(lines)


def _timm_report(model: str, skeleton: object, heads: list[str], r: int) -> TargetReport:
    """Linear and (ungrouped) convolution layers of a timm backbone, with the family default."""
    from hfadapt.modeling import timm_models

    found: dict[tuple[str, str], list[tuple[int, int, int]]] = {}  # (leaf name, kind) -> (in, out, lora params)
    for name, module in skeleton.named_modules():  # type: ignore[attr-defined]
        if any(name == h or name.startswith(h + ".") for h in heads):
            continue
        kind = timm_models.adaptable(module)
        if kind == "linear":
            i, o, k = module.in_features, module.out_features, 1
        elif kind == "conv":
            i, o = module.in_channels, module.out_channels
            kh, kw = module.kernel_size
            kind, k = f"conv {kh}x{kw}", kh * kw
        else:
            continue
        # LoRA on a conv: A is a conv of the same kernel (in -> r), B a 1x1 conv (r -> out)
        found.setdefault((name.rsplit(".", 1)[-1], kind), []).append((i, o, r * (i * k + o)))
    rows = tuple(
        TargetRow(name, len(v), tuple(sorted({(i, o) for i, o, _ in v})), sum(p for _, _, p in v), kind)
        for (name, kind), v in sorted(found.items())
    )
    chosen = set(timm_models.target_modules(skeleton))
    default_params = 0
    for name, module in skeleton.named_modules():  # type: ignore[attr-defined]
        if name in chosen:
            if timm_models.adaptable(module) == "linear":
                default_params += r * (module.in_features + module.out_features)
            else:
                kh, kw = module.kernel_size
                default_params += r * (module.in_channels * kh * kw + module.out_channels)
    return TargetReport(
        model, f"timm {skeleton.config.architecture}", rows, None, tuple(heads), r,  # type: ignore[attr-defined]
        timm_family=timm_models.family(skeleton), timm_default=tuple(timm_models.default_targets(skeleton)),
        timm_default_params=default_params,
    )


def format_report(rep: TargetReport) -> str:
    if any(row.tower for row in rep.rows):
        return _format_towers(rep)
    lines = [f"{rep.model} ({rep.model_type}); LoRA rank r={rep.r}", ""]
    width = max([len(r.name) for r in rep.rows] + [6])
    lines.append(f"{'module':<{width}}  {'kind':<9}  {'count':>5}  {'in x out':<22}  {'LoRA params':>12}")
    for row in rep.rows:
        shapes = ", ".join(f"{i}x{o}" for i, o in row.shapes)
        if len(shapes) > 22:
            shapes = shapes[:19] + "..."
        lines.append(f"{row.name:<{width}}  {row.kind:<9}  {row.count:>5}  {shapes:<22}  {row.lora_params:>12,}")
    lines.append("")
    if rep.timm_default is not None:
        what = "attention and MLP projections" if rep.timm_family == "transformer" else "convolutions and linear layers (depthwise/grouped convs left out)"
        lines.append(f"hfadapt default for a timm {rep.timm_family} ({what}): {', '.join(rep.timm_default)}: {rep.timm_default_params:,} LoRA params")
        lines.append(f"all listed layers: {sum(r.lora_params for r in rep.rows):,} LoRA params")
    elif rep.peft_default:
        lines.append(f"peft default ({', '.join(rep.peft_default)}): {rep.params_for(list(rep.peft_default)):,} LoRA params")
    else:
        lines.append("peft has no default for this architecture: hfadapt targets all linear layers")
    if rep.timm_default is None:
        lines.append(f"all linear layers: {sum(r.lora_params for r in rep.rows):,} LoRA params")
    if rep.heads:
        lines.append(f"task head(s), trained fully via modules_to_save: {', '.join(rep.heads)}")
    return "\n".join(lines)
