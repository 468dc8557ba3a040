"""Requests/s and latency of `hfadapt serve` with mixed adapters, against a one-request-at-a-time loop.

Run by hand (not a test):

    python benchmarks/bench_serve.py [--requests 192] [--max-tokens 16] [--threads 1] [--levels 1,8,16,32]

Setup, in a temporary folder: a randomly initialised GPT-2 style LM (GPT2LMHeadModel, n_embd 128,
4 layers, 4 heads, a word-level tokenizer with a chat template) and three chat LoRA adapters of it
(r 8, trained 4 steps each with `hfadapt train`, so they answer differently).

Measured, on the CPU, with the same requests (chat completions, the adapters in turn, 12 prompts of 2..12
words, greedy, `max_tokens` tokens unless EOS comes first):
  * sequential: a plain loop in this process: the model loaded once with every adapter (as the server
    loads it), then for each request `set_adapter` + chat template + `generate` (batch of one) + decode.
    No HTTP: the best a one-request-at-a-time caller gets. Latency = one request's time.
  * server at concurrency C: `hfadapt serve` in a subprocess (127.0.0.1, default batching:
    --max-batch-size 32 --max-wait-ms 10), C client threads each sending its share of the requests
    one after another through HTTP (httpx); latency = from sending to the full answer.
  * one at a time, concurrency 16: the same server with --max-batch-size 1 under the same 16 clients:
    the latency a one-request-at-a-time server gives that load (the p99 the goal compares with).
Both sides run torch with --threads intra-op threads (the server through OMP_NUM_THREADS). The check
at the end: answers of the server equal the sequential loop's for every request.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import in_temp_root, machine_load  # noqa: E402

SPECIAL = ["<pad>", "<eos>", "<unk>", "<system>", "<user>", "<assistant>"]
WORDS = ("red green blue yellow black white one two three four five six seven eight nine ten "
         "say tell me some please now words the a and is was cat dog sun moon").split()
VOCAB = SPECIAL + WORDS
TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} <eos> {% endfor %}"
            "{% if add_generation_prompt %}<assistant> {% endif %}")


def build_base(root: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
                                  additional_special_tokens=["<system>", "<user>", "<assistant>"], model_max_length=128)
    tok.chat_template = TEMPLATE
    config = GPT2Config(vocab_size=len(VOCAB), n_positions=128, n_embd=128, n_layer=4, n_head=4, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=0, bos_token_id=1, eos_token_id=1)
    torch.manual_seed(0)
    base = root / "base"
    GPT2LMHeadModel(config).save_pretrained(base)
    tok.save_pretrained(base)
    return base


def train_adapters(root: Path, base: Path) -> dict[str, Path]:
    from hfadapt import Recipe, train

    runs = {}
    for k, name in enumerate(("colors", "numbers", "animals")):
        answers = [WORDS[:6], WORDS[6:16], WORDS[-4:]][k]
        rng = random.Random(k)
        rows = [{"messages": [{"role": "user", "content": " ".join(rng.sample(WORDS[16:28], 3))},
                              {"role": "assistant", "content": " ".join(rng.choices(answers, k=8))}]} for _ in range(32)]
        data = root / f"{name}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        recipe = Recipe.from_dict({
            "name": name, "task": "causal-lm", "model": {"name_or_path": str(base)},
            "data": {"train_files": [str(data)], "validation_split": None, "max_length": 32},
            "adapter": {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
            "train": {"max_steps": 4, "batch_size": 8, "learning_rate": 2e-2, "log_with": []},
            "output": {"dir": str(root / name)},
        })
        runs[name] = train(recipe).output_dir
    return runs


def make_requests(n: int, names: list[str]) -> list[tuple[str, str]]:
    rng = random.Random(0)
    prompts = [" ".join(rng.choices(WORDS[16:28], k=2 + i % 11)) for i in range(12)]
    return [(names[i % len(names)], prompts[i % len(prompts)]) for i in range(n)]


def sequential(runs: dict[str, Path], requests: list[tuple[str, str]], max_tokens: int) -> tuple[list[float], float, list[str]]:
    """The one-request-at-a-time loop: base + every adapter loaded once, then request after request."""
    import torch

    from hfadapt.serving.registry import load

    registry = load([f"{k}={v}" for k, v in runs.items()], say=lambda _: None)
    model = registry.groups[0].model
    tok = registry.get(requests[0][0]).processor
    latencies, answers = [], []
    start = time.perf_counter()
    for name, prompt in requests:
        t0 = time.perf_counter()
        model.set_adapter(name)
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        answers.append(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip())
        latencies.append(time.perf_counter() - t0)
    return latencies, time.perf_counter() - start, answers


def load_test(url: str, requests: list[tuple[str, str]], concurrency: int, max_tokens: int) -> tuple[list[float], float, list[str]]:
    import httpx

    latencies: list[float] = [0.0] * len(requests)
    answers: list[str] = [""] * len(requests)
    errors: list[str] = []

    def worker(w: int) -> None:
        with httpx.Client(timeout=300) as client:
            for i in range(w, len(requests), concurrency):
                name, prompt = requests[i]
                t0 = time.perf_counter()
                r = client.post(f"{url}/v1/chat/completions", json={"model": name, "max_tokens": max_tokens,
                                                                     "messages": [{"role": "user", "content": prompt}]})
                latencies[i] = time.perf_counter() - t0
                if r.status_code != 200:
                    errors.append(r.text)
                else:
                    answers[i] = r.json()["choices"][0]["message"]["content"]

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"{len(errors)} request(s) failed: {errors[0]}")
    return latencies, time.perf_counter() - start, answers


@contextlib.contextmanager
def server(root: Path, runs: dict[str, Path], args: argparse.Namespace, extra: list[str]) -> Iterator[str]:
    """`hfadapt serve` in a subprocess (warmed up); its URL."""
    import httpx

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "hfadapt", "serve", *[f"{k}={v}" for k, v in runs.items()], "--port", str(args.port), *extra]
    url = f"http://127.0.0.1:{args.port}"
    with open(root / "server.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 180
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not start:\n" + (root / "server.log").read_text())
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.3)
            load_test(url, make_requests(24, list(runs)), 8, args.max_tokens)  # warm-up
            yield url
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def run(root: Path, args: argparse.Namespace) -> int:
    import httpx
    import torch

    torch.set_num_threads(args.threads)
    base = build_base(root)
    runs = train_adapters(root, base)
    names = list(runs)
    levels = [int(x) for x in args.levels.split(",")]
    seq_requests = make_requests(args.sequential_requests, names)
    lat, wall, seq_answers = sequential(runs, seq_requests, args.max_tokens)
    rows = [("sequential loop", len(seq_requests) / wall, pct(lat, 50), pct(lat, 99))]
    expected = dict(zip(seq_requests, seq_answers))

    mismatches = 0
    with server(root, runs, args, []) as url:
        for c in levels:
            reqs = make_requests(args.requests if c > 1 else args.sequential_requests, names)
            lat, wall, answers = load_test(url, reqs, c, args.max_tokens)
            mismatches += sum(a != expected[r] for r, a in zip(reqs, answers) if r in expected)
            rows.append((f"server, concurrency {c}", len(reqs) / wall, pct(lat, 50), pct(lat, 99)))
    with server(root, runs, args, ["--max-batch-size", "1"]) as url:  # the same server taking one request at a time
        lat, wall, _ = load_test(url, make_requests(args.requests, names), 16, args.max_tokens)
        rows.append(("one at a time, conc. 16", len(lat) / wall, pct(lat, 50), pct(lat, 99)))

    print(f"\nhfadapt serve, 3 LoRA adapters of one GPT-2 (n_embd 128, 4 layers), chat, greedy, max_tokens {args.max_tokens}, "
          f"{args.threads} torch thread(s); load {machine_load()}")
    print(f"{'':26} {'req/s':>8} {'p50 ms':>9} {'p99 ms':>9} {'x seq':>7}")
    for label, rps, p50, p99 in rows:
        print(f"{label:26} {rps:8.1f} {p50 * 1000:9.1f} {p99 * 1000:9.1f} {rps / rows[0][1]:7.2f}")
    by = {label: (rps, p99) for label, rps, _, p99 in rows}
    if "server, concurrency 16" in by:
        rps, p99 = by["server, concurrency 16"]
        print(f"concurrency 16: {rps / rows[0][1]:.2f}x the sequential loop's requests/s (goal 3x); p99 {p99 * 1000:.0f} ms vs "
              f"{by['one at a time, conc. 16'][1] * 1000:.0f} ms for the same server one request at a time under the same load")
    print(f"answers equal to the sequential loop's: {'yes' if mismatches == 0 else f'no, {mismatches} differ'}")
    return 0 if mismatches == 0 else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=192, help="requests per concurrency level above 1")
    p.add_argument("--sequential-requests", type=int, default=48, help="requests of the sequential loop and of concurrency 1")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--levels", default="1,8,16,32")
    p.add_argument("--port", type=int, default=8765)
    args = p.parse_args()
    return in_temp_root("hfadapt-bench-serve-", lambda root: run(root, args))


if __name__ == "__main__":
    sys.exit(main())
