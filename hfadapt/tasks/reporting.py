"""What a task's section of `hfadapt report` receives (`ReportInput`), and the HTML parts that the
task sections and the report page share: escaping, numbers, metric tables, inline plots.

The page itself (insight/report.py) reads the run directory and lays out the shared sections; each
task renders its own section (`Task.report_section`). Offline and self-contained: plots are inline
base64 PNGs drawn with matplotlib's Agg backend.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from hfadapt.core.recipe import Recipe
    from hfadapt.rundir.layout import RunMetrics


@dataclass(frozen=True)
class ReportInput:
    """What a task's report section is given: the run's recipe and what its final evaluation left."""

    recipe: Recipe
    metrics: RunMetrics  # metrics.json
    predictions: list[dict[str, Any]] = field(default_factory=list)  # eval_predictions.jsonl rows (the task's own shape)
    generations: list[dict[str, Any]] = field(default_factory=list)  # generations.jsonl rows (causal-lm)
    evaluations: list[tuple[int | None, dict[str, Any]]] = field(default_factory=list)  # (step, figures) of each evaluation during training

    def split(self, name: str) -> dict[str, Any]:
        """The metrics of one split ("eval", "test", "perf") without the split's prefix."""
        return self.metrics.split(name)


def generic_section(evals: dict[str, Any]) -> str:
    """The section of a task with no view of its own: its final evaluation (`ReportInput.split("eval")`) as a table."""
    if not evals:
        return "<p class=note>No final evaluation in this run.</p>"
    return "<p class=note>No task-specific view for this task; the final evaluation:</p>" + metric_table(evals, "eval")


# ---- tables -------------------------------------------------------------------------------------
def e(value: object) -> str:
    """HTML-escaped text of a value."""
    return html.escape(str(value))


def fmt(value: object) -> str:
    """A number as shown on the page: thousands separated, 4 significant digits; other values escaped."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return e(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.4g}"


def value_cell(key: str, value: object) -> str:
    """A table cell of a run's number; data-key/data-value carry the exact value (tests read them back)."""
    if value is None:
        return "<td>-</td>"
    raw = json.dumps(value)
    return f"<td data-key=\"{e(key)}\" data-value=\"{e(raw)}\">{fmt(value)}</td>"


def metric_table(values: dict[str, Any], split: str) -> str:
    body = "".join(f"<tr><td>{e(k)}</td>{value_cell(f'{split}/{k}', v)}</tr>" for k, v in values.items())
    return f"<table><tr><th>{e(split)}</th><th>value</th></tr>{body}</table>"


# ---- plots --------------------------------------------------------------------------------------
def plt() -> Any:
    """matplotlib.pyplot on the Agg backend (no display), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def img(fig: Figure) -> str:
    """A figure as an inline <img> (base64 PNG); the figure is closed."""
    pyplot = plt()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    pyplot.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'
