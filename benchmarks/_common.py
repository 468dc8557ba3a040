"""Helpers shared by the benchmarks (run as scripts: `python benchmarks/NAME.py`)."""

from __future__ import annotations

import contextlib
import os
import random
import string
from pathlib import Path


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
