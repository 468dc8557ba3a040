"""Helpers shared by the benchmarks (run as scripts: `python benchmarks/NAME.py`)."""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import string
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable


def random_words(n_words: int, rng: random.Random) -> list[str]:
    """n distinct made-up lower-case words, sorted."""
    words: set[str] = set()
    while len(words) < n_words:
        words.add("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 9))))
    return sorted(words)


def window(marks: dict[int, tuple[float, float]], steps: int) -> dict[str, float]:
    """Wall and CPU (all threads of this process) seconds from the end of step 1 to the end of the last."""
    return {"loop": marks[steps][0] - marks[1][0], "loop_cpu": marks[steps][1] - marks[1][1]}



def machine_load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"
    except OSError:
        return "n/a"



@contextlib.contextmanager
def quiet(log: Path, enabled: bool):
    """Send banners and progress bars of a run to a log file (both variants alike)."""
    if not enabled:
        yield
        return
    with open(log, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        yield


def in_temp_root(prefix: str, bench: Callable[[Path], int]) -> int:
    """Run `bench(root)` in a fresh temporary folder with offline, private caches; the folder is removed after."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["HF_DATASETS_CACHE"] = str(root / "datasets-cache")
    try:
        return bench(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def chosen_variants(only: str, variants: Iterable[str]) -> list[str] | None:
    """The names given to --only, or None (after a line on stderr) when one of them is unknown."""
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in set(variants)]
    if unknown:
        print(f"unknown variant(s): {', '.join(unknown)}", file=sys.stderr)
        return None
    return names


def torch_setup(device: str, threads: int) -> None:
    """A CPU benchmark hides the GPUs from every variant alike (hfadapt and TRL would each take one);
    torch threads as asked; the libraries' progress bars and notices off."""
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import datasets
    import torch
    import transformers

    torch.set_num_threads(threads)
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()


def add_run_options(p: argparse.ArgumentParser, variants: Iterable[str], default: Iterable[str]) -> None:
    """The options every A/B loop benchmark takes: threads, device, reps, --only, --verbose."""
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--only", default=",".join(default), help=f"comma-separated, of: {', '.join(variants)}")
    p.add_argument("--verbose", action="store_true", help="show the runs' own output")


def parse_loop_options(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, refusing a warm-up that leaves no timed step."""
    cfg = p.parse_args(argv)
    if cfg.warm_steps >= cfg.steps:
        p.error("--warm-steps must be below --steps")
    return cfg
