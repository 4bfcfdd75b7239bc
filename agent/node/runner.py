"""No stampedes: single-flight, bounded concurrency with a bounded queue, and a result TTL.

Identical tests — same image, mode and credential fingerprint — running at once share one CRI
pull; a finished result is reused for ``result_ttl`` seconds; at most ``pull_concurrency`` pulls
run at once and at most ``pull_queue`` wait, beyond which :class:`QueueFull` (HTTP 429) is raised.
A caller that goes away does not cancel a test others may be waiting for.

The result cache is ``cachetools.TTLCache`` (least recently used out first). Single-flight is
kept here: no library shares one running asyncio task between callers without cancelling it when
the first caller goes away.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from cachetools import TTLCache

from agent.credentials import Credential, Keyring
from agent.errors import PullcheckError
from agent.models import PullTestResult
from agent.pulltest import NodeSettings, PullTestRequest, run_pull_test

__all__ = ["Outcome", "PullTestRunner", "QueueFull", "TestKey", "credential_fingerprint"]

Outcome = Literal["fresh", "reused", "shared"]

_RESOLVE_CONCURRENCY: Final = 16  # resolve tests download nothing; they get a wider lane
_MAX_CACHED: Final = 512

# A key per process: fingerprints of credentials can't be compared across processes or reversed.
_FINGERPRINT_KEY = secrets.token_bytes(32)


def credential_fingerprint(credential: Credential | None, keyring: Keyring | None) -> str:
    """A short keyed hash naming the credentials of a request (``anonymous`` without any)."""
    parts: list[str] = []
    if credential is not None:
        parts.append(
            f"c\0{credential.username}\0{credential.password}\0{credential.identity_token}"
        )
    if keyring is not None:
        for key, cred in keyring.items():
            parts.append(f"k\0{key}\0{cred.username}\0{cred.password}\0{cred.identity_token}")
    if not parts:
        return "anonymous"
    digest = hmac.new(_FINGERPRINT_KEY, "\0\0".join(parts).encode(), hashlib.sha256)
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class TestKey:
    reference: str  # normalised
    mode: str
    credentials: str  # fingerprint


class QueueFull(PullcheckError):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"{retry_after:.0f} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class _Done:
    result: PullTestResult
    body: bytes


class PullTestRunner:
    def __init__(
        self,
        node: NodeSettings,
        *,
        concurrency: int = 2,
        queue: int = 8,
        ttl: float = 30.0,
        on_change: Callable[[int, int], None] | None = None,
    ) -> None:
        self.node = node
        self.ttl = ttl
        self._queue_limit = queue
        self._pulls = asyncio.Semaphore(concurrency)
        self._resolves = asyncio.Semaphore(_RESOLVE_CONCURRENCY)
        self._concurrency = concurrency
        self._active = 0
        self._waiting = 0
        self._inflight: dict[TestKey, asyncio.Task[_Done]] = {}
        # ttl 0: nothing is kept (TTLCache would keep expired entries until the next write)
        self._cache: TTLCache[TestKey, _Done] | None = (
            TTLCache(maxsize=_MAX_CACHED, ttl=ttl, timer=time.monotonic) if ttl > 0 else None
        )
        self._mean_seconds = 10.0  # running estimate of a pull's duration, for Retry-After
        self._on_change = on_change or (lambda _active, _waiting: None)
        self.fresh_runs = 0  # tests actually executed (for tests and benchmarks)

    def cached(self, key: TestKey) -> tuple[PullTestResult, bytes] | None:
        done = self._cache.get(key) if self._cache is not None else None
        return None if done is None else (done.result, done.body)

    async def run(
        self, key: TestKey, request: PullTestRequest
    ) -> tuple[PullTestResult, bytes, Outcome]:
        """The result of ``request``, fresh, reused from the TTL cache, or shared with a twin."""
        hit = self.cached(key)
        if hit is not None:
            return hit[0], hit[1], "reused"
        task = self._inflight.get(key)
        outcome: Outcome = "shared"
        if task is None:
            if request.mode == "pull" and self._full():
                raise QueueFull(self._retry_after())
            task = asyncio.create_task(self._execute(key, request))
            self._inflight[key] = task
            task.add_done_callback(lambda _t: self._inflight.pop(key, None))
            outcome = "fresh"
        done = await asyncio.shield(task)  # a caller leaving does not cancel the shared test
        return done.result, done.body, outcome

    def _full(self) -> bool:
        return self._active >= self._concurrency and self._waiting >= self._queue_limit

    def _retry_after(self) -> float:
        waves = (self._waiting + 1) / self._concurrency
        return max(1.0, math.ceil(waves * self._mean_seconds))

    async def _execute(self, key: TestKey, request: PullTestRequest) -> _Done:
        lane = self._pulls if request.mode == "pull" else self._resolves
        self._waiting += 1
        queued = True
        self._on_change(self._active, self._waiting)
        try:
            async with lane:
                self._waiting -= 1
                queued = False
                self._active += 1
                self._on_change(self._active, self._waiting)
                try:
                    started = time.monotonic()
                    result = await run_pull_test(request, self.node)
                    if request.mode == "pull":
                        elapsed = time.monotonic() - started
                        self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * elapsed
                finally:
                    self._active -= 1
        finally:
            if queued:
                self._waiting -= 1
            self._on_change(self._active, self._waiting)
        self.fresh_runs += 1
        done = _Done(result, result.model_dump_json().encode())
        # failures are reused too: a storm against a broken registry is not a storm of pulls
        if self._cache is not None:
            self._cache[key] = done
        return done
