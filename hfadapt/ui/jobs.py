"""Training runs started from the page: each one a separate `hfadapt train` process (or `accelerate
launch` of it), so the UI stays responsive and a crash takes only its own run down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hfadapt.core.errors import HfadaptError
from hfadapt.rundir.layout import RunDir

UI_DIR = ".ui"  # under the runs folder: the recipes launched and each process's output (not runs: no recipe.yaml)


@dataclass
class Job:
    run: Path
    process: subprocess.Popen
    log: Path
    started: float


class Jobs:
    def __init__(self, runs_root: Path) -> None:
        self.root = Path(runs_root).resolve()
        self.jobs: dict[Path, Job] = {}

    def _spawn(self, run: Path, recipe_file: Path, launcher: Path | None, resume: bool) -> Job:
        current = self.jobs.get(run)
        if current is not None and current.process.poll() is None:
            try:  # a stopped run may still be finishing its exit after writing its checkpoint
                current.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        if current is not None and current.process.poll() is None:
            raise HfadaptError(f"train: {run.name} is already training")
        logs = self.root / UI_DIR / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{run.name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
        train = ["-m", "hfadapt", "train", str(recipe_file)] + (["--resume"] if resume else [])
        if launcher is not None:
            cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(launcher)] + train
        else:
            cmd = [sys.executable] + train
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(log, "w", encoding="utf-8") as out:
            process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                       cwd=os.getcwd())
        job = self.jobs[run] = Job(run, process, log, time.time())
        return job

    def launch(self, recipe: Any, launcher: Path | None = None) -> Job:
        """Start a validated recipe. Its run must be new: the train command refuses an existing one too,
        but here before any process starts."""
        run = recipe.output_dir.resolve()
        if RunDir(run).is_started() and not recipe.output.overwrite:
            raise HfadaptError(f"output.dir: {run} already holds a run; resume it, or choose another name or output.dir")
        folder = self.root / UI_DIR / "recipes"
        folder.mkdir(parents=True, exist_ok=True)
        file = folder / f"{recipe.run_name}.yaml"
        file.write_text(recipe.to_yaml(), encoding="utf-8")  # paths resolved: the file runs from anywhere
        return self._spawn(run, file, launcher, resume=False)

    def resume(self, run: Path, launcher: Path | None = None) -> Job:
        run = Path(run).resolve()
        rd = RunDir(run)
        if not rd.is_run():
            raise HfadaptError(f"resume: {run} is not a run")
        if not rd.checkpoints():
            raise HfadaptError(f"resume: {run.name} has no complete checkpoint to continue from")
        return self._spawn(run, rd.recipe_file, launcher, resume=True)

    def stop(self, run: Path) -> None:
        """SIGTERM: training saves a checkpoint at the step it reached and exits (resumable)."""
        job = self.jobs.get(Path(run).resolve())
        if job is None or job.process.poll() is not None:
            raise HfadaptError(f"stop: {Path(run).name} is not training from this page")
        job.process.send_signal(signal.SIGTERM)

    def active(self) -> list[Path]:
        return [run for run, job in self.jobs.items() if job.process.poll() is None]

    def outcome(self, run: Path) -> str | None:
        """The last `hfadapt:` line a finished process printed (its error or its stop), None while it runs."""
        job = self.jobs.get(Path(run).resolve())
        if job is None or job.process.poll() is None:
            return None
        lines = [line for line in _tail(job.log).splitlines() if line.startswith("hfadapt: ")]
        if job.process.returncode == 0:
            return None
        return lines[-1] if lines else f"train exited with status {job.process.returncode} (log: {job.log})"

    def stop_all(self) -> None:
        for run in self.active():
            self.stop(run)


def _tail(path: Path, size: int = 8192) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - size))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""
