"""What the UI refuses: another address than loopback without a password, and typed paths outside the
working directory and the runs folder."""

from __future__ import annotations

import os
from pathlib import Path

from hfadapt.core.errors import HfadaptError

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def auth_pair(auth: str | None, host: str) -> tuple[str, str] | None:
    """--auth USER:PASS (or HFADAPT_UI_AUTH); required to listen on anything but loopback."""
    auth = auth or os.environ.get("HFADAPT_UI_AUTH") or None
    if auth is None:
        if host not in LOOPBACK:
            raise HfadaptError(f"ui --host {host}: other machines could reach the UI; give --auth USER:PASS (or set HFADAPT_UI_AUTH)")
        return None
    user, sep, password = auth.partition(":")
    if not sep or not user or not password:
        raise HfadaptError("ui --auth: expected USER:PASS")
    return user, password


def confined(typed: str, roots: list[Path], what: str) -> Path:
    """A path typed into the page, only inside one of `roots` (the working directory, the runs folder)."""
    typed = (typed or "").strip()
    if not typed:
        raise HfadaptError(f"{what}: give a path")
    if ".." in Path(typed).parts:
        raise HfadaptError(f"{what}: {typed}: '..' is not allowed; give a path inside {' or '.join(str(r) for r in roots)}")
    path = Path(typed).expanduser()
    resolved = (path if path.is_absolute() else Path.cwd() / path).resolve()
    for root in roots:
        if resolved == root.resolve() or resolved.is_relative_to(root.resolve()):
            return resolved
    raise HfadaptError(f"{what}: {typed} is outside the folders the UI may use ({', '.join(str(r) for r in roots)})")
