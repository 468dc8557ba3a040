"""Raw datasets from the Hub or local files, split into train / validation (/ test)."""

from __future__ import annotations

import csv
import math
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from hfadapt.core.errors import HfadaptError, first_line

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict

    from hfadapt.core.recipe import DataSection, Recipe
    from hfadapt.tasks.base import Task

    Split = Dataset | IterableDataset

ROW_COLUMN = "__hfadapt_row__"  # original row numbers, for error messages after a split is carved off
BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


@dataclass
class RawSplits:
    train: "Split"
    validation: "Dataset | None"
    test: "Dataset | None"


def load_raw(recipe: "Recipe", task: "Task") -> RawSplits:
    d = recipe.data
    ds = _load(d)
    if d.train_split not in ds:
        raise HfadaptError(f"data.train_split: no split '{d.train_split}' in {_source(d)}; available: {', '.join(ds)}")
    if d.streaming:
        return _streamed_splits(ds, recipe, task)
    train = ds[d.train_split]
    validation = None
    if d.validation_split is not None:
        if d.validation_split in ds:
            validation = ds[d.validation_split]
        else:
            # datasets keeps floor((1 - validation_size) * rows) for training: none from too few rows.
            if math.floor((1 - d.validation_size) * len(train)) < 1:
                raise HfadaptError(
                    f"data.validation_size: {len(train)} row(s) in the train split of {_source(d)} are too few to hold out "
                    f"{d.validation_size:g} of them for validation and keep any for training; add data, give "
                    "data.validation_files, or set data.validation_split=null"
                )
            # Errors must name the row of the file, not of the shuffled split.
            train = train.add_column(ROW_COLUMN, list(range(len(train))))
            parts = train.train_test_split(test_size=d.validation_size, seed=d.split_seed)
            train, validation = parts["train"], parts["test"]
    test = None
    test_split = d.test_split or ("test" if d.test_files else None)
    if test_split is not None:
        if test_split not in ds:
            raise HfadaptError(f"data.test_split: no split '{test_split}' in {_source(d)}; available: {', '.join(ds)}")
        test = ds[test_split]
    if d.max_train_samples is not None:
        train = train.select(range(min(d.max_train_samples, len(train))))
    if d.max_eval_samples is not None:
        if validation is not None:
            validation = validation.select(range(min(d.max_eval_samples, len(validation))))
        if test is not None:
            test = test.select(range(min(d.max_eval_samples, len(test))))
    check_columns(train, task.columns(recipe), "train", d)
    if validation is not None:
        check_columns(validation, task.columns(recipe), "validation", d)
    if test is not None:
        check_columns(test, task.columns(recipe), "test", d)
    if len(train) == 0:
        raise HfadaptError(f"data: the train split of {_source(d)} is empty")
    return RawSplits(train, validation, test)


def _streamed_splits(ds: "IterableDatasetDict", recipe: "Recipe", task: "Task") -> RawSplits:
    """data.streaming: the train split stays a `datasets.IterableDataset`, read as training goes;
    evaluation splits are small and materialised (map-style), so they are scored exactly as usual."""
    import datasets

    d = recipe.data
    train = ds[d.train_split]
    if not is_streamed(train):  # a loader without a streaming mode (audio folders): stream the loaded split
        train = train.to_iterable_dataset()
    if train.features is None:
        # Several files (or some Hub loaders) leave the features to the first example read;
        # the columns must be known to check them and to drop them after preprocessing.
        train = train._resolve_features()
    check_columns(train, task.columns(recipe), "train", d)
    # Row numbers in the file, for error messages, before any example is held out.
    if train.features is not None:
        features = datasets.Features({**train.features, ROW_COLUMN: datasets.Value("int64")})
        train = train.map(lambda _, i: {ROW_COLUMN: i}, with_indices=True, features=features)

    def materialise(stream: "IterableDataset", n: int | None) -> "Dataset | None":
        rows = list(stream.take(n) if n is not None else stream)
        return datasets.Dataset.from_list(rows, features=stream.features) if rows else None

    validation = None
    if d.validation_split is not None:
        if d.validation_split in ds:
            validation = materialise(ds[d.validation_split], d.max_eval_samples)
        elif d.max_eval_samples is not None:
            validation = materialise(train, d.max_eval_samples)  # the first examples, held out
            train = train.skip(d.max_eval_samples)
        else:
            raise HfadaptError(
                f"data.validation_split: the stream {_source(d)} has no '{d.validation_split}' split; set data.max_eval_samples "
                "to hold out that many of the first training examples, or data.validation_split=null for no evaluation"
            )
    test = None
    test_split = d.test_split or ("test" if d.test_files else None)
    if test_split is not None:
        if test_split not in ds:
            raise HfadaptError(f"data.test_split: no split '{test_split}' in {_source(d)}; available: {', '.join(ds)}")
        test = materialise(ds[test_split], d.max_eval_samples)
    if d.max_train_samples is not None:
        train = train.take(d.max_train_samples)
    for split, part in (("validation", validation), ("test", test)):
        if part is not None:
            check_columns(part, task.columns(recipe), split, d)
    return RawSplits(train, validation, test)


def is_streamed(ds: "Split") -> bool:
    """A `datasets.IterableDataset` (data.streaming): no length, no random access."""
    import datasets

    return isinstance(ds, datasets.IterableDataset)


def map_split(ds: "Split", fn: Callable[..., dict], desc: str, num_proc: int | None = None, **kwargs: Any) -> "Split":
    """`ds.map(fn, ...)` for a materialised split (cached, with a progress bar and worker processes)
    or a streamed one (lazy: applied as examples are read, which takes neither `desc` nor `num_proc`)."""
    if is_streamed(ds):
        return ds.map(fn, **kwargs)
    return ds.map(fn, desc=desc, num_proc=num_proc, **kwargs)


def check_columns(ds: "Split", needed: dict[str, str], split: str, d: "DataSection") -> None:
    """`needed` maps column names to the recipe fields that name them."""
    for col, field in needed.items():
        if col not in ds.column_names:
            raise HfadaptError(
                f"{field}: column '{col}' not in the {split} split of {_source(d)}; columns: {', '.join(user_columns(ds))}"
            )


def user_columns(ds: "Split") -> list[str]:
    """The dataset's columns as the user wrote them (without hfadapt's internal row column)."""
    return [c for c in ds.column_names if c != ROW_COLUMN]


# ---- rows in messages: "line N of FILE" ---------------------------------------------------------
def split_files(d: "DataSection", split: str) -> list[str] | None:
    """The local files whose rows a split's row index counts, or None for a Hub/folder dataset.

    A validation split carved off the train files keeps the train files' row numbers (ROW_COLUMN).
    """
    if not getattr(d, "train_files", None):
        return None
    if split == "train":
        return list(d.train_files)
    if split == "validation":
        return list(d.validation_files) if d.validation_files else list(d.train_files)
    if split == "test":
        return list(d.test_files) if d.test_files else None
    return None


def row_location(split: str, row: int, d: "DataSection") -> str:
    """Where 0-based row `row` of a split ('train', 'validation', 'test') is in the user's data:
    "line N of FILE" (CSV/TSV with a header: row i is line i+2; JSON Lines: line i+1), "record N of FILE"
    (a JSON array), "row N of FILE" (parquet), or "row i of the SPLIT split of DATASET" for a Hub dataset.

    `d` is the recipe's data section. Never fails: unknown sources fall back to "SPLIT row i".
    """
    fallback = f"{split} row {row}"
    if d is None:
        return fallback
    try:
        files = split_files(d, split)
        if files is None:
            if getattr(d, "dataset", None):
                return f"row {row} (0-based) of the {split} split of {d.dataset}"
            return fallback
        left = row
        for f in files:
            kind, positions = _record_positions(str(Path(f).resolve()), Path(f).stat().st_mtime_ns)
            if left < len(positions):
                return f"{kind} {positions[left]} of {f}"
            left -= len(positions)
    except Exception:  # noqa: BLE001 - a message helper must never hide the error it describes
        pass
    return fallback


@lru_cache(maxsize=32)
def _record_positions(path: str, mtime_ns: int) -> tuple[str, list[int]]:
    """("line" | "record" | "row", 1-based position of every data record of the file)."""
    suffix = Path(path).suffix.lower()
    if suffix in (".csv", ".tsv"):
        lines = []
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh, delimiter="\t" if suffix == ".tsv" else ",")
            start, header_seen = 1, False
            for record in reader:
                if record and any(cell.strip() for cell in record):  # pandas skips blank lines
                    if header_seen:
                        lines.append(start)
                    header_seen = True
                start = reader.line_num + 1
        return "line", lines
    if suffix in (".json", ".jsonl"):
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        if text.lstrip().startswith("["):
            return "record", list(range(1, len(json.loads(text)) + 1))
        return "line", [i for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return "row", list(range(1, pq.ParquetFile(path).metadata.num_rows + 1))
    return "row", []


def _source(d: "DataSection") -> str:
    return d.dataset if d.dataset else ", ".join(d.train_files or [])


def _load(d: "DataSection") -> "DatasetDict | IterableDatasetDict":
    import datasets

    try:
        if d.train_files:
            files = {"train": _existing(d.train_files, "data.train_files")}
            if d.validation_files:
                files[d.validation_split or "validation"] = _existing(d.validation_files, "data.validation_files")
            if d.test_files:
                files[d.test_split or "test"] = _existing(d.test_files, "data.test_files")
            suffixes = {Path(f).suffix.lower() for fs in files.values() for f in fs}
            builders = {BUILDERS.get(s) for s in suffixes}
            if None in builders or len(builders) != 1:
                raise HfadaptError(
                    f"data.train_files: can't mix or read {', '.join(sorted(suffixes))}; use one of .csv, .tsv, .json, .jsonl, .parquet"
                )
            builder = builders.pop()
            kwargs = {"delimiter": "\t"} if suffixes == {".tsv"} else {}
            return datasets.load_dataset(builder, data_files=files, streaming=d.streaming, **kwargs)
        path = Path(d.dataset)
        if path.is_dir() and not (path / "dataset_infos.json").exists() and _looks_like_image_folder(path):
            # drop_labels=False: with one class folder datasets would drop the label column, hiding that a classifier
            # needs two classes (refused with the labels named); a metadata file brings its own columns
            labels = {} if any(path.rglob("metadata.*")) else {"drop_labels": False}
            return datasets.load_dataset("imagefolder", data_dir=str(path), streaming=d.streaming, **labels)
        if path.is_dir() and not (path / "dataset_infos.json").exists() and _looks_like_audio_folder(path):
            return _load_audio_folder(path)
        if d.dataset.startswith(("./", "../", "/")) and not path.exists():
            raise HfadaptError(f"data.dataset: folder not found: {d.dataset}")
        return datasets.load_dataset(d.dataset, d.config_name, revision=d.revision, streaming=d.streaming)
    except HfadaptError:
        raise
    except Exception as e:  # noqa: BLE001 - datasets raises many types; the user needs one line
        problem = _diagnose_files(d) if d.train_files else None
        if problem:
            raise HfadaptError(problem) from e
        cause = root_cause(e)
        field = "data.train_files" if d.train_files else "data.dataset"
        raise HfadaptError(f"{field}: cannot load {_source(d)}: {type(cause).__name__}: {first_line(cause)}") from e


def root_cause(e: BaseException) -> BaseException:
    """The first exception in the __cause__/__context__ chain that is not datasets' generic wrapper
    (DatasetGenerationError hides the pandas / pyarrow / UnicodeDecodeError / json error)."""
    seen: set[int] = set()
    chain = []
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for exc in chain:
        if not type(exc).__module__.startswith("datasets"):
            return exc
    return chain[-1]


def _diagnose_files(d: "DataSection") -> str | None:
    """Read the local data files directly to say which file, which line and why loading failed."""
    groups = [("data.train_files", d.train_files), ("data.validation_files", d.validation_files), ("data.test_files", d.test_files)]
    for field, files in groups:
        for f in files or []:
            try:
                problem = _diagnose_file(Path(f))
            except Exception:  # noqa: BLE001 - the diagnosis is best effort; the caller falls back
                problem = None
            if problem:
                return f"{field}: {problem}"
    return None


def _diagnose_file(path: Path) -> str | None:
    data = path.read_bytes()
    suffix = path.suffix.lower()
    if not data.strip():
        return f"{path} is empty"
    if suffix == ".parquet":
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        return f"line {line} of {path} is not UTF-8 (byte 0x{data[e.start]:02x}); save the file as UTF-8"
    if suffix in (".csv", ".tsv"):
        reader = csv.reader(text.splitlines(keepends=True), delimiter="\t" if suffix == ".tsv" else ",")
        header: list[str] | None = None
        start, rows = 1, 0
        try:
            for record in reader:
                if record and any(cell.strip() for cell in record):
                    if header is None:
                        header = record
                    else:
                        rows += 1
                        if len(record) > len(header):
                            return f"line {start} of {path} has {len(record)} fields, the header has {len(header)}"
                start = reader.line_num + 1
        except csv.Error as e:
            return f"line {reader.line_num} of {path}: {e}"
        if rows == 0:
            return f"{path} has a header but no data rows"
        return None
    if suffix in (".json", ".jsonl"):
        if text.lstrip().startswith("["):
            try:
                json.loads(text)
            except json.JSONDecodeError as e:
                return f"line {e.lineno} of {path} is not valid JSON: {e.msg} (column {e.colno})"
            return None
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                return f"line {n} of {path} is not valid JSON: {e.msg} (column {e.colno})"
            if not isinstance(value, dict):
                return f"line {n} of {path} is not a JSON object (JSON Lines needs one object per line)"
    return None


def _existing(files: list[str], field: str) -> list[str]:
    for f in files:
        if not Path(f).is_file():
            raise HfadaptError(f"{field}: file not found: {f}")
    return files


AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".aiff", ".aif", ".au", ".mp3"}


def _load_audio_folder(path: Path) -> "DatasetDict":
    """A folder of audio files -> {"audio": path, "label": ClassLabel of the parent folder's name} per split.

    Built here rather than with datasets' audiofolder builder, which needs torchcodec to encode audio.
    Sub-folders train/, validation/ (valid, dev) and test/ are splits; otherwise the whole folder is train.
    """
    import datasets

    names = {"train": "train", "validation": "validation", "valid": "validation", "dev": "validation", "test": "test"}
    splits = {names[p.name]: p for p in sorted(path.iterdir()) if p.is_dir() and p.name in names}
    if "train" not in splits:
        splits = {"train": path}
    files = {
        split: sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
        for split, folder in splits.items()
    }
    classes = sorted({f.parent.name for fs in files.values() for f in fs})
    features = datasets.Features({"audio": datasets.Value("string"), "label": datasets.ClassLabel(names=classes)})
    return datasets.DatasetDict({
        split: datasets.Dataset.from_dict(
            {"audio": [str(f) for f in fs], "label": [classes.index(f.parent.name) for f in fs]}, features=features
        )
        for split, fs in files.items()
    })


def _looks_like_audio_folder(path: Path) -> bool:
    """A folder of audio files (one sub-folder per class): loaded with datasets' audiofolder builder."""
    return _holds_files(path, AUDIO_SUFFIXES)


def _holds_files(path: Path, suffixes: set[str] | frozenset[str]) -> bool:
    """Whether one of the first 200 entries below `path` has one of `suffixes` (a cheap look, not a scan)."""
    for i, p in enumerate(path.rglob("*")):
        if p.suffix.lower() in suffixes:
            return True
        if i > 200:
            break
    return False


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _looks_like_image_folder(path: Path) -> bool:
    return _holds_files(path, IMAGE_SUFFIXES)
