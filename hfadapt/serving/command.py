"""`hfadapt serve`'s arguments and entry point (imports nothing heavy: `hfadapt --help` stays instant)."""

from __future__ import annotations

import argparse

from hfadapt.core.errors import HfadaptError


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser("serve", parents=[common], help="serve adapters behind an OpenAI-compatible HTTP API (many adapters, one base)")
    s.add_argument("adapters", nargs="+", metavar="ADAPTER",
                   help="[NAME=]RUN: a run directory, a Hub adapter id or a `merge --method` folder; NAME is the API's model name")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--api-key", help="require `Authorization: Bearer KEY` (default: $HFADAPT_API_KEY; none: no key)")
    s.add_argument("--max-batch-size", type=int, default=32, help="requests run together in one model call (default 32)")
    s.add_argument("--max-wait-ms", type=float, default=10.0, help="how long the first request waits for others to batch with (default 10)")
    s.add_argument("--max-tokens", type=int, default=4096, help="the largest max_tokens a request may ask for (default 4096)")
    s.add_argument("--max-body-mb", type=float, default=25.0, help="the largest request body, in MiB (default 25)")
    s.add_argument("--engine", choices=["hf", "vllm"], default="hf", help="vllm: causal-lm adapters on vLLM's multi-LoRA engine (GPU)")


def run(args: argparse.Namespace) -> None:
    if not 0 < args.port < 65536:
        raise HfadaptError(f"serve --port: {args.port} is not a port number (1-65535)")
    from hfadapt.serving.app import serve

    serve(args.adapters, host=args.host, port=args.port, api_key=args.api_key, max_batch_size=args.max_batch_size,
          max_wait_ms=args.max_wait_ms, max_body_mb=args.max_body_mb, max_tokens=args.max_tokens, engine=args.engine,
          verbose=getattr(args, "verbose", False))
