"""The recipe form: fields read from a task's JSON Schema, the YAML text they edit, and `validate`'s
messages placed under the field they name. No Gradio here: the app builds components from `FieldSpec`s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from hfadapt.core.errors import HfadaptError

SECTIONS = ("model", "data", "adapter", "train", "eval", "generation", "output", "hub")
# The fields shown unfolded; every other one sits in its section's "advanced" fold.
BASIC = {
    "name", "name_or_path", "init", "dtype", "dataset", "train_files", "validation_files", "max_length", "labels",
    "method", "r", "alpha", "dropout", "target_modules", "epochs", "max_steps", "batch_size", "learning_rate",
    "scheduler", "warmup_ratio", "logging_steps", "eval_steps", "save_steps", "metrics", "best_metric", "dir",
    "overwrite", "max_new_tokens", "prompts", "push", "repo_id",
}
# Sections whose every field is advanced unless the task needs them (folded as a whole).
FOLDED_SECTIONS = {"generation", "hub"}


@dataclass
class FieldSpec:
    path: str  # "train.epochs"
    title: str
    kind: str  # "choice" (a dropdown), "bool" (a checkbox) or "text" (a YAML value)
    help: str
    default: Any
    choices: tuple[str, ...] = ()
    advanced: bool = False
    numeric: bool = False  # "5e-4" reads as a string in YAML 1.1: a number field takes it as a number


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    return schema["$defs"][ref.rsplit("/", 1)[1]] if ref else node


def _field(path: str, prop: dict[str, Any]) -> FieldSpec:
    options = prop.get("anyOf", [prop])
    choices: list[str] = []
    nullable = False
    kinds = set()
    for o in options:
        if o.get("type") == "null":
            nullable = True
        elif "enum" in o:
            choices += [str(c) for c in o["enum"]]
        elif "const" in o and len(options) == 1:
            choices.append(str(o["const"]))
        else:
            kinds.add(o.get("type"))
    name = path.rsplit(".", 1)[-1]
    help_text = prop.get("description", "")
    default = prop.get("default")
    if choices and not kinds:
        kind = "choice"
        if nullable:
            choices = [""] + choices
    elif kinds == {"boolean"} and not nullable:
        kind = "bool"
    elif kinds == {"boolean"}:
        kind, choices = "choice", ["", "true", "false"]
    else:
        kind = "text"
    return FieldSpec(path, prop.get("title", name), kind, help_text, default, tuple(choices),
                     advanced=name not in BASIC and not name.endswith("_column"), numeric=bool(kinds) and kinds <= {"number", "integer"})


def form_fields(task: str, method: str) -> dict[str, list[FieldSpec]]:
    """Section -> fields of the recipe model of `task` with the adapter section of `method`."""
    from hfadapt.core.recipe import adapter_section, recipe_class
    from hfadapt.modeling import adapters  # noqa: F401  (registers the adapter methods' sections)

    schema = recipe_class(task).model_json_schema()
    out: dict[str, list[FieldSpec]] = {"": [_field("name", schema["properties"]["name"])]}
    for section in SECTIONS:
        if section == "adapter":
            node = adapter_section(method).model_json_schema()
        else:
            node = _resolve(schema, schema["properties"][section])
        specs = [_field(f"{section}.{name}", prop) for name, prop in node.get("properties", {}).items()
                 if not (section == "adapter" and name == "method")]
        out[section] = [replace(s, advanced=s.advanced or section in FOLDED_SECTIONS)
                        for s in specs if not (s.kind == "text" and _is_mapping(node["properties"][s.path.split(".")[1]]))]
    return out


def _is_mapping(prop: dict[str, Any]) -> bool:
    return prop.get("type") == "object"  # adapter.options: edited in the YAML only


# ---- YAML <-> values ---------------------------------------------------------------------------------
def parse(text: str) -> dict[str, Any]:
    """The YAML text as a mapping; an error naming the line when it is not one."""
    try:
        raw = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise HfadaptError(f"recipe YAML: {where}{getattr(e, 'problem', None) or e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise HfadaptError("recipe YAML: a recipe must be a mapping of sections")
    return raw


class _Dumper(yaml.SafeDumper):
    """Sections as blocks, short lists of scalars inline (`target_modules: [query, value]`), as recipes are written."""


def _list(dumper: yaml.SafeDumper, data: list) -> Any:
    inline = all(not isinstance(v, (dict, list)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=inline)


_Dumper.add_representer(list, _list)


def dump(raw: dict[str, Any]) -> str:
    return yaml.dump(raw, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def get(raw: dict[str, Any], path: str) -> Any:
    node: Any = raw
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def set_value(raw: dict[str, Any], path: str, value: Any) -> None:
    """Set `path`; None removes the key (the schema's default applies) and an emptied section."""
    *parents, last = path.split(".")
    node = raw
    for part in parents:
        if not isinstance(node.get(part), dict):
            if value is None:
                return
            node[part] = {}
        node = node[part]
    if value is None:
        node.pop(last, None)
        if parents and not node:
            raw.pop(parents[0], None)
    else:
        node[last] = value


def shown(spec: FieldSpec, value: Any) -> Any:
    """What the component shows for a recipe value (absent: the default)."""
    if value is None:
        value = spec.default
    if spec.kind == "bool":
        return bool(value)
    if spec.kind == "choice":
        text = "" if value is None else (str(value).lower() if isinstance(value, bool) else str(value))
        return text if text in spec.choices else (spec.choices[0] if spec.choices else text)
    if value is None:
        return ""
    return value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def typed(spec: FieldSpec, shown_value: Any) -> Any:
    """The recipe value of what a component holds; None (absent) for an empty box or the default."""
    if spec.kind == "bool":
        value: Any = bool(shown_value)
    elif shown_value in (None, ""):
        return None
    elif spec.kind == "choice":
        value = {"true": True, "false": False}.get(shown_value, shown_value)
    else:
        try:
            value = yaml.safe_load(str(shown_value))
        except yaml.YAMLError:
            value = str(shown_value)
        if spec.numeric and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass  # validate names the field
    return None if value == spec.default else value


# ---- validation --------------------------------------------------------------------------------------
def check(text: str, base: Path) -> tuple[Any, list[str]]:
    """(the recipe or None, its problems as 'field.path: message'), as `hfadapt validate` finds them.
    Relative paths are resolved against `base` (the folder of the recipe file it came from)."""
    from hfadapt.core.recipe import Recipe
    from hfadapt.publishing.loading import load_recipe  # noqa: F401  (registers every task's recipe model)

    try:
        raw = parse(text)
        raw.setdefault("name", "recipe")
        return Recipe.from_dict(raw, base=base), []
    except HfadaptError as e:
        return None, [m.strip() for m in str(e).split("; ") if m.strip()]


def place(messages: list[str], paths: list[str]) -> dict[str, list[str]]:
    """Each message under the most specific field path it opens with; else under its section, else ""."""
    out: dict[str, list[str]] = {}
    for message in messages:
        named = re.match(r"[\w.]*", message).group(0)
        spot = max((p for p in paths if named == p or named.startswith(p + ".")), key=len, default=None)
        if spot is None:
            section = named.split(".")[0]
            spot = section if section in SECTIONS else ""
        out.setdefault(spot, []).append(message)
    return out
