"""`hfadapt ui`: a web page over the commands (Gradio, the `ui` extra). The top floor beside the CLI:
it may use every package below."""
