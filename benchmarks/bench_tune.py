"""`hfadapt tune` throughput: trials per hour with --workers 2 vs 1, and the share of a trial spent
outside training.

Run by hand (not a test), from the repository root:

    python benchmarks/bench_tune.py [--trials 6] [--steps 20] [--workers 1 2]

Each variant is a fresh study of the shipped `text/tiny-sentiment-search` recipe (random tiny BERT,
generated CSV, no download) with `train.max_steps=--steps`, the pruner off (every trial trains to the
end, so the variants do the same work) and `--trials` trials, run through `hfadapt.tune` as the CLI
runs it (--workers K: K worker processes on one SQLite study).

Figures per variant:
  * trials/hour: trials / wall time of the whole `tune()` call (study creation, worker start-up,
    imports, all trials, best.yaml);
  * per trial: `seconds` (from taking the study lock to ask for the trial until it is told) and
    `seconds_in_train` (the `train()` call: data, model, loop, evaluation, saving) as the study
    records them; outside training = the difference: sampling, the SQLite round trips, validating
    the sampled recipe and the `hfadapt plan` memory check. The first trial of a process also pays
    the imports (torch, transformers, optuna), reported apart as the one-off start.
The share of a 30 s trial outside training is the steady per-trial overhead / 30 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import in_temp_root, machine_load  # noqa: E402


def run(root: Path, workers: int, trials: int, steps: int) -> dict[str, float]:
    from hfadapt import Recipe, tune

    recipe = Recipe.from_yaml(
        "text/tiny-sentiment-search",
        overrides=[f"output.dir={root / f'study-{workers}'}", f"train.max_steps={steps}", "search.pruner.type=none",
                   f"search.n_trials={trials}"],
    )
    log = root / f"tune-{workers}.log"
    start = time.perf_counter()
    with open(log, "w") as f:
        saved = os.dup(1)
        os.dup2(f.fileno(), 1)  # the trial lines of this process and of the worker processes
        try:
            study = tune(recipe, workers=workers)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
    wall = time.perf_counter() - start
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    outside = [t.user_attrs["seconds"] - t.user_attrs["seconds_in_train"] for t in done]
    firsts = {}  # each worker's first trial pays its imports
    for t in done:
        firsts.setdefault(t.user_attrs["pid"], t.number)
    steady = [o for t, o in zip(done, outside) if t.number not in firsts.values()]
    return {
        "trials": len(done),
        "wall_s": wall,
        "trials_per_hour": len(done) * 3600 / wall,
        "train_s": statistics.median(t.user_attrs["seconds_in_train"] for t in done),
        "outside_s": statistics.median(steady) if steady else float("nan"),
        "first_outside_s": statistics.median(o for t, o in zip(done, outside) if t.number in firsts.values()),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--steps", type=int, default=20, help="train.max_steps of each trial")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()

    def bench(root: Path) -> int:
        print(f"machine load {machine_load()}; {args.trials} trials of {args.steps} steps (text/tiny-sentiment-search)")
        print(f"{'workers':>7} {'wall s':>8} {'trials/h':>9} {'train s/trial':>14} {'outside s/trial':>16} {'first trial outside':>20}")
        results = {}
        for k in args.workers:
            r = results[k] = run(root, k, args.trials, args.steps)
            print(f"{k:>7} {r['wall_s']:>8.1f} {r['trials_per_hour']:>9.0f} {r['train_s']:>14.2f} {r['outside_s']:>16.3f} {r['first_outside_s']:>20.2f}")
        for k, r in results.items():
            print(f"--workers {k}: outside training {r['outside_s']:.3f} s per trial (steady) = {100 * r['outside_s'] / 30:.2f} % of a 30 s trial "
                  f"({100 * r['outside_s'] / (r['outside_s'] + r['train_s']):.1f} % of these {r['train_s']:.1f} s trials)")
        if 1 in results and 2 in results:
            print(f"--workers 2 vs 1: {results[2]['trials_per_hour'] / results[1]['trials_per_hour']:.2f}x trials/hour")
        return 0

    return in_temp_root("hfadapt-bench-tune-", bench)


if __name__ == "__main__":
    sys.exit(main())
