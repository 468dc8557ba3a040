"""`hfadapt report runs/<study>`: the page of an `hfadapt tune` study.

Optuna's matplotlib visualisations (optimisation history, parameter importances, parallel
coordinates) as inline PNGs, and a table of the trials linking each trial's own report (written
beside it, as `hfadapt report` writes a run's).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, Callable

from hfadapt.tasks.reporting import e as _e, fmt as _fmt, img as _img, plt as _plt
from hfadapt.tuning.study import BEST_FILE, load_study
from hfadapt.tuning.trial import trial_dir


def write_study_report(folder: str | Path, out: str | Path | None, run_report: Callable[[Path], Path], css: str) -> Path:
    """The study's page; `run_report` writes a trial's own report (insight.report's, which calls this)."""
    folder = Path(folder)
    setup, study = load_study(folder)
    target = Path(out) if out else folder / "report.html"
    trials = study.get_trials(deepcopy=False)
    reports = {}
    for t in trials:
        run = trial_dir(folder, t.number)
        if (run / "recipe.yaml").is_file():
            reports[t.number] = run_report(run)
    parts = [
        f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>hfadapt study: {_e(setup.name)}</title><style>{css}</style></head><body>",
        f"<h1>{_e(setup.name)}</h1><p class=sub>hfadapt tune study in {_e(folder)} &middot; {setup.direction} {_e(setup.metric)} &middot; "
        f"sampler {_e(setup.search.sampler)}, pruner {_e(setup.search.pruner.type)} &middot; generated {time.strftime('%Y-%m-%d %H:%M')}</p>",
        _summary(study, setup.metric, folder),
        "<h2>Optimisation history</h2>", _plot(study, "plot_optimization_history"),
        "<h2>Parameter importances</h2>", _plot(study, "plot_param_importances"),
        "<h2>Parallel coordinates</h2>", _plot(study, "plot_parallel_coordinate"),
        "<h2>Trials</h2>", _table(trials, setup.metric, reports, target.parent),
        "<h2>Search</h2>", f"<pre>{_e(_search_yaml(setup))}</pre>",
        "</body></html>",
    ]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(parts), encoding="utf-8")
    return target


def _summary(study: Any, metric: str, folder: Path) -> str:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(1 for t in trials if t.state == s) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    text = f"<p>{len(trials)} trials: {counts['complete']} finished, {counts['pruned']} pruned, {counts['fail']} failed."
    if counts["complete"]:
        best = study.best_trial
        text += f" Best: trial {best.number}, {_e(metric)} = {_fmt(best.value)}; its recipe is <code>{_e(folder / BEST_FILE)}</code>."
    return text + "</p>"


def _plot(study: Any, name: str) -> str:
    """One of optuna.visualization.matplotlib's plots, or why there is none (too few trials)."""
    _plt()  # the Agg backend before Optuna imports pyplot
    import optuna.visualization.matplotlib as vis

    draw: Callable[..., Any] = getattr(vis, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks these plots experimental
            ax = draw(study)
    except Exception as e:  # noqa: BLE001 - e.g. importances need two finished trials
        return f"<p class=note>No plot: {_e(str(e).splitlines()[0] if str(e) else type(e).__name__)}</p>"
    fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
    fig.set_size_inches(9, 4.5)
    return _img(fig)


def _table(trials: list[Any], metric: str, reports: dict[int, Path], base: Path) -> str:
    params = list(dict.fromkeys(k for t in trials for k in t.params))
    head = "".join(f"<th>{_e(h)}</th>" for h in ["trial", "state", metric, *params, "seconds", "note"])
    rows = []
    for t in trials:
        link = reports.get(t.number)
        name = f"trial-{t.number:03d}"
        cell = f'<a href="{_e(link.relative_to(base) if link.is_relative_to(base) else link)}">{name}</a>' if link else name
        value = t.value if t.value is not None else (t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None)
        cols = [cell, _e(t.state.name.lower()), _fmt(value) if value is not None else "-"]
        cols += [_fmt(t.params[k]) if k in t.params else "-" for k in params]
        cols += [_fmt(t.user_attrs.get("seconds", "-")), _e(t.user_attrs.get("reason", ""))]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cols) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _search_yaml(setup: Any) -> str:
    import yaml

    return yaml.safe_dump({"search": setup.search.model_dump()}, sort_keys=False)
