"""The one exception type users see as a clean one-line message."""

from __future__ import annotations


class HfadaptError(Exception):
    """An error the user can fix: the CLI prints it on one line and exits non-zero.

    The message must name what is wrong and where (recipe field path and file, dataset
    column and row, or file path) so that no traceback is needed.
    """


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none): library errors
    often carry pages of detail that a one-line CLI error must not print."""
    return (str(e).strip() or type(e).__name__).splitlines()[0]
