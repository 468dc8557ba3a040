"""status.json: what a run is doing, so `hfadapt runs` can tell running, finished, failed and
interrupted runs apart.

Written by the main process: "running" once setup has succeeded (with the process id, host and
parameter counts), then "finished" or "failed" (the exception, and the step it was raised at) when
training ends, or "pruned" (the reason in `error`) when `hfadapt tune` stopped it. A killed process writes nothing: its status still says "running" with a process id
that is gone; `hfadapt runs` then reports it as interrupted, resumable when it has a complete
checkpoint. A setup failure leaves no run directory at all (training.py), so no status either.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

from hfadapt.rundir.layout import RunDir, RunState


def write_status(run_dir: Path, state: str, is_main: bool, **fields: Any) -> None:
    """Update status.json (never raises: the status must not break a run). Only the main process
    writes (`is_main`: the accelerator's is_main_process); others return at once."""
    if not is_main:
        return
    run = RunDir(run_dir)
    try:
        status = replace(run.read_status(), **fields, state=state, updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        if state == "running":
            status = replace(status, pid=os.getpid(), host=socket.gethostname(), error=None)
        path = run.status_file
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(status.to_json(), indent=2))
        os.replace(tmp, path)
    except OSError:
        pass


class RunPruned(Exception):
    """Raised from a training callback to stop a run cleanly as pruned (hfadapt tune's pruner): the
    run's status becomes "pruned", with the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@contextmanager
def recorded(run_dir: Path, state: RunState, is_main: bool) -> Iterator[None]:
    """Training after setup: status "finished" on success, "failed" (or "interrupted" on Ctrl-C, "pruned"
    when a callback prunes it) when it raises."""
    try:
        yield
    except RunPruned as e:
        write_status(run_dir, "pruned", is_main, step=state.global_step, error=e.reason[:500])
        raise
    except KeyboardInterrupt:
        write_status(run_dir, "interrupted", is_main, step=state.global_step)
        raise
    except BaseException as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else ""
        write_status(run_dir, "failed", is_main, step=state.global_step, error=f"{type(e).__name__}: {message}"[:500])
        raise
    write_status(run_dir, "finished", is_main, step=state.global_step)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
