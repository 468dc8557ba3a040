"""Raw datasets from the Hub or local files, split into train / validation (/ test)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import HfadaptError

ROW_COLUMN = "__hfadapt_row__"  # original row numbers, for error messages after a split is carved off
BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


@dataclass
class RawSplits:
    train: Any
    validation: Any | None
    test: Any | None


def load_raw(recipe: Any, task: Any) -> RawSplits:
    d = recipe.data
    ds = _load(d)
    if d.train_split not in ds:
        raise HfadaptError(f"data.train_split: no split '{d.train_split}' in {_source(d)}; available: {', '.join(ds)}")
    train = ds[d.train_split]
    validation = None
    if d.validation_split is not None:
        if d.validation_split in ds:
            validation = ds[d.validation_split]
        else:
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


def check_columns(ds: Any, needed: dict[str, str], split: str, d: Any) -> None:
    """`needed` maps column names to the recipe fields that name them."""
    for col, field in needed.items():
        if col not in ds.column_names:
            raise HfadaptError(
                f"{field}: column '{col}' not in the {split} split of {_source(d)}; columns: {', '.join(ds.column_names)}"
            )


def _source(d: Any) -> str:
    return d.dataset if d.dataset else ", ".join(d.train_files or [])


def _load(d: Any) -> Any:
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
            return datasets.load_dataset(builder, data_files=files, **kwargs)
        path = Path(d.dataset)
        if path.is_dir() and not (path / "dataset_infos.json").exists() and _looks_like_image_folder(path):
            return datasets.load_dataset("imagefolder", data_dir=str(path))
        if d.dataset.startswith(("./", "../", "/")) and not path.exists():
            raise HfadaptError(f"data.dataset: folder not found: {d.dataset}")
        return datasets.load_dataset(d.dataset, d.config_name, revision=d.revision)
    except HfadaptError:
        raise
    except Exception as e:  # noqa: BLE001 - datasets raises many types; the user needs one line
        first = (str(e).strip() or type(e).__name__).splitlines()[0]
        raise HfadaptError(f"data.dataset: cannot load {_source(d)}: {type(e).__name__}: {first}") from e


def _existing(files: list[str], field: str) -> list[str]:
    for f in files:
        if not Path(f).is_file():
            raise HfadaptError(f"{field}: file not found: {f}")
    return files


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _looks_like_image_folder(path: Path) -> bool:
    for i, p in enumerate(path.rglob("*")):
        if p.suffix.lower() in IMAGE_SUFFIXES:
            return True
        if i > 200:
            break
    return False
