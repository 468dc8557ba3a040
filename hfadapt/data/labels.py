"""Label vocabularies for classification tasks: from the recipe, a ClassLabel feature, strings or ints."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from hfadapt.core.errors import HfadaptError

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from hfadapt.core.recipe import DataSection
    from hfadapt.data.sources import Split

PROBLEM_TYPES = {
    "single_label": "single_label_classification",
    "multi_label": "multi_label_classification",
    "regression": "regression",
}


@dataclass(frozen=True)
class LabelInfo:
    """Label names in id order (empty for regression) and how labels are scored."""

    names: tuple[str, ...]
    problem_type: str  # recipe spelling: single_label | multi_label | regression

    @property
    def num_labels(self) -> int:
        return 1 if self.problem_type == "regression" else len(self.names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}

    @property
    def hf_problem_type(self) -> str:
        return PROBLEM_TYPES[self.problem_type]

    @classmethod
    def from_model_config(cls, config: PretrainedConfig) -> "LabelInfo":
        problem = {v: k for k, v in PROBLEM_TYPES.items()}.get(config.problem_type or "", "single_label")
        names = () if problem == "regression" else tuple(config.id2label[i] for i in range(config.num_labels))
        return cls(names, problem)


def infer_labels(
    dataset: Split, column: str, given: Sequence[str] | None, problem_type: str, source: str, data: DataSection | None = None,
    split: str = "train",
) -> LabelInfo:
    """Decide the label names from the recipe, the column's ClassLabel feature, or its values.

    A CSV column of ints with an empty cell is read as floats (1.0, NaN): whole floats count as ints;
    empty cells are left to encode_label, which names their line.
    """
    if problem_type == "regression":
        return LabelInfo((), problem_type)
    files = ", ".join(getattr(data, "train_files", None) or []) or getattr(data, "dataset", None)
    where = f" of the {split} split of {files}" if files else ""
    if given:
        if len(set(given)) != len(given):
            raise HfadaptError("data.labels: label names must be unique")
        if problem_type == "single_label":
            require_two_labels(given, "data.labels", "given")
        return LabelInfo(tuple(given), problem_type)
    feature = dataset.features[column]
    inner = getattr(feature, "feature", None) if problem_type == "multi_label" else feature
    if inner is not None and hasattr(inner, "names"):  # datasets.ClassLabel (an image/audio folder: its class folders)
        if problem_type == "single_label":
            require_two_labels(inner.names, source, f"found in column '{column}'{where}")
        return LabelInfo(tuple(inner.names), problem_type)
    from hfadapt.data.sources import ROW_COLUMN, is_streamed, row_location

    if is_streamed(dataset):
        raise HfadaptError(
            f"data.labels: the labels of a streamed dataset can't be read up front and {source} has no ClassLabel feature; "
            "list the label names in data.labels (in id order)"
        )

    rows = dataset[ROW_COLUMN] if ROW_COLUMN in getattr(dataset, "column_names", ()) else None
    values: dict[Any, int] = {}  # label -> first row holding it
    for i, v in enumerate(dataset[column]):
        items = v if problem_type == "multi_label" and isinstance(v, (list, tuple)) else [v]
        for item in items:
            if is_missing(item):
                continue
            item = _whole(item)
            values.setdefault(item, rows[i] if rows is not None else i)
    if not values:
        raise HfadaptError(f"{source}: column '{column}'{where} holds no labels (every cell is empty)")
    if problem_type == "single_label":
        require_two_labels([str(v) for v in values], source, f"found in column '{column}'{where}")
    if all(isinstance(v, str) for v in values):
        return LabelInfo(tuple(sorted(values)), problem_type)
    if all(_is_int(v) for v in values):
        if min(values) < 0:
            low = min(values)
            raise HfadaptError(
                f"{source}: column '{column}' has negative label {low} at {row_location(split, values[low], data)}; give data.labels"
            )
        return LabelInfo(tuple(str(i) for i in range(max(values) + 1)), problem_type)
    first = next(iter(values))
    odd = next((v for v in values if type(v) is not type(first) or not isinstance(v, (str, int))), first)
    raise HfadaptError(
        f"{source}: column '{column}' mixes label types: {odd!r} at {row_location(split, values[odd], data)}, "
        f"{first!r} at {row_location(split, values[first], data)}; use all strings or all whole numbers"
    )


def require_two_labels(names: Sequence[str], source: str, how: str) -> None:
    """A classifier with one class learns nothing (loss 0, accuracy 1.0): refused.

    Multi-label classification is exempt: there each label is its own yes/no, so one label is a binary classifier.
    """
    if len(set(names)) < 2:
        found = ", ".join(repr(n) for n in sorted(set(names))) or "none"
        raise HfadaptError(
            f"{source}: a classifier needs at least 2 labels; {how}: {len(set(names))} ({found}); "
            "add data of another class (a data folder needs one subfolder per class)"
        )


def encode_label(value: Any, info: LabelInfo, column: str, row: int, split: str, data: DataSection | None = None) -> int | float | list[float]:
    """One raw label -> the model's target (class id, multi-hot vector, or float)."""
    where = _Where(column, row, split, data)  # spelled out only in an error: finding the line reads the file
    if is_missing(value):
        raise HfadaptError(f"{where}: label is missing (empty cell)")
    if info.problem_type == "regression":
        try:
            return float(value)
        except (TypeError, ValueError):
            raise HfadaptError(f"{where}: regression label {value!r} is not a number") from None
    if info.problem_type == "multi_label":
        items = value if isinstance(value, (list, tuple)) else [value]
        hot = [0.0] * len(info.names)
        for item in items:
            if is_missing(item):
                raise HfadaptError(f"{where}: a label in {value!r} is missing")
            hot[_class_id(item, info, where)] = 1.0
        return hot
    return _class_id(value, info, where)


def is_missing(value: Any) -> bool:
    """An empty cell: None, or the NaN that CSV reading puts into a column of numbers."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _whole(value: Any) -> Any:
    """1.0 -> 1: an int column with an empty cell is read as floats."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Where:
    """"data.label_column 'COL', line N of FILE", computed when an error message formats it."""

    __slots__ = ("column", "row", "split", "data")

    def __init__(self, column: str, row: int, split: str, data: DataSection | None) -> None:
        self.column, self.row, self.split, self.data = column, row, split, data

    def __str__(self) -> str:
        from hfadapt.data.sources import row_location

        return f"data.label_column '{self.column}', {row_location(self.split, self.row, self.data)}"

    __format__ = lambda self, spec: format(str(self), spec)  # noqa: E731


def _class_id(value: Any, info: LabelInfo, where: _Where) -> int:
    if isinstance(value, str):
        try:
            return info.label2id[value]
        except KeyError:
            raise HfadaptError(f"{where}: unknown label {value!r}; known: {', '.join(info.names)}") from None
    value = _whole(value)
    if not _is_int(value):
        raise HfadaptError(f"{where}: label {value!r} is neither a class name nor an int")
    if not 0 <= value < len(info.names):
        raise HfadaptError(f"{where}: label {value} out of range [0, {len(info.names) - 1}]")
    return value
