"""train.compile: torch.compile of the model's training forward, with a fallback and a clock.

Only the training forward is compiled (evaluation and saving use the plain module, which shares
its parameters). Where compiling can't work, or the first compiled call fails, training goes on
eagerly and one line says why. The clock splits the time of the steps that compiled a graph from
the steady-state step time, so compile cost is reported apart from what it buys.
"""

from __future__ import annotations

import shutil
import statistics
import time
from typing import TYPE_CHECKING, Any

from hfadapt.core.errors import first_line

if TYPE_CHECKING:
    import torch

    from hfadapt.core.recipe import Recipe


def compile_blocker(recipe: "Recipe", device_type: str) -> str | None:
    """Why torch.compile would not work for this run, or None."""
    import torch

    if not hasattr(torch, "compile"):
        return "this torch has no torch.compile"
    if recipe.model.quantization != "none":
        return f"quantized ({recipe.model.quantization}) bitsandbytes layers don't compile"
    if device_type == "cpu" and not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")):
        return "the CPU inductor backend needs a C compiler (cc/gcc/clang) on PATH"
    if device_type == "mps":
        return "inductor does not support MPS training here"
    return None


class CompiledForward:
    """Calls the compiled model; on a failure at compile time, the eager model from then on."""

    def __init__(self, model: "torch.nn.Module", verbose: bool) -> None:
        import torch

        self.eager = model
        self.compiled = torch.compile(model)
        self.verbose = verbose
        self.failed: str | None = None
        self.step_times: list[float] = []  # per micro-batch: forward + backward + optimizer
        self.compiling: list[bool] = []  # whether a graph was compiled during it

    def __call__(self, **batch: Any) -> Any:
        if self.failed is not None:
            return self.eager(**batch)
        try:
            return self.compiled(**batch)
        except Exception as e:  # noqa: BLE001 - any compiler failure: train on, eagerly
            import torch

            self.failed = first_line(e)[:200]
            torch._dynamo.reset()
            if self.verbose:
                print(f"hfadapt: train.compile: falling back to eager: {type(e).__name__}: {self.failed}")
            return self.eager(**batch)

    # ---- the clock ----------------------------------------------------------------------------------
    @staticmethod
    def graphs() -> int:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])

    def start(self) -> tuple[float, int]:
        return time.perf_counter(), self.graphs()

    def stop(self, mark: tuple[float, int]) -> None:
        self.step_times.append(time.perf_counter() - mark[0])
        self.compiling.append(self.graphs() != mark[1] or len(self.step_times) == 1)

    def figures(self) -> dict[str, float]:
        """compile_s: the compiling steps' time beyond a steady step; steady_step_s: median of the others."""
        steady = [t for t, c in zip(self.step_times, self.compiling) if not c]
        if not self.step_times:
            return {}
        median = statistics.median(steady) if steady else 0.0
        extra = sum(max(0.0, t - median) for t, c in zip(self.step_times, self.compiling) if c)
        return {"compile_s": extra, "steady_step_s": median, "compiled_graphs": float(self.graphs()), "compile_fallback": float(self.failed is not None)}


def summary(fig: dict[str, float], failed: str | None) -> str:
    if failed is not None:
        return f"hfadapt: train.compile: fell back to eager ({failed})"
    return (
        f"hfadapt: train.compile: {int(fig.get('compiled_graphs', 0))} graph(s), compiling took ~{fig.get('compile_s', 0.0):.1f} s; "
        f"steady step {1000 * fig.get('steady_step_s', 0.0):.1f} ms"
    )
