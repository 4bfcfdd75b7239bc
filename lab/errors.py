"""The one exception the lab raises."""

from __future__ import annotations

from pathlib import Path


class LabError(RuntimeError):
    """Something in the lab could not be started, checked or stopped.

    The message names the failing part and, for a daemon, ends with the tail of its log.
    """


def log_tail(path: Path, lines: int = 25) -> str:
    """Last ``lines`` lines of a log file, indented, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"    (no log at {path})"
    tail = text.splitlines()[-lines:]
    if not tail:
        return f"    (log {path} is empty)"
    return "\n".join(f"    {line}" for line in tail)
