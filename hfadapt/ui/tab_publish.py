"""The Publish tab: push a finished run to the Hub (the token never passes through the page)."""

from __future__ import annotations

from hfadapt.core.errors import HfadaptError
from hfadapt.ui.shared import Shared, attempt


def build_publish_tab(shared: Shared) -> None:
    import gradio as gr

    ctx = shared.ctx
    with gr.Tab("Publish", id="publish", elem_id="tab-publish"):
        gr.Markdown("Push a finished run to the Hub. The token comes from `HF_TOKEN` or `hf auth login`; it is never shown here.")
        pub_run = shared.run_picker(label="run", elem_id="pub-run")
        with gr.Row():
            pub_repo = gr.Textbox(label="repo id (namespace/name)", elem_id="pub-repo")
            pub_license = gr.Textbox(label="license", placeholder="apache-2.0", elem_id="pub-license")
            pub_private = gr.Checkbox(label="private", elem_id="pub-private")
        pub_btn = gr.Button("Push", elem_id="pub-go")
        pub_out = gr.Markdown("", elem_id="pub-status")

    def do_push(name: str, repo: str, license: str, private: bool) -> str:
        from huggingface_hub import get_token

        from hfadapt.publishing.hub import push

        run = ctx.run_path(name)
        if not get_token():
            raise HfadaptError("push: no Hugging Face token; set HF_TOKEN or run `hf auth login`, then push again")
        url = push(str(run), repo.strip(), private=private, license=license.strip() or None)
        return f"pushed {name} to {repo}: {url}"

    pub_btn.click(attempt(do_push, 1), [pub_run, pub_repo, pub_license, pub_private], pub_out)
