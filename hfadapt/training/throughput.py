"""How fast a run went and how much memory it took: measured around the training loop.

A `Meter` counts, per process, the examples and the task's units (tokens, audio seconds) of every
micro-batch, and splits the loop's wall time into waiting for data, evaluation, checkpointing and
the rest (forward, backward, optimizer step: "model"). Counting costs one tiny device op per
micro-batch (a sum over the attention mask, kept on the device: no synchronisation); times are
`perf_counter` reads.

Across processes (`totals`): examples and units are summed (each process counts its own shard,
so every example counts once; the few examples Accelerate repeats to even out the last batch of
an epoch are counted, since the model processed them); the wall time is the slowest process's;
the time shares are the mean over processes; memory peaks are the largest process's (RSS) and
one figure per device (CUDA).

On GPU, kernels run asynchronously: time is charged to a phase when the host reaches the next
synchronisation (the loss `.item()` at every optimizer step), so data-wait is the time the
host blocked on the dataloader, which the device may have partly overlapped with queued work.

A resumed run: the figures cover the whole run, i.e. the sessions that produced the final
weights. Each checkpoint stores the totals up to its step (TrainerState.perf); a resumed session
adds its own to those of the checkpoint it starts from. Work done after the last checkpoint of a
killed session was redone, so it is not counted; `sessions` says how many sessions contributed.
Peaks are the maximum over the sessions.
"""

from __future__ import annotations

import resource
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

from hfadapt.tasks.base import count_tokens

if TYPE_CHECKING:
    from accelerate import Accelerator

    from hfadapt.tasks.base import Processor, Task

MB = 1024 * 1024


def peak_rss_bytes() -> int:
    """This process's resident-set high-water mark (ru_maxrss: kilobytes on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


# What a micro-batch holds besides examples, for tasks that do not say: Task.count_units' default.
default_units = count_tokens


def batch_size(batch: Mapping[str, Any]) -> int:
    for value in (batch.values() if hasattr(batch, "values") else ()):  # dict or BatchEncoding
        shape = getattr(value, "shape", None)
        if shape is not None and len(shape) > 0:
            return int(shape[0])
    return 0


def unit_counter(task: Task, processor: Processor | None = None) -> Callable[[dict], dict[str, Any]]:
    """The task's `count_units(batch, processor) -> {unit: amount}` (e.g. an audio task:
    {"audio_seconds": ...}; by default the non-pad tokens of text batches), bound to the processor."""
    return lambda batch: task.count_units(batch, processor)


class Meter:
    """Counters of one training session on one process; `base` holds the totals of earlier sessions."""

    def __init__(self, count_units: Callable[[dict], dict[str, Any]] = default_units, base: dict[str, Any] | None = None) -> None:
        self.count_units = count_units
        self.base = dict(base or {})
        self.samples = 0
        self.units: dict[str, Any] = {}
        self.data_s = self.eval_s = self.checkpoint_s = self.generate_s = 0.0
        self.start_time: float | None = None
        self.start_step = 0
        self.steps = 0

    # ---- during the loop ----------------------------------------------------------------------
    def start(self, step: int) -> None:
        self.start_time, self.start_step = time.perf_counter(), step

    def batches(self, loader: Iterable) -> Iterator[Any]:
        """Iterate `loader`, charging the time spent waiting for each batch to data."""
        it = iter(loader)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                self.data_s += time.perf_counter() - t0
                return
            self.data_s += time.perf_counter() - t0
            yield batch

    def count(self, batch: dict) -> None:
        self.samples += batch_size(batch)
        for key, value in self.count_units(batch).items():
            self.units[key] = self.units[key] + value if key in self.units else value

    def timed(self, phase: str) -> "_Phase":
        return _Phase(self, phase)

    # ---- totals --------------------------------------------------------------------------------
    def totals(self, accelerator: Accelerator, step: int) -> dict[str, Any]:
        """Whole-run totals up to `step`: this session over all processes plus `base`. A collective:
        every process must call it."""
        import torch

        wall = time.perf_counter() - (self.start_time if self.start_time is not None else time.perf_counter())
        device = accelerator.device
        unit_names = sorted(self.units)
        sums = torch.tensor(
            [float(self.samples)] + [float(self.units[k]) for k in unit_names], dtype=torch.float64, device=device
        )
        means = torch.tensor([self.data_s, self.eval_s, self.checkpoint_s, self.generate_s], dtype=torch.float64, device=device)
        maxes = torch.tensor([wall, float(peak_rss_bytes())], dtype=torch.float64, device=device)
        if accelerator.num_processes > 1:
            sums = accelerator.reduce(sums, reduction="sum")
            means = accelerator.reduce(means, reduction="mean")
            maxes = accelerator.gather(maxes[None]).max(dim=0).values  # accelerate's reduce knows sum and mean only
        cuda = _cuda_peaks(accelerator)
        b = self.base
        out: dict[str, Any] = {
            "sessions": int(b.get("sessions", 0)) + 1,
            "wall_s": b.get("wall_s", 0.0) + maxes[0].item(),
            "data_s": b.get("data_s", 0.0) + means[0].item(),
            "eval_s": b.get("eval_s", 0.0) + means[1].item(),
            "checkpoint_s": b.get("checkpoint_s", 0.0) + means[2].item(),
            "generate_s": b.get("generate_s", 0.0) + means[3].item(),
            "steps": int(b.get("steps", 0)) + (step - self.start_step),
            "samples": int(b.get("samples", 0)) + int(round(sums[0].item())),
            "units": dict(b.get("units", {})),
            "peak_rss_bytes": max(int(b.get("peak_rss_bytes", 0)), int(maxes[1].item())),
        }
        for k, v in zip(unit_names, sums[1:].tolist()):
            out["units"][k] = out["units"].get(k, 0) + v
        if cuda:
            before = b.get("peak_cuda_bytes") or []
            out["peak_cuda_bytes"] = [max(c, before[i] if i < len(before) else 0) for i, c in enumerate(cuda)]
        return out


class _Phase:
    def __init__(self, meter: Meter, phase: str) -> None:
        self.meter, self.phase = meter, phase

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        attr = f"{self.phase}_s"
        setattr(self.meter, attr, getattr(self.meter, attr) + time.perf_counter() - self.t0)


def _cuda_peaks(accelerator: Accelerator) -> list[int]:
    """Peak allocated CUDA memory of every process's device, in process order ([] without CUDA)."""
    import torch

    if accelerator.device.type != "cuda":
        return []
    peak = torch.tensor([float(torch.cuda.max_memory_allocated(accelerator.device))], dtype=torch.float64, device=accelerator.device)
    if accelerator.num_processes > 1:
        peak = accelerator.gather(peak)
    return [int(v) for v in peak.tolist()]


def figures(totals: dict[str, Any]) -> dict[str, float]:
    """The totals as metrics.json's `perf/` figures: time, rates, shares of wall time, peaks in MiB."""
    wall = float(totals.get("wall_s", 0.0))
    if not totals or wall <= 0:
        return {}
    out: dict[str, float] = {
        "train_time_s": wall,
        "samples": int(totals["samples"]),
        "samples_per_s": totals["samples"] / wall,
        "steps_per_s": totals["steps"] / wall,
    }
    for unit, amount in sorted(totals.get("units", {}).items()):
        out[unit] = int(amount) if float(amount).is_integer() else amount
        out[f"{unit}_per_s"] = amount / wall
    data, evaluation, checkpoint = (float(totals.get(k, 0.0)) for k in ("data_s", "eval_s", "checkpoint_s"))
    out["data_share"] = data / wall
    out["eval_share"] = evaluation / wall
    out["checkpoint_share"] = checkpoint / wall
    generate = float(totals.get("generate_s", 0.0))
    if generate > 0:  # online-rl: sampling completions, apart from the training passes
        out["generate_share"] = generate / wall
    out["model_share"] = max(0.0, 1.0 - out["data_share"] - out["eval_share"] - out["checkpoint_share"] - generate / wall)
    out["peak_rss_mb"] = round(totals.get("peak_rss_bytes", 0) / MB, 1)
    for i, peak in enumerate(totals.get("peak_cuda_bytes") or []):
        out[f"peak_cuda_mb_{i}"] = round(peak / MB, 1)
    out["sessions"] = int(totals.get("sessions", 1))
    return out


def summary_line(perf: dict[str, float]) -> str:
    """One line for the end of training: time, rates, where the time went, peak memory."""
    if not perf:
        return ""
    parts = [f"trained in {perf['train_time_s']:.1f} s", f"{perf['samples_per_s']:.1f} samples/s", f"{perf['steps_per_s']:.2f} steps/s"]
    parts += [f"{v:.1f} {k[:-6].replace('_', ' ')}/s" for k, v in perf.items() if k.endswith("_per_s") and k not in ("samples_per_s", "steps_per_s")]
    generate = f" / generate {100 * perf['generate_share']:.0f}%" if "generate_share" in perf else ""
    parts.append(f"time: data {100 * perf['data_share']:.0f}%{generate} / model {100 * perf['model_share']:.0f}% / eval {100 * perf['eval_share']:.0f}%")
    mem = f"peak RSS {perf['peak_rss_mb']:.0f} MiB"
    cuda = [v for k, v in perf.items() if k.startswith("peak_cuda_mb_")]
    if cuda:
        mem += ", peak CUDA " + " / ".join(f"{v:.0f}" for v in cuda) + " MiB"
    parts.append(mem)
    if perf.get("sessions", 1) > 1:
        parts.append(f"{int(perf['sessions'])} sessions")
    return "hfadapt: " + " | ".join(parts)
