"""The Train tab: launch the Recipe tab's recipe as a child process, watch any run through its own
files (progress, loss and learning-rate curves, evaluations), stop it at a checkpoint or resume it.
"""

from __future__ import annotations

from pathlib import Path

from hfadapt.core.errors import HfadaptError
from hfadapt.ui.live import read_progress
from hfadapt.ui.shared import THIS_MACHINE, Context, Shared, attempt, validated


def _watch(ctx: Context, name: str | None, last: str) -> tuple:
    """(stamp, progress line, loss, lr, evaluations, message) of a run, or skips when nothing changed."""
    import gradio as gr

    if not name:
        return (gr.skip(),) * 6
    try:
        run = ctx.run_path(name)
    except HfadaptError:
        outcome = next((ctx.jobs.outcome(r) for r in list(ctx.jobs.jobs) if r.name == Path(name).name), None)
        return (gr.skip(), outcome or "starting…") + (gr.skip(),) * 4
    log, status = run / "train_log.jsonl", run / "status.json"
    stamp = f"{name}:" + ":".join(str(p.stat().st_mtime_ns) if p.exists() else "-" for p in (log, status))
    stamp += f":{run in ctx.jobs.active()}"
    if stamp == last:
        return (gr.skip(),) * 6  # nothing new: send nothing (the UI's own CPU use stays low)
    import pandas as pd

    from hfadapt.insight.runs import describe

    p = read_progress(run)
    state = describe(run, ctx.runs)["state"]
    outcome = ctx.jobs.outcome(run)
    line = f"**{state}** · {p.line()}" + (f"\n\n{outcome}" if outcome else "")
    switched = not last.startswith(f"{name}:")
    loss, lr = (_curve(p.curves, series, switched) for series in ("loss", "lr"))
    return stamp, line, loss, lr, pd.DataFrame(p.evals), gr.skip()


def _curve(rows: list[dict], series: str, switched: bool) -> object:
    """One series for a gr.LinePlot, its columns typed as numbers: object columns (an empty frame's)
    make Vega draw the values as categories, out of order. While a run has no point yet nothing is sent,
    unless another run was picked: a first empty frame leaves Gradio's axis labels clipped."""
    import gradio as gr
    import pandas as pd

    points = [r for r in rows if r["series"] == series and r["value"] is not None]
    if not points and not switched:
        return gr.skip()
    return pd.DataFrame(points, columns=["step", "value", "series"]).astype({"step": "int64", "value": "float64"})


def build_train_tab(shared: Shared) -> None:
    import gradio as gr

    ctx, launch_choices = shared.ctx, shared.launch_choices
    assert shared.yaml_box is not None, "the Recipe tab comes first"
    with gr.Tab("Train", id="train", elem_id="tab-train"):
        with gr.Row():
            launcher = gr.Dropdown(list(launch_choices), value=THIS_MACHINE, label="launch with", elem_id="train-launcher", scale=3)
            launch_btn = gr.Button("Train the recipe", variant="primary", elem_id="train-launch", scale=1)
        train_msg = gr.Markdown("", elem_id="train-status")
        with gr.Row():
            train_run = shared.run_picker(label="run", elem_id="train-run", allow_custom_value=False, scale=3)
            stop_btn = gr.Button("Stop (checkpoint and exit)", elem_id="train-stop", scale=1)
            resume_btn = gr.Button("Resume", elem_id="train-resume", scale=1)
        progress_md = gr.Markdown("", elem_id="train-progress")
        with gr.Row():
            loss_plot = gr.LinePlot(x="step", y="value", title="training loss", elem_id="train-loss", height=260)
            lr_plot = gr.LinePlot(x="step", y="value", title="learning rate", elem_id="train-lr", height=260)
        evals_df = gr.Dataframe(label="evaluations", elem_id="train-evals", interactive=False)
        seen = gr.State("")
        timer = gr.Timer(1.0)

    def do_launch(text: str, base: str, how: str) -> tuple:
        recipe = validated(text, base, ctx)
        job = ctx.jobs.launch(recipe, launch_choices.get(how))
        name = str(job.run.relative_to(ctx.runs.resolve())) if job.run.is_relative_to(ctx.runs.resolve()) else job.run.name
        return f"started {name} (pid {job.process.pid})", gr.update(choices=ctx.run_names() + [name], value=name), ""

    launch_btn.click(attempt(do_launch, 3), [shared.yaml_box, shared.base_state, launcher], [train_msg, train_run, seen])

    def watch(name: str | None, last: str) -> tuple:
        return _watch(ctx, name, last)

    timer.tick(watch, [train_run, seen], [seen, progress_md, loss_plot, lr_plot, evals_df, train_msg],
               show_progress="hidden")
    train_run.change(lambda: "", None, seen)

    def do_stop(name: str) -> str:
        ctx.jobs.stop(ctx.run_path(name))
        return f"stopping {name}: a checkpoint is saved at the current step"

    stop_btn.click(attempt(do_stop, 1), train_run, train_msg)

    def do_resume(name: str, how: str) -> tuple:
        job = ctx.jobs.resume(ctx.run_path(name), launch_choices.get(how))
        return f"resumed {name} (pid {job.process.pid})", ""

    resume_btn.click(attempt(do_resume, 2), [train_run, launcher], [train_msg, seen])
