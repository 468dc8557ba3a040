"""`tune(recipe, search)`: an Optuna study whose trials are ordinary runs under <output dir>/trial-NNN.

The study folder (the recipe's output dir, runs/<name> by default) holds:
  tune.yaml     the recipe and its search section the study was started with (a rerun must match)
  study.db      Optuna's storage (SQLite) unless search.storage names another
  trial-NNN/    one run per trial (a run like any other: `hfadapt runs`, `hfadapt report`)
  logs/         each trial's training output
  best.yaml     the best trial's full recipe, trainable with `hfadapt train`
Rerunning the same command resumes: a trial that was running when the study was killed is marked
failed and its values are queued again, and the study stops at exactly search.n_trials trials that
finished, were pruned or failed on their own (killed ones don't count). A running trial beats in the
storage (Optuna's heartbeat); one silent for search.grace_period, its machine dead, is failed and
retried once by whichever worker of the study sees it first.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import yaml

from hfadapt.core.errors import HfadaptError
from hfadapt.core.recipe import Recipe, with_search
from hfadapt.core.search import SearchSection, decode_choice
from hfadapt.rundir.layout import RunDir
from hfadapt.rundir.status import process_alive, write_status
from hfadapt.tuning.space import make_pruner, make_sampler, suggest, trial_budget
from hfadapt.tuning.trial import Outcome, run_trial, trial_dir, trial_recipe

if TYPE_CHECKING:
    import optuna

STUDY_FILE, DB_FILE, BEST_FILE, LOCK_FILE = "tune.yaml", "study.db", "best.yaml", ".tune.lock"
RESUMABLE = ("n_trials", "timeout")  # what a rerun of a study may change


@dataclass
class Setup:
    """What every worker of one study needs."""

    dir: Path
    recipe: Recipe  # with its search section
    metric: str
    direction: str  # maximize / minimize
    storage: str
    seed: int

    @property
    def search(self) -> SearchSection:
        return self.recipe.search  # type: ignore[return-value]

    @property
    def name(self) -> str:
        return self.recipe.run_name


def tune(recipe: Recipe, search: str | Path | dict[str, Any] | SearchSection | None = None, n_trials: int | None = None,
         workers: int = 1) -> optuna.Study:
    """Run (or resume) the study of `recipe` over `search` (a search file, a mapping, a SearchSection,
    or None for the recipe's own search section); returns the Optuna study. The CLI comes through here."""
    if workers < 1:
        raise HfadaptError(f"tune --workers: must be a positive integer, got {workers}")
    setup = prepare(recipe, search, n_trials)
    study = _open_study(setup, create=True)
    deadline = time.time() + setup.search.timeout if setup.search.timeout else None
    if workers == 1:
        work(setup, deadline)
    else:
        _spawn(setup, workers, deadline)
    return finish(setup, study)


def prepare(recipe: Recipe, search: Any = None, n_trials: int | None = None, record: bool = True) -> Setup:
    """The recipe with its search, the study folder checked (a rerun must be the same study) and tune.yaml
    written; a worker process (`record=False`) reads what its parent wrote."""
    recipe = _with_search(recipe, search)
    if recipe.search is None:
        raise HfadaptError(f"{recipe.source or recipe.run_name}: no search section; add `search:` to the recipe or pass a search file (--search)")
    if n_trials is not None:
        if n_trials < 1:
            raise HfadaptError(f"tune --trials: must be a positive integer, got {n_trials}")
        recipe.search.n_trials = n_trials
    folder = recipe.output_dir
    if RunDir(folder).is_run():
        raise HfadaptError(f"output.dir: {folder} holds a training run, not a study; choose another output.dir or name")
    saved = folder / STUDY_FILE
    if record and saved.is_file():
        before = yaml.safe_load(saved.read_text(encoding="utf-8"))
        changed = _differences(before, recipe.to_dict())
        if changed:
            raise HfadaptError(
                f"tune: {folder} holds a study of another recipe or search (differs at {', '.join(changed[:5])}); "
                "rerun it as it was (only search.n_trials and search.timeout may change) or choose another output.dir or name"
            )
    if record:
        folder.mkdir(parents=True, exist_ok=True)
        saved.write_text(recipe.to_yaml())
    metric, direction = objective(recipe)
    storage = recipe.search.storage or f"sqlite:///{(folder / DB_FILE).resolve()}"
    seed = recipe.search.seed if recipe.search.seed is not None else recipe.train.seed
    return Setup(folder, recipe, metric, direction, storage, seed)


def objective(recipe: Recipe) -> tuple[str, str]:
    """The metric a study optimises and its direction: search.objective, else eval.best_metric (or the
    task's) and eval.greater_is_better (or the metric's own direction)."""
    from hfadapt import metrics
    from hfadapt.tasks import TASKS

    goal = recipe.search.objective  # type: ignore[union-attr]
    metric = goal.metric or recipe.eval.best_metric or TASKS.get(recipe.task).default_best_metric
    if metric is None:  # refused by the recipe checks already
        raise HfadaptError("search.objective.metric: required (or eval.best_metric)")
    if goal.direction is not None:
        return metric, goal.direction
    greater = recipe.eval.greater_is_better if metric == (recipe.eval.best_metric or metric) else None
    if greater is None:
        greater = not metrics.lower_is_better(metric)
    return metric, "maximize" if greater else "minimize"


def _with_search(recipe: Recipe, search: Any) -> Recipe:
    if search is None:
        return recipe
    if isinstance(search, (str, Path)):
        return with_search(recipe, search)
    raw = search.model_dump() if isinstance(search, SearchSection) else search
    return Recipe.from_dict({**recipe.to_dict(), "search": raw})


def _differences(a: Any, b: Any, path: tuple[str, ...] = ()) -> list[str]:
    if len(path) == 2 and path[0] == "search" and path[1] in RESUMABLE:
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in dict.fromkeys([*a, *b]) for d in _differences(a.get(k), b.get(k), (*path, k))]
    return [] if a == b else [".".join(path)]


# ---- the study and its workers ----------------------------------------------------------------------
def _open_study(setup: Setup, create: bool = False) -> optuna.Study:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = setup.search
    # several workers write one SQLite file: wait for the lock, don't fail
    engine = {"connect_args": {"timeout": 120}} if setup.storage.startswith("sqlite:") else None
    heartbeat = {"heartbeat_interval": search.heartbeat_interval, "grace_period": search.grace_period,
                 "heartbeat_stale_trial_callback": _StaleRetry(setup)} if search.heartbeat_interval else {}
    with warnings.catch_warnings():  # the heartbeat is "experimental" since Optuna 2.9; say it once in the docs, not per run
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(setup.storage, engine_kwargs=engine, **heartbeat)
    pruner = make_pruner(setup.search)
    if create:
        return optuna.create_study(study_name=setup.name, storage=storage, direction=setup.direction, pruner=pruner, load_if_exists=True)
    return optuna.load_study(study_name=setup.name, storage=storage, pruner=pruner)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One worker of this machine at a time counts the trials and asks for the next (machines sharing
    a server storage can start a trial or two more than n_trials; see docs/tune.md)."""
    with open(folder / LOCK_FILE, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def counted(trials: list[Any]) -> int:
    """Trials toward n_trials: finished, pruned, failed on their own, and running; not those killed
    (marked so by a rerun on their machine, or failed for a stale heartbeat and queued again)."""
    from optuna.trial import TrialState

    retried = {t.user_attrs.get("retry_of") for t in trials}
    return sum(
        1 for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        or (t.state == TrialState.FAIL and not t.user_attrs.get("killed") and t.number not in retried)
    )


def work(setup: Setup, deadline: float | None) -> None:
    """One worker: trial after trial until the study has its n_trials (or the timeout has passed)."""
    from optuna.trial import TrialState

    study = _open_study(setup)
    while deadline is None or time.time() < deadline:
        start = time.perf_counter()
        with _locked(setup.dir):
            _fail_killed(study, setup)
            trials = study.get_trials(deepcopy=False)
            if counted(trials) >= trial_budget(setup.search):
                if not _elsewhere(trials, setup):
                    return
                trial = None  # the budget is spoken for, but a trial of another machine may yet go stale
            else:
                study.sampler = make_sampler(setup.search, setup.seed + len(trials))
                with warnings.catch_warnings():  # "heartbeat is supposed to be used with Study.optimize": we beat ourselves
                    warnings.simplefilter("ignore", UserWarning)
                    trial = study.ask()
                trial.set_user_attr("pid", os.getpid())
                trial.set_user_attr("host", socket.gethostname())
                values = suggest(trial, setup.search)
        if trial is None:
            time.sleep(min(setup.search.heartbeat_interval or 1, 5))
            continue
        try:
            with _Heartbeat(study, trial._trial_id):
                outcome = _run(trial, values, setup)
        except BaseException:  # Ctrl-C: this process lives on (Python API), so no rerun would see it dead
            _abandon(study, setup, study._storage.get_trial(trial._trial_id), "interrupted")
            raise
        trial.set_user_attr("seconds_in_train", round(outcome.seconds_in_train, 3))
        trial.set_user_attr("seconds", round(time.perf_counter() - start, 3))
        if outcome.reason:
            trial.set_user_attr("reason", outcome.reason)
        state = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL}[outcome.state]
        if study._storage.get_trial(trial._trial_id).state.is_finished():
            # failed for a stale heartbeat (this machine went silent past the grace period) and already
            # queued again: the result is dropped so the study still ends at exactly n_trials
            outcome = Outcome("failed", reason=f"given up by the study after {setup.search.grace_period} s without a heartbeat; "
                              "its values were queued again")
        else:
            study.tell(trial, outcome.value if state == TrialState.COMPLETE else None, state=state)
        print(_trial_line(trial.number, values, outcome, setup.metric), flush=True)


def _run(trial: optuna.Trial, values: dict[str, Any], setup: Setup) -> Outcome:
    try:
        recipe = trial_recipe(setup.recipe, values, trial.number, setup.dir)
    except HfadaptError as e:  # the sampled values make no valid recipe: a failed trial, with why
        return Outcome("failed", reason=f"invalid recipe: {e}")
    logs = setup.dir / "logs"
    logs.mkdir(exist_ok=True)
    return run_trial(trial, recipe, setup.metric, setup.search, logs / f"trial-{trial.number:03d}.log")


def _fail_killed(study: optuna.Study, setup: Setup) -> None:
    """Trials left running by a worker that is gone: those of this machine at once (by host and process
    id), those of any machine once their heartbeat is older than the grace period (Optuna's
    fail_stale_trials, which calls _StaleRetry for each); failed, and their values queued again."""
    import optuna
    from optuna.trial import TrialState

    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("host") != host or process_alive(int(t.user_attrs.get("pid", 0))):
            continue
        _abandon(study, setup, t, "killed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _elsewhere(trials: list[Any], setup: Setup) -> bool:
    """Whether a trial runs on another machine: with the heartbeat on, a worker with nothing left to
    start waits for it, to retry it should that machine die (workers of this machine are watched by
    their process ids, and they finish their own trials)."""
    from optuna.trial import TrialState

    if not setup.search.heartbeat_interval:
        return False
    host = socket.gethostname()
    return any(t.state == TrialState.RUNNING and t.user_attrs.get("host") != host for t in trials)


class _Heartbeat:
    """Beats for a running trial (what Study.optimize does; hfadapt asks and tells trials itself).
    A beat that fails (the database briefly away) is retried at the next, not the end of the beats."""

    def __init__(self, study: optuna.Study, trial_id: int) -> None:
        self.storage, self.trial_id = study._storage, trial_id
        self.interval = self.storage.get_heartbeat_interval() if hasattr(self.storage, "get_heartbeat_interval") else None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while True:
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # noqa: BLE001 - a missed beat; the grace period allows several
                pass
            if self.stop.wait(self.interval):
                return

    def __enter__(self) -> None:
        if self.interval:
            self.thread.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()


class _StaleRetry:
    """Optuna's heartbeat-stale callback: the trial (already failed by fail_stale_trials) is queued again
    with its values, once: a retry that goes stale too is left failed, so a configuration that kills
    its machine (say, the kernel's OOM killer) does not take down one machine after another."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup

    def __call__(self, study: optuna.Study, t: Any) -> None:
        silent = f"no heartbeat for {self.setup.search.grace_period} s (its machine or process died)"
        if "retry_of" in t.user_attrs:
            write_status(trial_dir(self.setup.dir, t.number), "failed", True, error=f"{silent}; a retry already, not retried again")
            return
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
        write_status(trial_dir(self.setup.dir, t.number), "failed", True, error=f"{silent}; its values were queued again")


def _abandon(study: optuna.Study, setup: Setup, t: Any, how: str) -> None:
    """A trial that did not end on its own: failed, not counted toward n_trials, its values queued again."""
    import optuna
    from optuna.trial import TrialState

    reason = f"{how} while it ran; its values were queued again"
    try:
        study._storage.set_trial_user_attr(t._trial_id, "killed", True)
        study._storage.set_trial_user_attr(t._trial_id, "reason", reason)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return  # another worker failed it first (its heartbeat went stale) and queued it again
    study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
    write_status(trial_dir(setup.dir, t.number), "failed", True, error=reason)


def _trial_line(number: int, values: dict[str, Any], outcome: Outcome, metric: str) -> str:
    shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
    if outcome.state == "complete":
        return f"trial {number}: {metric}={outcome.value:.4f} ({shown})"
    return f"trial {number}: {outcome.state}: {outcome.reason} ({shown})"


def _spawn(setup: Setup, workers: int, deadline: float | None) -> None:
    """K worker processes on this machine, one GPU each when there are GPUs (round robin over them)."""
    devices = _devices()
    code = "import sys; from hfadapt.tuning.study import worker_main; worker_main(sys.argv[1:])"
    # Without GPUs the workers share the cores: each taking all of them for its torch threads makes
    # every trial many times slower (threads spin against each other), so each gets its share.
    threads = str(max(1, len(os.sched_getaffinity(0)) // workers))
    procs = []
    for i in range(workers):
        env = dict(os.environ)
        if devices:
            env["CUDA_VISIBLE_DEVICES"] = devices[i % len(devices)]
        elif "OMP_NUM_THREADS" not in env:
            env["OMP_NUM_THREADS"] = threads
        procs.append(subprocess.Popen([sys.executable, "-c", code, str(setup.dir), str(deadline or "")], env=env))
    try:
        codes = [p.wait() for p in procs]
    except BaseException:
        for p in procs:
            p.terminate()
        raise
    if any(codes):
        raise HfadaptError(f"tune: {sum(1 for c in codes if c)} of {workers} workers failed (exit codes {codes})")


def _devices() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def worker_main(argv: list[str]) -> None:
    """A worker process of `--workers K`: the study of the folder's tune.yaml."""
    from hfadapt.core.verbosity import configure

    configure(verbose=False)  # as the CLI does; the trials' output goes to logs/ anyway
    folder, deadline = Path(argv[0]), float(argv[1]) if len(argv) > 1 and argv[1] else None
    raw = yaml.safe_load((folder / STUDY_FILE).read_text(encoding="utf-8"))
    recipe = Recipe.from_dict(raw)
    recipe.output.dir = str(folder)
    try:
        work(prepare(recipe, record=False), deadline)
    except HfadaptError as e:
        print(f"hfadapt: error: {e}", file=sys.stderr)
        sys.exit(2)


# ---- the end ------------------------------------------------------------------------------------------
def finish(setup: Setup, study: optuna.Study) -> optuna.Study:
    """best.yaml from the best finished trial, and one summary line."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    by_state = {s: sum(1 for t in trials if t.state == s) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    summary = (f"study {setup.name}: {by_state[TrialState.COMPLETE]} finished, {by_state[TrialState.PRUNED]} pruned, "
               f"{by_state[TrialState.FAIL]} failed")
    if by_state[TrialState.COMPLETE]:
        best = study.best_trial
        write_best(setup, best.number, best.value, best.params)
        summary += f"; best: trial {best.number}, {setup.metric}={best.value:.4f}, recipe in {setup.dir / BEST_FILE}"
    print(summary, flush=True)
    return study


def write_best(setup: Setup, number: int, value: float, params: dict[str, Any]) -> Path:
    """The best trial's full recipe as a recipe of its own (its run name <name>-best, output under runs/):
    the one its run saved, or, for a trial another machine ran, the same built again from its values."""
    from hfadapt.core.recipe import shed_foreign_fields

    run = RunDir(trial_dir(setup.dir, number))
    if run.is_run():
        raw = shed_foreign_fields(run.recipe_dict(lenient=False))
    else:
        values = {k: decode_choice(setup.search.space[k], v) if k in setup.search.space else v for k, v in params.items()}
        raw = trial_recipe(setup.recipe, values, number, setup.dir).to_dict()
    raw["name"] = f"{setup.name}-best"
    raw["output"] = {"dir": None, "overwrite": False}
    raw.pop("search", None)
    target = setup.dir / BEST_FILE
    header = (f"# hfadapt tune: the best of study {setup.name}: trial-{number:03d}, {setup.metric}={value!r}\n"
              f"# train it again with: hfadapt train {target}\n")
    target.write_text(header + yaml.safe_dump(raw, sort_keys=False))
    return target


def is_study(folder: str | Path) -> bool:
    return (Path(folder) / STUDY_FILE).is_file()


def load_study(folder: str | Path) -> tuple[Setup, optuna.Study]:
    """The study a folder holds (its tune.yaml and storage), for reading it back (the report)."""
    folder = Path(folder)
    if not is_study(folder):
        raise HfadaptError(f"{folder}: not an hfadapt study (no {STUDY_FILE})")
    recipe = Recipe.from_dict(yaml.safe_load((folder / STUDY_FILE).read_text(encoding="utf-8")))
    recipe.output.dir = str(folder)
    setup = prepare(recipe, record=False)
    return setup, _open_study(setup)
