"""Asking many agents at once: at most ``max_in_flight`` calls in flight, answers in the order
they arrive (a slow node never holds back the others)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TypeVar

__all__ = ["fan_out"]

T = TypeVar("T")
E = TypeVar("E")


async def fan_out(
    targets: Iterable[T], ask: Callable[[T], Awaitable[E]], *, max_in_flight: int
) -> AsyncIterator[E]:
    """``ask(target)`` for every target, as each finishes. ``ask`` bounds its own time (the
    per-node deadline) and never raises; calls still running when the caller stops iterating
    (a client that went away) are cancelled."""
    if max_in_flight < 1:
        raise ValueError("max_in_flight must be at least 1")
    gate = asyncio.Semaphore(max_in_flight)

    async def one(target: T) -> E:
        async with gate:
            return await ask(target)

    tasks = [asyncio.create_task(one(target)) for target in targets]
    try:
        for finished in asyncio.as_completed(tasks):
            yield await finished
    finally:
        for task in tasks:
            task.cancel()
