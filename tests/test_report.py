"""`hfadapt report`: one self-contained HTML page whose numbers are the run's own.

`check_report` is also called by the task contract test (tests/test_task_contract.py) on the run of
every registered task, so each task, including one registered later, is shown to render.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from hfadapt.cli import main


class _Page(HTMLParser):
    """Cells with data-key/data-value, confusion-matrix cells, and every src/href."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, Any] = {}
        self.confusion_total: int | None = None
        self.confusion_cells: list[int] = []
        self.links: list[str] = []
        self.tags: set[str] = set()
        self.images = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.add(tag)
        if "data-key" in a:
            self.values[a["data-key"]] = json.loads(a["data-value"])
        if tag == "table" and a.get("class") == "confusion":
            self.confusion_total = int(a["data-total"])
        if "data-count" in a:
            self.confusion_cells.append(int(a["data-count"]))
        for attr in ("src", "href"):
            if a.get(attr):
                self.links.append(a[attr])
        if tag == "img" and (a.get("src") or "").startswith("data:image/png;base64,"):
            self.images += 1


def check_report(run_dir: Path, out: Path) -> _Page:
    """Render the report of `run_dir` to `out` and check it against the run's files."""
    from hfadapt.insight.report import write_report

    path = write_report(run_dir, out)
    text = path.read_text()
    page = _Page()
    page.feed(text)
    # self-contained: no scripts, every image inline
    assert "script" not in page.tags
    assert all(link.startswith("data:") for link in page.links), [link[:60] for link in page.links if not link.startswith("data:")]
    assert page.images >= 2  # training curves + at least one more plot
    # every final metric and throughput figure is on the page, with exactly the value in metrics.json
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    shown = {k: v for k, v in metrics.items() if k.split("/")[0] in ("eval", "test", "perf")}
    assert set(shown) <= set(page.values), sorted(set(shown) - set(page.values))
    for key, value in page.values.items():
        if key in metrics:
            assert value == metrics[key], key
    if page.confusion_total is not None:
        assert page.confusion_total == sum(page.confusion_cells) == metrics["eval/samples"]
    return page


def test_report_of_a_classifier(finished_run, tmp_path: Path) -> None:
    page = check_report(finished_run.output_dir, tmp_path / "r.html")
    assert page.confusion_total == json.loads((finished_run.output_dir / "metrics.json").read_text())["eval/samples"]
    text = (tmp_path / "r.html").read_text()
    for heading in ("Training", "Evaluation over steps", "Confusion matrix", "Per-class precision, recall and F1",
                    "Most confident mistakes", "Speed and memory", "Recipe", "Run info"):
        assert f">{heading}<" in text, heading


def test_report_cli_and_a_pulled_hub_adapter(finished_run, hub_server, monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    assert main(["push", str(finished_run.output_dir), "test-user/report"]) == 0
    assert "eval_predictions.jsonl" in hub_server.files("test-user/report")
    assert main(["report", "test-user/report", "--out", str(tmp_path / "hub.html")]) == 0
    assert "report written to" in capsys.readouterr().out
    local = check_report(finished_run.output_dir, tmp_path / "local.html")
    page = _Page()
    page.feed((tmp_path / "hub.html").read_text())
    assert page.values == local.values and page.confusion_cells == local.confusion_cells


def test_a_task_without_a_section_gets_the_generic_one(finished_run, tmp_path: Path) -> None:
    from hfadapt.insight import report

    data = report.load(finished_run.output_dir)
    data.task = "some-new-task"  # registered later, with nothing for the report
    html = report.task_section(data)
    assert "No task-specific view" in html and 'data-key="eval/accuracy"' in html
    html = report.render(data)
    assert "<h2>some-new-task</h2>" in html


def test_report_of_a_missing_run_is_one_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "not an hfadapt run" in capsys.readouterr().err


def test_question_answering_section_scores_each_answer_as_squad_v2_does() -> None:
    from hfadapt.tasks import TASKS
    from hfadapt.tasks.reporting import ReportInput

    rows = [
        {"index": 0, "context": "c", "prediction": "the Paris", "answers": ["Paris"], "answerable": True},
        {"index": 1, "context": "c", "prediction": "in Paris France", "answers": ["Paris"], "answerable": True},
        {"index": 2, "context": "c", "prediction": "", "answers": [], "answerable": False},
    ]
    html = TASKS.get("question-answering").report_section(ReportInput(recipe=None, metrics={}, predictions=rows))  # type: ignore[arg-type]
    assert "<td>all</td><td>3</td><td>66.7</td><td>83.3</td>" in html  # exact match 1, 0, 1; F1 1, 0.5, 1
    assert "<td>answerable</td><td>2</td><td>50.0</td><td>75.0</td>" in html
    assert "<td>unanswerable</td><td>1</td><td>100.0</td><td>100.0</td>" in html  # no answer, rightly
    assert "in Paris France" in html and "<td>0.50</td>" in html  # the one that missed, with its F1


def test_classifier_sections_for_multi_label_and_regression() -> None:
    from hfadapt.tasks import TASKS
    from hfadapt.tasks.reporting import ReportInput

    task = TASKS.get("text-classification")
    multi = [{"index": 0, "labels": ["a", "b"], "preds": ["a"], "text": "x"}, {"index": 1, "labels": ["b"], "preds": ["b"], "text": "y"}]
    html = task.report_section(ReportInput(recipe=None, metrics={}, predictions=multi))  # type: ignore[arg-type]
    assert "Per-label precision" in html and "<td>b</td><td>1.000</td><td>0.500</td>" in html
    values = [{"index": i, "label": float(i), "pred": float(i) + 0.5 * (i == 2), "text": "t"} for i in range(4)]
    html = task.report_section(ReportInput(recipe=None, metrics={}, predictions=values))  # type: ignore[arg-type]
    assert "Largest errors" in html and "<td>2</td><td>t</td><td>2.000</td><td>2.500</td>" in html and 'src="data:image/png' in html
