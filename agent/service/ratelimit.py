"""Per-client rate limiting: a token bucket per client, with a bounded table of clients."""

from __future__ import annotations

import math
import time
from collections import OrderedDict

__all__ = ["RateLimiter"]


class RateLimiter:
    """``per_minute`` requests per client on average, bursts of up to ``burst``.

    ``acquire`` returns 0 when the request may go on, else the seconds to wait (for
    ``Retry-After``). Clients not seen for a while fall out of the table (at most ``max_clients``).
    """

    def __init__(self, per_minute: int, burst: int, *, max_clients: int = 10_000) -> None:
        self.enabled = per_minute > 0
        self._rate = per_minute / 60.0
        self._burst = float(max(burst, 1))
        self._max = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when

    def acquire(self, client: str) -> float:
        if not self.enabled:
            return 0.0
        now = time.monotonic()
        tokens, last = self._buckets.pop(client, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self._rate
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return wait

    @staticmethod
    def retry_after(wait: float) -> str:
        return str(max(1, math.ceil(wait)))
