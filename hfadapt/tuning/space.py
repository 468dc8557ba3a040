"""The search section in Optuna's terms: suggestions (define-by-run, so conditional fields are only
sampled when their condition holds), the sampler and the pruner."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hfadapt.core.errors import HfadaptError
from hfadapt.core.search import SearchSection, decode_choice, encode_choice

if TYPE_CHECKING:
    import optuna


def suggest(trial: optuna.Trial, search: SearchSection) -> dict[str, Any]:
    """The trial's values, field by field in the order of the space."""
    values: dict[str, Any] = {}
    for key, dist in search.space.items():
        if not dist.active(values):
            continue
        kind = dist.kind
        if kind == "log_uniform":
            values[key] = trial.suggest_float(key, *dist.log_uniform, log=True)  # type: ignore[misc]
        elif kind == "uniform":
            values[key] = trial.suggest_float(key, *dist.uniform)  # type: ignore[misc]
        elif kind == "int":
            low, high, *step = dist.int_  # type: ignore[misc]
            values[key] = trial.suggest_int(key, low, high, step=step[0] if step else 1)
        else:
            picked = trial.suggest_categorical(key, [encode_choice(c) for c in dist.choice])  # type: ignore[union-attr]
            values[key] = decode_choice(dist, picked)
    return values


def make_sampler(search: SearchSection, seed: int) -> optuna.samplers.BaseSampler:
    """A fresh sampler per trial, seeded with the study's seed plus the trials so far: the same study
    samples the same trials again, in one process or resumed in another (a sampler's own random
    state would start over after a restart and repeat its first draws)."""
    import optuna

    if search.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if search.sampler == "grid":
        grid = {key: [encode_choice(v) for v in dist.grid() or []] for key, dist in search.space.items()}

        class Grid(optuna.samplers.GridSampler):
            """Optuna's grid sampler stops `study.optimize` once the grid is walked; a study of hfadapt asks
            and tells trials itself and stops at min(n_trials, grid size) (trial_budget)."""

            def after_trial(self, *args: Any, **kwargs: Any) -> None:
                pass

        return Grid(grid, seed=seed)
    try:
        import cmaes  # noqa: F401  (Optuna's CMA-ES sampler needs it)
    except ImportError:
        raise HfadaptError("search.sampler: cmaes needs the cmaes package: pip install cmaes") from None
    return optuna.samplers.CmaEsSampler(seed=seed)


def make_pruner(search: SearchSection) -> optuna.pruners.BasePruner:
    import optuna

    p = search.pruner
    if p.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_steps)
    if p.type == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def trial_budget(search: SearchSection) -> int:
    """Trials the study runs: n_trials, or the grid's size when that is smaller."""
    return min(search.n_trials, search.grid_size()) if search.sampler == "grid" else search.n_trials
