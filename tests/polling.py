"""Waiting in tests for a state that a real process reaches on its own."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["until"]

T = TypeVar("T")


def until(check: Callable[[], T | None], timeout: float, what: str, *, interval: float = 0.1) -> T:
    """``check()``'s first truthy answer, polled every ``interval`` s; AssertionError naming
    ``what`` and the last answer if none came within ``timeout`` s (a bound on a hang, not a
    speed claim)."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:g} s (last: {last!r})")
