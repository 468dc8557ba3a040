"""A run's progress as it trains, from its own files: train_log.jsonl (losses, learning rates,
evaluations, with times) and status.json (total steps)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfadapt.rundir.layout import RunDir


@dataclass
class Progress:
    step: int = 0
    total: int = 0
    eta_s: float | None = None
    curves: list[dict[str, Any]] = field(default_factory=list)  # {"step", "value", "series": "loss"/"lr"}
    evals: list[dict[str, Any]] = field(default_factory=list)  # {"step", metric: value, ...}

    def line(self) -> str:
        if not self.total:
            return "starting…"
        share = 100 * self.step / self.total
        eta = f", ETA {_duration(self.eta_s)}" if self.eta_s is not None and self.step < self.total else ""
        return f"step {self.step}/{self.total} ({share:.0f}%){eta}"


def read_progress(run: Path) -> Progress:
    rd = RunDir(run)
    entries = _last_per_step(rd.read_live_log())
    out = Progress(total=rd.read_status().total_steps or 0)
    times: list[tuple[int, float]] = []
    for e in entries:
        step = e.get("step")
        if not isinstance(step, int):
            continue
        if "train/loss" in e:
            out.curves.append({"step": step, "value": e["train/loss"], "series": "loss"})
            out.curves.append({"step": step, "value": e.get("train/lr"), "series": "lr"})
            out.total = e.get("total_steps") or out.total
            out.step = max(out.step, step)
            if "time" in e:
                times.append((step, e["time"]))
        evals = {k.removeprefix("eval/"): v for k, v in e.items() if k.startswith("eval/")}
        if evals:
            out.evals.append({"step": step, **evals})
    state = rd.latest_state(lenient=True) if rd.state_file.is_file() else None
    if state is not None:  # finished: the run's own final figures
        out.step, out.total = state.global_step, state.total_steps or out.total
    out.eta_s = _eta(times, out.total)
    return out


def _last_per_step(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A resumed run logs the steps after its checkpoint again: keep the latest line of each (step, kind)."""
    seen: dict[tuple[Any, bool], dict[str, Any]] = {}
    for e in entries:
        seen[(e.get("step"), any(k.startswith("eval/") for k in e))] = e
    return sorted(seen.values(), key=lambda e: (e.get("step") or 0, any(k.startswith("eval/") for k in e)))


def _eta(times: list[tuple[int, float]], total: int) -> float | None:
    """Seconds left at the rate of the latest session (the logs since the last resume)."""
    if len(times) < 2 or not total:
        return None
    (s0, t0), (s1, t1) = times[-min(len(times), 5)], times[-1]
    if s1 <= s0 or t1 <= t0:
        return None
    rate = (t1 - t0) / (s1 - s0)
    return max(0.0, (total - s1) * rate - (time.time() - t1))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds}s" if seconds < 60 else f"{seconds // 60}m{seconds % 60:02d}s"
