"""The one exception type users see as a clean one-line message."""

from __future__ import annotations


class HfadaptError(Exception):
    """An error the user can fix: the CLI prints it on one line and exits non-zero.

    The message must name what is wrong and where (recipe field path and file, dataset
    column and row, or file path) so that no traceback is needed.
    """
