"""The Runs tab: the table of runs under the runs folder, a run's HTML report, and two runs side by
side (their metrics and their training loss).
"""

from __future__ import annotations

import html

from hfadapt.ui.live import read_progress
from hfadapt.ui.shared import Context, Shared, attempt

RUN_COLUMNS = ["name", "task", "base", "method", "trainable", "best", "steps", "time", "state"]


def _report_frame(ctx: Context, name: str) -> str:
    """The run's report (written under the runs folder's .ui/), inline in an iframe."""
    from hfadapt.insight.report import write_report

    run = ctx.run_path(name)
    out = ctx.runs.resolve() / ".ui" / "reports" / f"{run.name}-report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    page = write_report(run, out).read_text(encoding="utf-8")
    return f'<iframe id="report-frame" style="width:100%;height:900px;border:1px solid #ddd" srcdoc="{html.escape(page)}"></iframe>'


def _compare(ctx: Context, a: str, b: str) -> tuple:
    """(metrics table, loss curves) of runs a and b."""
    import pandas as pd

    from hfadapt.insight.runs import describe

    runs = [ctx.run_path(a), ctx.run_path(b)]
    rows = [describe(r, ctx.runs) for r in runs]
    keys = sorted(set(rows[0]["metrics"]) | set(rows[1]["metrics"]))
    table = pd.DataFrame({"metric": keys, a: [rows[0]["metrics"].get(k) for k in keys],
                          b: [rows[1]["metrics"].get(k) for k in keys]})
    curves = []
    for name, run in zip((a, b), runs):
        curves += [{"step": c["step"], "value": c["value"], "run": name}
                   for c in read_progress(run).curves if c["series"] == "loss"]
    return table, pd.DataFrame(curves, columns=["step", "value", "run"]).astype({"step": "int64", "value": "float64"})  # numbers, not categories


def build_runs_tab(shared: Shared) -> None:
    import gradio as gr

    ctx = shared.ctx
    with gr.Tab("Runs", id="runs", elem_id="tab-runs"):
        with gr.Row():
            sort_box = gr.Textbox(label="sort by metric (best first)", placeholder="accuracy", elem_id="runs-sort")
            refresh_btn = gr.Button("Refresh", elem_id="runs-refresh")
        runs_msg = gr.Markdown("", elem_id="runs-status")
        table = gr.Dataframe(headers=RUN_COLUMNS, interactive=False, elem_id="runs-table")
        with gr.Row():
            runs_pick = shared.run_picker(label="run", elem_id="runs-select")
            report_btn = gr.Button("Open report", elem_id="runs-report-btn")
        report_html = gr.HTML("", elem_id="runs-report")
        gr.Markdown("### compare two runs")
        with gr.Row():
            cmp_a = shared.run_picker(label="run A", elem_id="cmp-a")
            cmp_b = shared.run_picker(label="run B", elem_id="cmp-b")
            cmp_btn = gr.Button("Compare", elem_id="cmp-btn")
        cmp_table = gr.Dataframe(interactive=False, elem_id="cmp-metrics")
        cmp_plot = gr.LinePlot(x="step", y="value", color="run", title="training loss", elem_id="cmp-loss", height=260)

    def do_table(sort: str) -> tuple:
        import pandas as pd

        from hfadapt.insight.runs import _cells, list_runs

        found = list_runs(ctx.runs, sort=sort.strip() or None) if ctx.runs.is_dir() else []
        names = ctx.run_names()
        pick = gr.update(choices=names)
        return ("" if found else f"no runs under {ctx.runs}", pd.DataFrame([_cells(r) for r in found], columns=RUN_COLUMNS),
                pick, pick, pick)

    refresh_btn.click(attempt(do_table, 5), sort_box, [runs_msg, table, runs_pick, cmp_a, cmp_b])
    sort_box.submit(attempt(do_table, 5), sort_box, [runs_msg, table, runs_pick, cmp_a, cmp_b])

    def do_report(name: str) -> tuple:
        return "", _report_frame(ctx, name)

    report_btn.click(attempt(do_report, 2), runs_pick, [runs_msg, report_html])

    def do_compare(a: str, b: str) -> tuple:
        return "", *_compare(ctx, a, b)

    cmp_btn.click(attempt(do_compare, 3), [cmp_a, cmp_b], [runs_msg, cmp_table, cmp_plot])
