"""Per-registry concurrency shared by every pre-pull job run, and each job's rate-limit pauses.

One :class:`RegistryCaps` lives in the aggregator and is passed to every job run, so the caps
hold across jobs. See the class docstring for how jobs with different caps interact.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["RegistryCaps"]


@dataclass
class _Waiter:
    cap: int
    wake: Callable[[], None]


def _monotonic() -> float:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


class RegistryCaps:
    """Pulls in flight per registry host, counted across all the job runs that share this object.

    **Caps of different jobs: per-job caps over one shared counter.** Each registry host has one
    counter of pre-pulls in flight, whichever job started them. A job may start a pull from a
    host only while that counter is below the job's own ``per_registry`` (lowered to the host's
    operator ``ceiling``, if one is set). Hence:

    * a job never takes a registry above its own cap: a pull of the job is admitted (counted)
      only while fewer than its cap are in flight from the host, all jobs together; jobs with a
      larger cap may add theirs afterwards, up to their own cap;
    * so the total in flight never exceeds the largest cap among the jobs pulling from the host
      (nor the ceiling): two jobs with cap 32 put 32 on the registry, not 64;
    * a job with a small cap is polite: it waits while a bigger job keeps the registry busier
      than it would itself, and gets slots as that job's demand drains.

    Rejected alternatives: separate counters per job (two jobs double the load: the stampede this
    exists to prevent) and "the smallest cap wins" (a job with ``per_registry: 1`` would throttle
    an unrelated 64-way warm-up to one stream).

    **Fairness.** A job that finds a host full queues for it. A freed slot is handed straight to
    the longest-waiting job whose cap admits it (it stays counted, reserved for that job, which is
    woken); a job that is served goes to the back of the queue if it still wants more. Two jobs
    sharing a registry therefore alternate instead of one starving the other.

    **Rate-limit pauses** are kept here too (per job and host, so they can be shown without the
    run object): see :meth:`pause` and :meth:`paused`.
    """

    def __init__(self, ceilings: Mapping[str, int] | None = None) -> None:
        self._ceilings = dict(ceilings or {})
        for host, ceiling in self._ceilings.items():
            if ceiling < 1:
                raise ValueError(f"ceiling for {host} must be at least 1, not {ceiling}")
        self._in_flight: dict[str, int] = {}
        self._peak: dict[str, int] = {}
        self._queues: dict[str, dict[object, _Waiter]] = {}  # insertion order = FIFO
        self._granted: dict[tuple[str, object], int] = {}
        self._pauses: dict[tuple[str, str], float] = {}  # (job, host) -> until, monotonic

    # --- observation ------------------------------------------------------------------------

    def peak(self, host: str) -> int:
        """The most pulls from ``host`` ever in flight at once through this object."""
        return self._peak.get(host, 0)

    def cap(self, host: str, job_cap: int) -> int:
        """The cap a job with ``per_registry: job_cap`` gets for ``host``."""
        return min(job_cap, self._ceilings.get(host, job_cap))

    # --- slots ------------------------------------------------------------------------------

    def try_acquire(self, host: str, job_cap: int, holder: object) -> bool:
        """Take a slot for ``holder`` (a job run): a slot handed to it, else a free one."""
        key = (host, holder)
        granted = self._granted.get(key, 0)
        if granted:
            if granted == 1:
                del self._granted[key]
            else:
                self._granted[key] = granted - 1
            return True
        count = self._in_flight.get(host, 0)
        if count >= self.cap(host, job_cap):
            return False
        self._in_flight[host] = count + 1
        self._peak[host] = max(self._peak.get(host, 0), count + 1)
        self.stop_waiting(host, holder)  # served: queue again at the back if still wanting
        return True

    def release(self, host: str) -> None:
        """Give a slot back; it goes to the longest-waiting job whose cap admits it, if any."""
        count = self._in_flight.get(host, 0) - 1
        if count < 0:
            raise RuntimeError(f"release of {host} without a slot")
        queue = self._queues.get(host, {})
        for holder, waiter in queue.items():
            if count < self.cap(host, waiter.cap):
                del queue[holder]
                key = (host, holder)
                self._granted[key] = self._granted.get(key, 0) + 1
                waiter.wake()
                return  # the slot changes hands: the count stays
        if count:
            self._in_flight[host] = count
        else:
            self._in_flight.pop(host, None)

    def wait(self, host: str, job_cap: int, holder: object, wake: Callable[[], None]) -> None:
        """Queue ``holder`` for the next slot of ``host`` (keeps its place if already queued)."""
        queue = self._queues.setdefault(host, {})
        if holder not in queue:
            queue[holder] = _Waiter(job_cap, wake)

    def stop_waiting(self, host: str, holder: object) -> None:
        queue = self._queues.get(host)
        if queue is not None:
            queue.pop(holder, None)
            if not queue:
                del self._queues[host]

    def return_grants(self, holder: object) -> None:
        """Release the slots handed to ``holder`` that it did not take (to the next in line)."""
        for key in [k for k in self._granted if k[1] is holder]:
            for _ in range(self._granted.pop(key)):
                self.release(key[0])

    def give_back(self, holder: object) -> None:
        """Leave every queue and return the slots handed to ``holder`` but not used."""
        for host in [h for h, queue in self._queues.items() if holder in queue]:
            self.stop_waiting(host, holder)
        self.return_grants(holder)

    # --- rate-limit pauses ------------------------------------------------------------------

    def pause(self, job: str, host: str, until: float) -> float:
        """Pause ``job``'s pulls from ``host`` until ``until`` (monotonic); never shortens one."""
        key = (job, host)
        self._pauses[key] = max(self._pauses.get(key, until), until)
        return self._pauses[key]

    def paused_until(self, job: str, host: str, now: float) -> float | None:
        """When ``job`` may pull from ``host`` again, or None if it is not paused at ``now``."""
        until = self._pauses.get((job, host))
        if until is None:
            return None
        if until <= now:
            del self._pauses[(job, host)]
            return None
        return until

    def paused(self, job: str, now: float | None = None) -> dict[str, float]:
        """``job``'s paused registries: host -> resume time (monotonic, the run's clock)."""
        when = _monotonic() if now is None else now
        return {
            host: until
            for (name, host) in list(self._pauses)
            if name == job and (until := self.paused_until(job, host, when)) is not None
        }

    def paused_rfc3339(self, job: str, now: float | None = None) -> dict[str, str]:
        """As :meth:`paused`, resume times as RFC 3339 UTC (for ``JobStatus.paused_registries``)."""
        when = _monotonic() if now is None else now
        wall = datetime.now(UTC)
        return {
            host: (wall + timedelta(seconds=until - when)).isoformat(timespec="seconds")
            for host, until in self.paused(job, when).items()
        }
