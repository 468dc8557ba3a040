"""`hfadapt ui`: one Gradio page with tabs (Recipe, Train, Runs, Try, Publish) over what the commands do.

Every action calls the same functions the CLI calls; a failing one shows its one-line hfadapt error
and changes nothing. Training runs in separate processes (jobs.py) and is watched through the run's
own files (live.py), so the page never holds a model while training. Each tab is built by its own
module (tab_*.py); what they share is in shared.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from hfadapt.core.errors import HfadaptError
from hfadapt.ui.jobs import Jobs
from hfadapt.ui.safety import auth_pair
from hfadapt.ui.shared import Context, Shared, launchers

if TYPE_CHECKING:
    import gradio as gr

CSS = ".field-error p{color:#c0392b;margin:0 0 .4em 0;font-size:.9em} .ok p{color:#1e8449}"


def build(runs: Path) -> gr.Blocks:
    import gradio as gr

    from hfadapt.modeling import adapters  # noqa: F401  (registers the adapter methods' sections)
    from hfadapt.ui.tab_publish import build_publish_tab
    from hfadapt.ui.tab_recipe import build_recipe_tab
    from hfadapt.ui.tab_runs import build_runs_tab
    from hfadapt.ui.tab_train import build_train_tab
    from hfadapt.ui.tab_try import build_try_tab

    ctx = Context(Path(runs), Jobs(Path(runs)))
    with gr.Blocks(title="hfadapt", analytics_enabled=False) as demo:
        gr.Markdown(f"## hfadapt · runs folder `{ctx.runs}`")
        shared = Shared(ctx, demo, gr.State(str(Path.cwd())), launchers())
        with gr.Tabs():
            build_recipe_tab(shared)
            build_train_tab(shared)  # launches the Recipe tab's YAML
            build_runs_tab(shared)
            build_try_tab(shared)
            build_publish_tab(shared)

        # every tab's run pickers: fresh when the page loads and whenever one is opened
        def refresh_runs() -> tuple:
            names = ctx.run_names()
            return tuple(gr.update(choices=names) for _ in shared.run_pickers)

        demo.load(refresh_runs, None, shared.run_pickers)
        for tab_pick in shared.run_pickers:
            tab_pick.focus(lambda: gr.update(choices=ctx.run_names()), None, tab_pick)
    demo.ctx = ctx  # the jobs, for a clean shutdown
    return demo


def serve(runs: str, host: str = "127.0.0.1", port: int = 7860, auth: str | None = None) -> None:
    """`hfadapt ui`: build the page and serve it until Ctrl-C; runs it started are stopped (checkpointed)."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise HfadaptError("ui: Gradio is not installed; pip install 'hfadapt[ui]'") from None
    credentials = auth_pair(auth, host)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build(Path(runs))
    demo.queue(default_concurrency_limit=4)
    print(f"hfadapt ui: http://{host}:{port} (runs folder {Path(runs).resolve()})", flush=True)
    try:
        demo.launch(server_name=host, server_port=port, auth=credentials, quiet=True, show_error=False, prevent_thread_lock=True,
                    css=CSS)
        while True:
            time.sleep(3600)
    finally:
        demo.ctx.jobs.stop_all()
        demo.close()
