"""A discrete-event asyncio loop: virtual time jumps to the next timer when every task waits.

Used by the pre-pull scheduler's tests and benchmark to simulate hours of pulls in milliseconds
with the real scheduler code. Only the loop's clock is virtual: ``asyncio.sleep``,
``loop.call_later``, ``asyncio.timeout`` and
:class:`~agent.cluster.prepull.scheduler.RealClock` (which reads ``loop.time()``) all follow it.

How: the loop asks its selector to wait ``timeout`` seconds only when no callback is ready, and
``timeout`` is exactly the gap to the earliest timer. The selector polls real file descriptors
without blocking and, when none is ready, advances the virtual clock by ``timeout`` instead of
sleeping. A loop with no timer, no ready callback and no I/O can never wake up again: that raises
:class:`VirtualDeadlock` (after a short real grace period for other threads) instead of hanging.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["VirtualDeadlock", "VirtualTimeLoop", "run_virtual"]

_T = TypeVar("_T")


class VirtualDeadlock(RuntimeError):
    """Every task waits and no timer is scheduled: the simulated program can never progress."""


class _VirtualSelector(selectors.DefaultSelector):
    def __init__(self, start: float, grace: float) -> None:
        super().__init__()
        self.now = start
        self._grace = grace

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        if timeout is None:
            ready = super().select(self._grace)  # only another thread could still wake us
            if not ready:
                raise VirtualDeadlock("every task waits and nothing is scheduled")
            return ready
        self.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` is virtual and advances only when the loop is idle."""

    def __init__(self, start: float = 0.0, deadlock_grace: float = 0.5) -> None:
        self._virtual = _VirtualSelector(start, deadlock_grace)
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now


def run_virtual(main: Coroutine[Any, Any, _T], *, start: float = 0.0) -> _T:
    """Run ``main`` to completion on a fresh :class:`VirtualTimeLoop`; cancel leftovers; close."""
    loop = VirtualTimeLoop(start)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            if leftovers:
                loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
