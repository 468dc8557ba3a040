"""A finished (or running) run directory: what is in it and how to read it back."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from hfadapt.core.errors import HfadaptError
from hfadapt.rundir.runinfo import RunInfo

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.json"
STATE_FILE = "trainer_state.json"  # the run's, and each checkpoint's: its presence marks a checkpoint complete
INFO_FILE = "run_info.json"
TRAINABLE_FILE = "trainable.safetensors"  # trainable weights only (the adapter), in best/ and checkpoints


@dataclass
class RunMetrics:
    """metrics.json: the final figures of a run by split. On disk (and in TrainResult.metrics) they are
    flat "split/name" keys, as trackers log them: train/loss, eval/accuracy, test/f1, best/step."""

    train: dict[str, float] = field(default_factory=dict)  # loss (last step), steps
    eval: dict[str, float] = field(default_factory=dict)  # validation results; "loss" and "samples" included
    test: dict[str, float] = field(default_factory=dict)
    best_step: int | None = None
    perf: dict[str, float] = field(default_factory=dict)  # time, rates, time shares, peak memory (throughput.figures)

    def to_json(self) -> dict[str, float]:
        flat: dict[str, float] = {}
        for split in ("train", "eval", "test", "perf"):
            flat.update({f"{split}/{k}": v for k, v in getattr(self, split).items()})
        if self.best_step is not None:
            flat["best/step"] = self.best_step
        return flat

    @classmethod
    def from_json(cls, flat: dict[str, Any]) -> "RunMetrics":
        out = cls()
        for key, value in flat.items():
            split, _, name = key.partition("/")
            if split in ("train", "eval", "test", "perf"):
                getattr(out, split)[name] = value
            elif key == "best/step":
                out.best_step = int(value)
        return out


class RunDir:
    """Layout:

    recipe.yaml          the resolved recipe (overrides applied, paths absolute)
    adapter/             peft adapter + tokenizer/image processor + config.json with id2label
    model/               instead of adapter/ for adapter.method full or freeze
    base_model/          only for model.init=config: the randomly initialised base, so the adapter reloads
    metrics.json         final evaluation; perf/* speed and memory figures (throughput.py)
    eval_predictions.jsonl  per-example results of the final validation (predictions.py), for reports
    status.json          running / finished / failed, for `hfadapt runs` (status.py)
    trainer_state.json   per-step losses and log history
    checkpoints/         checkpoint-N folders for --resume
    best/                trainable weights of the best evaluation so far (+ best.json: its step and value)
    logs/                tracker output (TensorBoard)
    generations.jsonl    causal-lm: generation.prompts completed at each evaluation
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.from_hub = False  # set for a pulled adapter: its recipe may not run remote code

    # ---- layout ---------------------------------------------------------------------------
    @property
    def recipe_file(self) -> Path:
        return self.path / RECIPE_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def state_file(self) -> Path:
        return self.path / STATE_FILE

    @property
    def info_file(self) -> Path:
        return self.path / INFO_FILE

    @property
    def base_model_dir(self) -> Path:
        return self.path / "base_model"

    @property
    def best_dir(self) -> Path:
        return self.path / "best"

    @property
    def best_weights(self) -> Path:
        return self.best_dir / TRAINABLE_FILE

    @property
    def best_info_file(self) -> Path:
        return self.best_dir / "best.json"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    def saved_model_dir(self, peft: bool) -> Path:
        """Where training saves the result: adapter/ for peft methods, model/ for full and freeze."""
        return self.path / ("adapter" if peft else "model")

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def model_dir(self) -> Path:
        from hfadapt.modeling.adapters import is_peft

        if (self.path / "adapter_config.json").is_file() or (self.path / "config.json").is_file():
            return self.path  # a pulled Hub repo: the adapter sits at the root, where plain peft looks
        return self.saved_model_dir(is_peft(self.recipe.adapter.method))

    # ---- reading ---------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, from_hub: bool = False) -> "RunDir":
        run = cls(path)
        run.from_hub = from_hub  # before the recipe is read: a pulled recipe may not run remote code
        if not run.path.is_dir():
            raise HfadaptError(f"{path}: run directory not found")
        if not run.recipe_file.is_file():
            raise HfadaptError(f"{path}: not an hfadapt run (no {RECIPE_FILE})")
        run.recipe  # noqa: B018 - a corrupt recipe.yaml is reported here, naming the file
        if not run.model_dir.is_dir():
            raise HfadaptError(f"{path}: the run has not finished (no {run.model_dir.name}/); resume it with `hfadapt train {run.recipe_file} --resume`")
        run.check_weights()
        return run

    def check_weights(self) -> None:
        """The saved adapter (or model) files must be there; otherwise loading would look for a Hub repo."""
        from hfadapt.modeling.adapters import is_peft

        folder = self.model_dir
        if is_peft(self.recipe.adapter.method):
            config, weights = "adapter_config.json", ("adapter_model.safetensors", "adapter_model.bin")
        else:
            config = "config.json"
            weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
        missing = [config] if not (folder / config).is_file() else []
        if not any((folder / w).is_file() for w in weights):
            missing.append(weights[0])
        if missing:
            raise HfadaptError(
                f"{folder}: the run's saved weights are incomplete (missing {', '.join(missing)}); "
                "restore them or train the run again"
            )

    @cached_property
    def recipe(self) -> Any:
        from hfadapt.core.recipe import Recipe, read_recipe_file, shed_foreign_fields

        raw = shed_foreign_fields(read_recipe_file(self.recipe_file))  # also as an older hfadapt wrote it
        try:
            recipe = Recipe.from_dict(raw, source=None)
        except HfadaptError as e:
            raise HfadaptError(f"{self.recipe_file}: {e}") from None
        if self.from_hub:
            recipe.model.trust_remote_code = False
        return recipe

    @property
    def metrics(self) -> "RunMetrics":
        return RunMetrics.from_json(_read_json(self.metrics_file))

    @property
    def info(self) -> RunInfo:
        return RunInfo.from_json(_read_json(self.info_file))

    def is_started(self) -> bool:
        return self.path.exists() and any(self.path.iterdir())

    def check_output(self) -> None:
        """output.dir must be a folder (or not exist yet) that can be written; checked before any work."""
        if self.path.exists() and not self.path.is_dir():
            raise HfadaptError(f"output.dir: {self.path} is an existing file, not a folder; choose another output.dir")
        parent = self.path
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise HfadaptError(f"output.dir: cannot create {self.path}: {parent} is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise HfadaptError(f"output.dir: cannot write {self.path}: {parent} is not writable")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HfadaptError(f"{path}: not valid JSON ({e}); restore the file or delete it") from None
    if not isinstance(data, dict):
        raise HfadaptError(f"{path}: expected a JSON object")
    return data
