"""What a running process holds, read from ``/proc``: resident memory and open files.

The benchmarks' and the storm test's one reader (memory as a user meets it: ``VmRSS`` of the
running server, its peak ``VmHWM``).
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["open_fds", "reset_peak", "status_mib"]

_KEYS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")


def status_mib(pid: int) -> dict[str, float]:
    """``VmRSS``, its peak ``VmHWM`` and its split ``RssAnon`` (private heap) / ``RssFile``
    (mapped files, shared libraries) of process ``pid``, in MiB (nan when the kernel omits one)."""
    text = Path(f"/proc/{pid}/status").read_text()
    found = {}
    for key in _KEYS:
        match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
        found[key] = int(match.group(1)) / 1024 if match else float("nan")
    return found


def reset_peak(pid: int) -> None:
    """Make ``VmHWM`` of process ``pid`` its current RSS (so ``VmHWM`` is the peak from now on)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def open_fds(pid: int) -> int:
    """How many file descriptors process ``pid`` has open."""
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
