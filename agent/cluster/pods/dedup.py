"""One verdict per image x node x pull-secret fingerprint for a while: a TTL cache with
single-flight, so a thousand failing replicas of one image on one node make one pull test.

A key holds no secret: the fingerprint is a keyed hash of the credentials
(:func:`agent.node.runner.credential_fingerprint`). Failures are kept like successes (a storm
against a broken registry must not become a storm of pulls). A caller that goes away does not
cancel a test others wait for. Bounded: at most ``max_entries`` verdicts (least recently used
out first) and, being keyed like the cache, at most as many tests in flight as distinct keys.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from cachetools import TTLCache

__all__ = ["DedupKey", "Shared", "VerdictCache"]

V = TypeVar("V")

#: how a caller got its value: run for it, reused from the cache, or shared with a running twin
Shared = Literal["fresh", "reused", "shared"]


@dataclass(frozen=True)
class DedupKey:
    image: str  # the normalised reference
    node: str
    credentials: str  # a keyed fingerprint, or "anonymous"


class VerdictCache(Generic[V]):
    """``get(key, run)``: the value for ``key``, computed at most once per ``ttl`` seconds."""

    def __init__(self, ttl: float, *, max_entries: int = 10_000) -> None:
        if not ttl > 0 or max_entries < 1:
            raise ValueError("ttl must be positive and max_entries at least 1")
        self._done: TTLCache[DedupKey, V] = TTLCache(
            maxsize=max_entries, ttl=ttl, timer=time.monotonic
        )
        self._running: dict[DedupKey, asyncio.Task[V]] = {}
        self.fresh_runs = 0

    def peek(self, key: DedupKey) -> V | None:
        """The cached value, if any (no test is started)."""
        return self._done.get(key)

    async def get(self, key: DedupKey, run: Callable[[], Awaitable[V]]) -> tuple[V, Shared]:
        hit = self._done.get(key)
        if hit is not None:
            return hit, "reused"
        task = self._running.get(key)
        how: Shared = "shared"
        if task is None:
            task = asyncio.create_task(self._run(key, run))
            self._running[key] = task
            task.add_done_callback(lambda _t: self._running.pop(key, None))
            how = "fresh"
        return await asyncio.shield(task), how

    async def _run(self, key: DedupKey, run: Callable[[], Awaitable[V]]) -> V:
        value = await run()
        self.fresh_runs += 1
        self._done[key] = value
        return value

    def forget(self, key: DedupKey) -> None:
        """Drop a verdict (e.g. one that was an error of pullcheck's own, not of the pull)."""
        self._done.pop(key, None)

    def __len__(self) -> int:
        return len(self._done)
