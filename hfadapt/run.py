"""A finished (or running) run directory: what is in it and how to read it back."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

from .errors import HfadaptError

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.json"
STATE_FILE = "trainer_state.json"  # the run's, and each checkpoint's: its presence marks a checkpoint complete
INFO_FILE = "run_info.json"
TRAINABLE_FILE = "trainable.safetensors"  # trainable weights only (the adapter), in best/ and checkpoints


class RunDir:
    """Layout:

    recipe.yaml          the resolved recipe (overrides applied, paths absolute)
    adapter/             peft adapter + tokenizer/image processor + config.json with id2label
    model/               instead of adapter/ for adapter.method full or freeze
    base_model/          only for model.init=config: the randomly initialised base, so the adapter reloads
    metrics.json         final evaluation
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
        from .adapters import is_peft

        if (self.path / "adapter_config.json").is_file() or (self.path / "config.json").is_file():
            return self.path  # a pulled Hub repo: the adapter sits at the root, where plain peft looks
        return self.saved_model_dir(is_peft(self.recipe.adapter.method))

    # ---- reading ---------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        run = cls(path)
        if not run.path.is_dir():
            raise HfadaptError(f"{path}: run directory not found")
        if not run.recipe_file.is_file():
            raise HfadaptError(f"{path}: not an hfadapt run (no {RECIPE_FILE})")
        if not run.model_dir.is_dir():
            raise HfadaptError(f"{path}: the run has not finished (no {run.model_dir.name}/); resume it with `hfadapt train {run.recipe_file} --resume`")
        return run

    @cached_property
    def recipe(self) -> Any:
        import yaml

        from .recipe import Recipe

        recipe = Recipe.from_dict(yaml.safe_load(self.recipe_file.read_text()), source=None)
        if self.from_hub:
            recipe.model.trust_remote_code = False
        return recipe

    @cached_property
    def task(self) -> Any:
        from .tasks import TASKS

        return TASKS.get(self.recipe.task, field="task")

    @property
    def metrics(self) -> dict[str, float]:
        return json.loads(self.metrics_file.read_text()) if self.metrics_file.is_file() else {}

    @property
    def info(self) -> dict[str, Any]:
        return json.loads(self.info_file.read_text()) if self.info_file.is_file() else {}

    def is_started(self) -> bool:
        return self.path.exists() and any(self.path.iterdir())
