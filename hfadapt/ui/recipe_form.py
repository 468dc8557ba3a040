"""The Recipe tab's form: one field per recipe setting of the chosen task and adapter method, each
with its validation message, kept in step with the YAML box both ways.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from hfadapt.core.errors import HfadaptError
from hfadapt.ui import form
from hfadapt.ui.shared import error_line

if TYPE_CHECKING:
    import gradio as gr


def read_and_place(text: str, base: str, paths: list[str]) -> tuple[dict[str, Any] | None, dict[str, list[str]]]:
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
def form_paths(task: str, method: str) -> list[str]:
    from hfadapt.core.recipe import adapter_methods

    try:
        sections = form.form_fields(task, method if method in adapter_methods() else "lora")
    except HfadaptError:
        return []
    return [s.path for fields in sections.values() for s in fields]


@dataclass
class _Fields:
    """The components of one rendering of the form, in the order of their specs."""

    specs: list[form.FieldSpec] = field(default_factory=list)
    comps: list[gr.Component] = field(default_factory=list)
    errs: list[gr.Markdown] = field(default_factory=list)
    section_errs: dict[str, gr.Markdown] = field(default_factory=dict)


def _add(out: _Fields, spec: form.FieldSpec, key_prefix: str, raw: dict[str, Any] | None, placed: dict[str, list[str]]) -> None:
    import gradio as gr

    eid = "f-" + spec.path.replace(".", "-")
    key = f"{key_prefix}:{spec.path}"
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
    out.specs.append(spec)
    out.comps.append(c)
    out.errs.append(e)


def _lay_out(sections: dict[str, list[form.FieldSpec]], key_prefix: str, raw: dict[str, Any] | None,
             placed: dict[str, list[str]]) -> _Fields:
    """A group per section, its advanced fields folded, and the section's own messages under it."""
    import gradio as gr

    out = _Fields()
    for section, fields in sections.items():
        with gr.Group():
            if section:
                gr.Markdown(f"**{section}**")
            for spec in (s for s in fields if not s.advanced):
                _add(out, spec, key_prefix, raw, placed)
            folded = [s for s in fields if s.advanced]
            if folded:
                with gr.Accordion(f"{section} · advanced", open=False):
                    for spec in folded:
                        _add(out, spec, key_prefix, raw, placed)
            if section:
                out.section_errs[section] = gr.Markdown("\n\n".join(placed.get(section, [])), elem_id=f"err-section-{section}",
                                                        elem_classes="field-error", key=f"{key_prefix}:{section}:err")
    return out


def _to_yaml(spec: form.FieldSpec) -> Callable[[Any, str], Any]:
    import gradio as gr

    def fn(value: Any, text: str) -> Any:
        try:
            raw = form.parse(text)
        except HfadaptError:
            return gr.skip()  # the YAML's own error is shown under it; fix it there first
        form.set_value(raw, spec.path, form.typed(spec, value))
        return form.dump(raw)
    return fn


def _from_yaml(fields: _Fields) -> Callable[..., list]:
    import gradio as gr

    paths = [s.path for s in fields.specs]
    section_names = list(fields.section_errs)

    def fn(text: str, base: str, *current: Any) -> list:
        raw, placed = read_and_place(text, base, paths)
        values = []
        for spec, now in zip(fields.specs, current):
            if raw is None:
                values.append(gr.skip())
                continue
            new = form.shown(spec, form.get(raw, spec.path))
            same = now == new or (spec.kind == "text" and form.typed(spec, now) == form.typed(spec, new))
            values.append(gr.skip() if same else new)
        messages = ["\n\n".join(placed.get(p, [])) for p in paths]
        sections_out = ["\n\n".join(placed.get(s, [])) for s in section_names]
        return values + messages + sections_out
    return fn


def render_form(task: str | None, method: str, text: str, base: str, yaml_box: gr.Textbox, base_state: gr.State) -> None:
    """The form of `task` and `method` (inside a gr.render), its fields wired to the YAML box."""
    import gradio as gr

    from hfadapt.core.recipe import adapter_methods

    if not task:
        gr.Markdown("Pick a shipped recipe, a blank task or a file to start.", elem_id="form-empty")
        return
    try:
        sections = form.form_fields(task, method if method in adapter_methods() else "lora")
    except HfadaptError as e:
        gr.Markdown(error_line(e))
        return
    all_paths = [s.path for fields in sections.values() for s in fields]
    raw, placed = read_and_place(text, base, all_paths)
    fields = _lay_out(sections, f"{task}:{method}", raw, placed)
    for spec, c in zip(fields.specs, fields.comps):  # .input: the user's edits only, never the updates from the YAML
        c.input(_to_yaml(spec), [c, yaml_box], yaml_box, trigger_mode="always_last", show_progress="hidden")
    yaml_box.change(_from_yaml(fields), [yaml_box, base_state, *fields.comps],
                    fields.comps + fields.errs + [fields.section_errs[s] for s in fields.section_errs],
                    trigger_mode="always_last", show_progress="hidden")
