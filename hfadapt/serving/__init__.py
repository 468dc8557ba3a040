"""`hfadapt serve`: finished adapters behind an OpenAI-compatible HTTP API (FastAPI + uvicorn).

registry (what is loaded, by name), batching (the one worker thread that runs the models, mixing
adapters in a batch), schemas (request bodies), auth (the API key), metrics (Prometheus), app (the
routes, `build_app`, `serve`). This floor sits above inference: it reuses predict's loading and the
tasks' `predict` hooks, so a served answer is the one `hfadapt predict` gives.
"""
