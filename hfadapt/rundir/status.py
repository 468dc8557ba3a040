"""status.json: what a run is doing, so `hfadapt runs` can tell running, finished, failed and
interrupted runs apart.

Written by the main process: "running" once setup has succeeded (with the process id, host and
parameter counts), then "finished" or "failed" (the exception, and the step it was raised at) when
training ends. A killed process writes nothing: its status still says "running" with a process id
that is gone; `hfadapt runs` then reports it as interrupted, resumable when it has a complete
checkpoint. A setup failure leaves no run directory at all (training.py), so no status either.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

STATUS_FILE = "status.json"


def read_status(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((Path(run_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_status(run_dir: Path, state: str, **fields: Any) -> None:
    """Update status.json (main process only; never raises: the status must not break a run)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    path = Path(run_dir) / STATUS_FILE
    try:
        data = read_status(run_dir)
        data.update(fields, state=state, updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        if state == "running":
            data.update(pid=os.getpid(), host=socket.gethostname())
            data.pop("error", None)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, path)
    except OSError:
        pass


@contextmanager
def recorded(run_dir: Path, state: Any) -> Iterator[None]:
    """Training after setup: status "finished" on success, "failed" (or "interrupted" on Ctrl-C) when it raises."""
    try:
        yield
    except KeyboardInterrupt:
        write_status(run_dir, "interrupted", step=state.global_step)
        raise
    except BaseException as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else ""
        write_status(run_dir, "failed", step=state.global_step, error=f"{type(e).__name__}: {message}"[:500])
        raise
    write_status(run_dir, "finished", step=state.global_step)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
