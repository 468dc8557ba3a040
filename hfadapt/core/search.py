"""The `search` section of a recipe (or a search file given to `hfadapt tune`): which recipe fields
`hfadapt tune` samples and how the study runs.

Ground floor like the recipe schema: no torch, no optuna, so `hfadapt validate` checks a search
without importing either. The recipe model holds it (`Recipe.search`) and checks its field paths
against itself (`space_problems`); the task's checks refuse an objective metric it does not report.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

KINDS = ("log_uniform", "uniform", "int", "choice")
# Fields a search must not change: what the study is about, and where its trials live.
FIXED_SECTIONS = ("name", "task", "output", "hub", "search")
SCALARS = (str, int, float, bool, type(None))


class Distribution(BaseModel):
    """One searched field: exactly one of `log_uniform: [low, high]`, `uniform: [low, high]`,
    `int: [low, high]` or `int: [low, high, step]`, `choice: [a, b, ...]`; `when: {field: value}`
    samples it only when the other searched fields (listed before it) have those values."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    log_uniform: list[float] | None = None
    uniform: list[float] | None = None
    int_: list[int] | None = Field(None, alias="int")
    choice: list[Any] | None = None
    when: dict[str, Any] | None = Field(None, description="field -> value (or list of values) under which this field is sampled")

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError(f"expected a distribution such as {{choice: [a, b]}} or {{log_uniform: [low, high]}}, one of {', '.join(KINDS)}")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> "Distribution":
        given = [k for k in KINDS if getattr(self, _attr(k)) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(KINDS)} (got {', '.join(given) or 'none'})")
        kind = given[0]
        values = getattr(self, _attr(kind))
        if kind == "choice":
            if not values:
                raise ValueError("choice: the list is empty; give at least one value")
            return self
        wanted = "[low, high] or [low, high, step]" if kind == "int" else "[low, high]"
        if len(values) not in ((2, 3) if kind == "int" else (2,)):
            raise ValueError(f"{kind}: expected {wanted}, got {values}")
        low, high = values[0], values[1]
        if low > high:
            raise ValueError(f"{kind}: low {low} > high {high}")
        if kind == "log_uniform" and low <= 0:
            raise ValueError(f"log_uniform: low must be > 0, got {low}")
        if kind == "int" and len(values) == 3 and values[2] <= 0:
            raise ValueError(f"int: step must be > 0, got {values[2]}")
        return self

    @model_serializer
    def _dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {self.kind: getattr(self, _attr(self.kind))}
        if self.when:
            out["when"] = self.when
        return out

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, _attr(k)) is not None)

    def grid(self) -> list[Any] | None:
        """The values a grid search walks: a choice's, or an int range's; None for a float range."""
        if self.choice is not None:
            return list(self.choice)
        if self.int_ is not None:
            low, high, *step = self.int_
            return list(range(low, high + 1, step[0] if step else 1))
        return None

    def active(self, sampled: dict[str, Any]) -> bool:
        """Whether the field is sampled, given what was sampled before it."""
        for key, wanted in (self.when or {}).items():
            options = wanted if isinstance(wanted, list) else [wanted]
            if key not in sampled or sampled[key] not in options:
                return False
        return True


def _attr(kind: str) -> str:
    return "int_" if kind == "int" else kind


def encode_choice(value: Any) -> Any:
    """Optuna's categorical values are scalars; a list or mapping (target_modules) travels as JSON."""
    return value if isinstance(value, SCALARS) else json.dumps(value)


def decode_choice(dist: Distribution, value: Any) -> Any:
    for option in dist.choice or []:
        if encode_choice(option) == value:
            return option
    return value


class Objective(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: str | None = Field(None, description="evaluation result optimised; default eval.best_metric (or the task's)")
    direction: Literal["maximize", "minimize"] | None = Field(None, description="default from eval.greater_is_better or the metric")


class Pruner(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["median", "hyperband", "none"] = "median"
    startup_trials: int = Field(5, ge=0, description="median: trials that finish before any is pruned")
    warmup_steps: int = Field(0, ge=0, description="median: optimizer steps before a trial may be pruned")
    divergence: float | None = Field(
        10.0, gt=1, description="any pruner: a trial whose training loss since the last evaluation averages more than "
        "this many times its first step's (or is not finite) is pruned at that evaluation; null: never"
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value


class SearchSection(BaseModel):
    """`hfadapt tune`: the space, the objective and how the study runs."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    space: dict[str, Distribution] = Field(description="dotted recipe field -> distribution")
    objective: Objective = Field(default_factory=Objective)
    n_trials: int = Field(20, gt=0, description="trials that finish or are pruned (killed ones are retried)")
    timeout: float | None = Field(None, gt=0, description="seconds after which no new trial starts")
    sampler: Literal["tpe", "random", "grid", "cmaes"] = "tpe"
    seed: int | None = Field(None, description="sampler seed; default train.seed")
    pruner: Pruner = Field(default_factory=Pruner)
    storage: str | None = Field(None, description="Optuna storage URL; default sqlite:///<output dir>/study.db")
    device_memory: str | None = Field(
        None, description="memory per device a trial may plan for ('24GiB'); default the GPU's, or the machine's RAM on CPU"
    )
    # A false alarm costs a whole trial (it is run again while the first run's result is thrown away);
    # a late one only delays the retry while the other workers go on. So: beats every minute, and a
    # trial is given up after 5 minutes of silence (a heartbeat may wait up to 2 minutes for a busy
    # SQLite file's lock).
    heartbeat_interval: int | None = Field(
        60, gt=0, description="seconds between a running trial's heartbeats in the storage; null: no heartbeat "
        "(a dead worker's trial is then only retried by a rerun on its machine)"
    )
    grace_period: int = Field(
        300, gt=0, description="seconds without a heartbeat after which any worker of the study fails a running trial and runs its values again"
    )

    @field_validator("device_memory", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> Any:
        if value is None:
            return None
        parse_bytes(str(value))
        return str(value)

    @model_validator(mode="after")
    def _check(self) -> "SearchSection":
        if not self.space:
            raise ValueError("search.space: empty; name at least one field with a distribution")
        if self.sampler == "grid":
            floats = [k for k, d in self.space.items() if d.grid() is None]
            if floats:
                raise ValueError(f"search.sampler: grid walks choice and int fields only; {', '.join(floats)} is a float range")
        if self.heartbeat_interval is not None and self.grace_period <= self.heartbeat_interval:
            raise ValueError(
                f"search.grace_period: {self.grace_period} s must be longer than search.heartbeat_interval ({self.heartbeat_interval} s), "
                "or every running trial would be failed between two heartbeats"
            )
        keys = list(self.space)
        for i, (key, dist) in enumerate(self.space.items()):
            for other in dist.when or {}:
                if other not in keys[:i]:
                    raise ValueError(f"search.space.{key}.when: '{other}' must be a searched field listed before {key}")
        return self

    def grid_size(self) -> int:
        return math.prod(len(d.grid() or []) for d in self.space.values())


UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in UNITS:
        raise ValueError(f"expected a size such as 24GiB or 512MiB, got '{text}'")
    return int(float(m.group(1)) * UNITS[m.group(2).lower()])


def space_problems(search: SearchSection, recipe_model: type[BaseModel], adapter_sections: dict[str, type[BaseModel]], method: str) -> list[str]:
    """Searched fields that are no field of the recipe ('search.space.X: ...'). Adapter fields are
    looked up in the sections of the methods the search may pick (adapter.method's choices)."""
    problems = []
    methods = [method]
    if "adapter.method" in search.space:
        methods = [str(m) for m in search.space["adapter.method"].grid() or []]
        unknown = [m for m in methods if m not in adapter_sections]
        if unknown:
            problems.append(f"search.space.adapter.method: unknown adapter method '{unknown[0]}'; known: {', '.join(adapter_sections)}")
    for key in search.space:
        parts = key.split(".")
        if parts[0] in FIXED_SECTIONS:
            problems.append(f"search.space.{key}: {parts[0]} is not searched (the study fixes it)")
            continue
        if len(parts) < 2:
            problems.append(f"search.space.{key}: not a field; name one as section.field (train.learning_rate)")
            continue
        if parts[0] == "adapter":
            models = [adapter_sections[m] for m in methods if m in adapter_sections]
        else:
            section = recipe_model.model_fields.get(parts[0])
            models = [section.annotation] if section is not None else []
        if not any(_has_path(m, parts[1:]) for m in models):
            problems.append(f"search.space.{key}: unknown field (no {key} in a {recipe_model.__name__.removesuffix('Recipe') or 'recipe'} recipe)")
    return problems


def _has_path(model: Any, parts: list[str]) -> bool:
    for part in parts:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return False
        model = field.annotation
    return True


def read_search_file(file: Any) -> dict[str, Any]:
    """A search file's mapping: the section itself, or a document holding it under `search:`."""
    import yaml

    from hfadapt.core.errors import HfadaptError

    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as e:
        raise HfadaptError(f"{file}: cannot read the search file: {e.strerror or e}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise HfadaptError(f"{file}: not valid YAML: {str(e).splitlines()[0]}") from None
    if isinstance(raw, dict) and set(raw) == {"search"}:
        raw = raw["search"]
    if not isinstance(raw, dict):
        raise HfadaptError(f"{file}: a search file is a mapping with a `space` (and n_trials, sampler, ...)")
    return raw
