"""A storm of concurrent requests at one agent, and what its process looked like meanwhile.

Used by ``tests/integration/test_cluster_faults.py`` (every answer must be 200 or 429 with
``Retry-After``; the agent's memory bounded) and ``bench/bench_agent_storm.py`` (the figures).

The mix (:func:`mix`) is what a busy node agent sees: pull tests (``mode=pull``) of images the
node has, spread over a few tags so that more distinct tests arrive than
``limits.pull_concurrency`` + ``limits.pull_queue`` admit (the rest are answered 429), and
connectivity, metrics and health requests beside them. Every request goes out at once, each on
its own connection (:func:`storm`).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

import httpx

__all__ = [
    "MAX_REQUESTS",
    "Call",
    "StormResult",
    "mix",
    "storm",
]

MAX_REQUESTS: Final = 20_000  # one storm's requests at most (each holds a socket)
_ERRORS_KEPT: Final = 10  # transport errors quoted in a result


@dataclass(frozen=True)
class Call:
    """One request of a storm: a GET of ``path`` with ``params``."""

    path: str
    params: tuple[tuple[str, str], ...] = ()


@dataclass
class StormResult:
    """What a storm got back: answers by status (``"error"`` for no answer), the seconds each
    took, 429s without ``Retry-After``, and the first transport errors."""

    statuses: Counter[str] = field(default_factory=Counter)
    by_path: dict[str, Counter[str]] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)
    missing_retry_after: int = 0
    errors: list[str] = field(default_factory=list)
    wall: float = 0.0

    def percentile(self, q: float) -> float:
        """The ``q`` quantile (0 < q < 1) of the requests' seconds (nan without requests)."""
        if not 0 < q < 1:
            raise ValueError(f"quantile must be between 0 and 1, not {q}")
        if len(self.seconds) < 2:
            return self.seconds[0] if self.seconds else float("nan")
        return statistics.quantiles(self.seconds, n=1000, method="inclusive")[round(q * 1000) - 1]


def mix(images: list[str], total: int) -> list[Call]:
    """``total`` calls: 40 % pull tests over ``images`` (round robin), 20 % each connectivity,
    metrics and health (``/healthz`` and ``/readyz`` alternately)."""
    if not 1 <= total <= MAX_REQUESTS:
        raise ValueError(f"total must be 1..{MAX_REQUESTS}, not {total}")
    if not images:
        raise ValueError("mix needs at least one image")
    calls = []
    for i in range(total):
        kind = i % 5
        if kind in (0, 1):
            image = images[(i // 5 * 2 + kind) % len(images)]
            calls.append(Call("/v1/pulltest", (("image", image), ("mode", "pull"))))
        elif kind == 2:
            calls.append(Call("/v1/connectivity"))
        elif kind == 3:
            calls.append(Call("/metrics"))
        else:
            calls.append(Call("/healthz" if i // 5 % 2 else "/readyz"))
    return calls


async def storm(url: str, calls: list[Call], token: str, *, timeout: float = 120) -> StormResult:
    """Send every call of ``calls`` to ``url`` at once, each on its own connection."""
    if not 1 <= len(calls) <= MAX_REQUESTS:
        raise ValueError(f"a storm is 1..{MAX_REQUESTS} calls, not {len(calls)}")
    result = StormResult()
    limits = httpx.Limits(max_connections=len(calls), max_keepalive_connections=0)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=timeout, limits=limits, trust_env=False
    ) as client:

        async def one(call: Call) -> None:
            started = time.perf_counter()
            try:
                reply = await client.get(call.path, params=list(call.params))
            except httpx.HTTPError as exc:
                status = "error"
                if len(result.errors) < _ERRORS_KEPT:
                    result.errors.append(f"{call.path}: {type(exc).__name__}: {exc}")
            else:
                status = str(reply.status_code)
                if reply.status_code == 429 and "retry-after" not in reply.headers:
                    result.missing_retry_after += 1
            result.seconds.append(time.perf_counter() - started)
            result.statuses[status] += 1
            result.by_path.setdefault(call.path, Counter())[status] += 1

        started = time.perf_counter()
        await asyncio.gather(*(one(call) for call in calls))
        result.wall = time.perf_counter() - started
    return result
