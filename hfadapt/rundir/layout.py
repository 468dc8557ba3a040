"""A finished (or running) run directory: what is in it and how to read it back.

The one reader of a run: every file name of a run directory is defined here, and every file is
read back through `RunDir` into a typed value (RunMetrics, RunInfo, RunState, RunStatus, rows).
The on-disk formats are those of earlier releases: a run written by them still loads.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from hfadapt.core.errors import HfadaptError, first_line
from hfadapt.rundir.runinfo import RunInfo

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.json"
STATE_FILE = "trainer_state.json"  # the run's, and each checkpoint's: its presence marks a checkpoint complete
INFO_FILE = "run_info.json"
STATUS_FILE = "status.json"
PREDICTIONS_FILE = "eval_predictions.jsonl"
GENERATIONS_FILE = "generations.jsonl"  # written by causal-lm's evaluation
TRAINABLE_FILE = "trainable.safetensors"  # trainable weights only (the adapter), in best/ and checkpoints
BEST_FILE = "best.json"
LIVE_LOG_FILE = "train_log.jsonl"  # one line per logged step and evaluation, appended as training goes (for watchers: `hfadapt ui`)
ADAPTER_DIR, MODEL_DIR, BASE_MODEL_DIR = "adapter", "model", "base_model"
CHECKPOINTS_DIR, CHECKPOINT_PREFIX = "checkpoints", "checkpoint-"
BEST_DIR, LOGS_DIR = "best", "logs"
# The run files that travel with a pushed adapter (besides the adapter folder's own files), so a pulled
# adapter reports, evaluates and continues like the local run.
RUN_FILES = (RECIPE_FILE, METRICS_FILE, STATE_FILE, INFO_FILE, PREDICTIONS_FILE, GENERATIONS_FILE)
SPLITS = ("train", "eval", "test", "perf")  # the "split/name" prefixes of metrics.json and the log history


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
            if split in SPLITS:
                getattr(out, split)[name] = value
            elif key == "best/step":
                out.best_step = int(value)
        return out

    def split(self, name: str) -> dict[str, Any]:
        """The figures of one split ("train", "eval", "test", "perf"), without the prefix."""
        return dict(getattr(self, name)) if name in SPLITS else {}

    def __bool__(self) -> bool:
        return any(getattr(self, s) for s in SPLITS) or self.best_step is not None


def split_keys(logged: dict[str, Any], split: str) -> dict[str, Any]:
    """The `split/name` entries of one logged dict (a log-history entry), without the prefix."""
    prefix = f"{split}/"
    return {k[len(prefix):]: v for k, v in logged.items() if k.startswith(prefix)}


@dataclass
class EvalRecord:
    """One evaluation during training, from the log history: its step and figures (no "eval/" prefix)."""

    step: int | None
    values: dict[str, Any]


@dataclass
class RunState:
    """trainer_state.json, the run's and each checkpoint's: progress, losses, log history, best step.
    Fields missing in an older file keep their defaults; unknown ones are ignored. Training's
    TrainerState (training/checkpoint.py) is this format plus saving."""

    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches of `epoch` already consumed
    total_steps: int = 0
    losses: list[float] = field(default_factory=list)  # one per optimizer step
    log_history: list[dict[str, Any]] = field(default_factory=list)  # {"step": N, "train/lr": ..., "eval/x": ...}
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    stopped_early: bool = False
    perf: dict[str, Any] = field(default_factory=dict)  # throughput totals up to global_step (throughput.Meter.totals)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunState":
        known = {f.name for f in fields(RunState)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def record_evaluation(self, step: int, results: dict[str, Any]) -> dict[str, Any]:
        """Add one evaluation's figures to the log history (as "eval/name" keys); returns them so keyed,
        for the trackers."""
        logs = {f"eval/{k}": v for k, v in results.items()}
        self.log_history.append({"step": step, **logs})
        return logs

    def evaluations(self) -> list[EvalRecord]:
        """The evaluations during training, in order (entries of the log history with eval/ figures)."""
        return [EvalRecord(h.get("step"), split_keys(h, "eval")) for h in self.log_history if split_keys(h, "eval")]

    def learning_rates(self) -> list[tuple[int, float]]:
        """(step, learning rate) as logged."""
        return [(h["step"], h["train/lr"]) for h in self.log_history if "train/lr" in h and "step" in h]


@dataclass
class RunStatus:
    """status.json: what a run is doing (written by rundir/status.py). Unknown fields are ignored."""

    state: str | None = None  # running / finished / failed / interrupted
    updated: str | None = None
    pid: int | None = None
    host: str | None = None
    step: int | None = None
    total_steps: int | None = None
    trainable: int | None = None  # parameter counts, known once setup has succeeded
    total: int | None = None
    error: str | None = None  # "failed": the exception and its first line

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunStatus":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class RunDir:
    """Layout:

    (the names are the constants above)
    recipe.yaml          the resolved recipe (overrides applied, paths absolute)
    adapter/             peft adapter + tokenizer/image processor + config.json with id2label
    model/               instead of adapter/ for adapter.method full or freeze
    base_model/          only for model.init=config: the randomly initialised base, so the adapter reloads
    metrics.json         final evaluation; perf/* speed and memory figures (throughput.py)
    eval_predictions.jsonl  per-example results of the final validation (predictions.py), for reports
    status.json          running / finished / failed, for `hfadapt runs` (status.py)
    trainer_state.json   per-step losses and log history
    train_log.jsonl      the log history as it is written (one JSON line per log and evaluation, with a time)
    checkpoints/         checkpoint-N folders for --resume
    best/                trainable weights of the best evaluation so far (+ best.json: its step and value)
    logs/                tracker output (TensorBoard)
    generations.jsonl    causal-lm: generation.prompts completed at each evaluation
    completions.jsonl    online-rl: sampled completions with their rewards and advantages
    rewards/             online-rl: copies of the reward function files (what RUN/recipe.yaml resolves)
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
    def status_file(self) -> Path:
        return self.path / STATUS_FILE

    @property
    def predictions_file(self) -> Path:
        return self.path / PREDICTIONS_FILE

    @property
    def generations_file(self) -> Path:
        return self.path / GENERATIONS_FILE

    @property
    def live_log_file(self) -> Path:
        return self.path / LIVE_LOG_FILE

    @property
    def base_model_dir(self) -> Path:
        return self.path / BASE_MODEL_DIR

    @property
    def best_dir(self) -> Path:
        return self.path / BEST_DIR

    @property
    def best_weights(self) -> Path:
        return self.best_dir / TRAINABLE_FILE

    @property
    def best_info_file(self) -> Path:
        return self.best_dir / BEST_FILE

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints_dir / f"{CHECKPOINT_PREFIX}{step}"

    def saved_model_dir(self, peft: bool) -> Path:
        """Where training saves the result: adapter/ for peft methods, model/ for full and freeze."""
        return self.path / (ADAPTER_DIR if peft else MODEL_DIR)

    def has_saved_model(self) -> bool:
        """Whether training saved its result (adapter/ or model/), whatever the method."""
        return (self.path / ADAPTER_DIR).is_dir() or (self.path / MODEL_DIR).is_dir()

    @property
    def logs_dir(self) -> Path:
        return self.path / LOGS_DIR

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
            from hfadapt.modeling.models import RUN_PLACEHOLDER

            recipe.model.trust_remote_code = False
            rl = getattr(recipe, "rl", None)
            if rl is not None:  # online-rl's reward files came down with it: run only on the user's override
                rl.trust_reward_code = False
            if recipe.output.dir == RUN_PLACEHOLDER:  # the pushed run is this download (its rewards/ copies)
                recipe.output.dir = str(self.path)
        return recipe

    def is_run(self) -> bool:
        """Whether the folder holds a run (its recipe.yaml), finished or not."""
        return self.recipe_file.is_file()

    def recipe_text(self) -> str:
        return self.recipe_file.read_text(encoding="utf-8")

    def recipe_dict(self, lenient: bool = True) -> dict[str, Any]:
        """recipe.yaml as plain data, without validation: for listing runs whose recipe this
        installation cannot load (a task it lacks), and comparing a resumed recipe. Unreadable:
        {} when lenient, else an error naming the file."""
        import yaml

        try:
            raw = yaml.safe_load(self.recipe_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            if lenient:
                return {}
            raise HfadaptError(f"{self.recipe_file}: not readable YAML ({first_line(e)})") from None
        return raw if isinstance(raw, dict) else {}

    @property
    def metrics(self) -> "RunMetrics":
        return self.read_metrics()

    @property
    def info(self) -> RunInfo:
        return self.read_info()

    # Each reader returns the empty value when the file is absent. A corrupt file raises, naming it;
    # lenient=True reads it as absent instead (listing many runs, a report that shows what it can).
    def read_metrics(self, lenient: bool = False) -> RunMetrics:
        return RunMetrics.from_json(_read_json(self.metrics_file, lenient))

    def read_info(self, lenient: bool = False) -> RunInfo:
        return RunInfo.from_json(_read_json(self.info_file, lenient))

    def has_info(self) -> bool:
        return self.info_file.is_file()

    def read_status(self) -> RunStatus:
        """status.json; never raises (a status is advisory: a torn or missing one reads as empty)."""
        return RunStatus.from_json(_read_json(self.status_file, lenient=True))

    def read_state(self, lenient: bool = False) -> RunState:
        """The run's trainer_state.json (written at the end of training)."""
        return RunState.from_json(_read_json(self.state_file, lenient))

    def latest_state(self, lenient: bool = False) -> RunState | None:
        """The run's trainer state, or, before it finished, its latest complete checkpoint's; None
        when there is neither."""
        if self.state_file.is_file():
            return self.read_state(lenient)
        checkpoints = self.checkpoints()
        return self.checkpoint_state(checkpoints[-1], lenient) if checkpoints else None

    def checkpoint_state(self, checkpoint: Path, lenient: bool = False) -> RunState:
        return RunState.from_json(_read_json(Path(checkpoint) / STATE_FILE, lenient))

    def checkpoints(self) -> list[Path]:
        """Complete `checkpoint-N` folders (their trainer state written last is there), oldest first;
        folders of a save or delete in progress (`.tmp-*`, `.del-*`) are not."""
        root = self.checkpoints_dir
        if not root.is_dir():
            return []
        found = [
            p for p in root.glob(f"{CHECKPOINT_PREFIX}*")
            if p.name[len(CHECKPOINT_PREFIX):].isdigit() and (p / STATE_FILE).is_file()
        ]
        return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))

    def read_predictions(self) -> list[dict[str, Any]]:
        """eval_predictions.jsonl: one dict per evaluated example (the task's fields); unreadable lines skipped."""
        return _read_jsonl(self.predictions_file)

    def read_live_log(self) -> list[dict[str, Any]]:
        """train_log.jsonl: {"step", "time", "train/loss", "train/lr", ...} or eval/ entries, in the order
        written; a resumed run appends again from its checkpoint's step (readers keep the last of a step)."""
        return _read_jsonl(self.live_log_file)

    def read_generations(self) -> list[dict[str, Any]]:
        """generations.jsonl (causal-lm): the recipe's prompts completed at each evaluation."""
        return _read_jsonl(self.generations_file)

    def drop_rows_after(self, name: str, step: int) -> None:
        """Cut a per-step log of the run (JSON lines with a "step") back to the checkpoint at `step`: a
        resumed session writes the later steps again. A line cut short by the kill goes too."""
        path = self.path / name
        if not path.is_file():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
                kept.append(line + "\n")
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, path)

    def run_files(self) -> list[Path]:
        """The run files present (RUN_FILES), what a push carries besides the adapter."""
        return [self.path / name for name in RUN_FILES if (self.path / name).is_file()]

    def is_started(self) -> bool:
        return self.path.exists() and any(self.path.iterdir())

    def check_output(self) -> None:
        """output.dir must be a folder (or not exist yet) that can be written; checked before any work."""
        check_writable_folder(self.path, "output.dir", "output.dir")


def check_writable_folder(path: Path, field: str, choose: str) -> None:
    """`path` must be a folder, or not exist yet under a folder that can be written: one line naming
    `field` (the recipe field or flag that gave it) otherwise. `choose`: what to pick instead."""
    if path.exists() and not path.is_dir():
        raise HfadaptError(f"{field}: {path} is an existing file, not a folder; choose another {choose}")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise HfadaptError(f"{field}: cannot create {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise HfadaptError(f"{field}: cannot write {path}: {parent} is not writable")


def read_json(path: Path, lenient: bool = False) -> dict[str, Any]:
    """A JSON object file of a run; {} when absent. Corrupt: an error naming the file, or {} when lenient."""
    return _read_json(Path(path), lenient)


def _read_json(path: Path, lenient: bool = False) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        if lenient:
            return {}
        raise HfadaptError(f"{path}: not valid JSON ({e}); restore the file or delete it") from None
    if not isinstance(data, dict):
        if lenient:
            return {}
        raise HfadaptError(f"{path}: expected a JSON object")
    return data


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
