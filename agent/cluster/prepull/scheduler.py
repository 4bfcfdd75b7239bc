"""The pre-pull scheduler: which node pulls which image when, under the job's pacing.

Pure coordination, no HTTP: an :class:`Executor` performs one (node, image) pre-pull (the
aggregator's executor asks the node's agent) and the scheduler decides the order and the pace::

    run = JobRun(job, nodes, executor, registry_caps=shared_caps)
    statuses = await run.run()          # or: await run_job(job, nodes, executor, ...)
    run.wave                            # {"pending": …, "pulling": …, "done": …, "failed": …}
    shared_caps.paused_rfc3339(job.name)   # rate-limited registries -> resume time

Rules, for every (node, image) pair not already DONE in ``statuses``:

* **Nodes.** At most ``pacing.parallel_nodes(len(nodes))`` nodes have a pull of this job in
  flight. A node pulls one image at a time, like kubelet's serial puller. Waves *roll*: a slot
  is refilled as soon as a pull ends, so there is no barrier between waves and a slow node holds
  one slot, not the whole wave. Free slots go to the first node, in the given order, that has an
  image it can start; nodes therefore finish roughly in order instead of all being half-warm.
* **Images** in the job's order on each node, except that an image which cannot start now (in
  back-off, its registry paused or full) is passed over for the node's next one.
* **Registries.** At most ``pacing.per_registry`` pulls per registry host (the image's
  ``registry_host``), counted across all jobs sharing one :class:`RegistryCaps` (see there for
  jobs with different caps and for fairness between jobs).
* **Retries.** A failed pull is tried again after ``retries.delay(n)`` seconds, up to
  ``retries.attempts`` tries. Neither the node slot nor the registry slot is held during the
  back-off: the node may pull its next image, and other nodes use the registry slot.
* **Rate limits.** An outcome with ``ratelimit_remaining`` below ``pacing.ratelimit_pause_below``
  (or a ``rate_limited`` failure without the header) pauses this job's new pulls from that
  registry for ``ratelimit_window`` seconds (60 s when unknown). Pulls in flight finish. The
  pause lives in the shared :class:`RegistryCaps`, so the job's next run honours it too.
* **Phases.** PENDING → PULLING → DONE (ok or skipped) or, after the last try, FAILED with the
  outcome's cause, summary and remedy. Between tries the pair is PENDING again with the last
  failure's cause. ``started_at`` is stamped when a try starts, ``updated_at`` on every change
  (RFC 3339 UTC, ms); ``duration_ms`` is the outcome's, else measured. Every change replaces
  the pair's entry in ``statuses`` with a new object and calls ``on_update`` with it.
* **Watchdog.** An executor that has not answered ``job.timeout`` + ``watchdog_grace`` seconds
  after a pull was sent is cancelled; the try fails with cause ``timeout``. An executor that
  raises (it should not) fails the try with cause ``unknown``.
* **Cancellation** of the run cancels the pulls in flight (their executors see the
  cancellation), waits for them, gives back their registry slots and marks them FAILED with cause
  ``cancelled``; the pairs not started stay PENDING. A later run resumes from ``statuses``.

The run is deterministic: nothing in it is random. The only randomness of a scheduled run is
:func:`start_delay`, which the caller waits before starting it.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from agent.cluster.prepull.models import Job, NodeImageStatus, Phase
from agent.cluster.prepull.registry_caps import RegistryCaps
from agent.models import Cause
from agent.node.models import PullOutcome
from agent.reference import parse

__all__ = [
    "DEFAULT_RATELIMIT_WINDOW",
    "WATCHDOG_GRACE",
    "Clock",
    "Executor",
    "JobRun",
    "RealClock",
    "run_job",
    "start_delay",
]

log = logging.getLogger("pullcheck.prepull")

DEFAULT_RATELIMIT_WINDOW = 60.0  # seconds paused when a registry does not say its window
WATCHDOG_GRACE = 30.0  # seconds an executor may take beyond the job's per-pull timeout


class Clock(Protocol):
    """Monotonic time and sleeping, injectable for tests."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    """The event loop's clock (monotonic): ``loop.time()`` and ``asyncio.sleep``."""

    def now(self) -> float:
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class Executor(Protocol):
    """Pre-pull ``image`` on ``node`` for ``job``; report failures as ``ok=False``, never raise."""

    async def __call__(self, node: str, image: str, job: Job, /) -> PullOutcome: ...


def start_delay(job: Job, rng: random.Random | None = None) -> float:
    """The random stagger a scheduled run waits before starting: uniform(0, pacing.jitter)."""
    jitter = job.pacing.jitter
    if jitter <= 0:
        return 0.0
    return (rng or random.Random()).uniform(0.0, jitter)


def _rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(eq=False, slots=True)
class _Item:
    node: _Node
    index: int  # the image's position in the job
    image: str
    host: str
    attempts: int = 0
    not_before: float = 0.0  # end of the back-off


@dataclass(eq=False, slots=True)
class _Node:
    name: str
    pending: list[_Item] = field(default_factory=list)  # in job order
    busy: bool = False


class JobRun:
    """One run of a pre-pull job over a list of nodes. Create, then ``await run.run()`` once."""

    def __init__(
        self,
        job: Job,
        nodes: Iterable[str],
        executor: Executor,
        *,
        clock: Clock | None = None,
        statuses: dict[tuple[str, str], NodeImageStatus] | None = None,
        on_update: Callable[[NodeImageStatus], None] | None = None,
        registry_caps: RegistryCaps | None = None,
        watchdog_grace: float = WATCHDOG_GRACE,
    ) -> None:
        self.job = job
        self.nodes = list(dict.fromkeys(nodes))
        self.parallel_nodes = job.pacing.parallel_nodes(len(self.nodes))
        self.caps = registry_caps if registry_caps is not None else RegistryCaps()
        self.statuses: dict[tuple[str, str], NodeImageStatus] = (
            statuses if statuses is not None else {}
        )
        self._executor = executor
        self._clock: Clock = clock if clock is not None else RealClock()
        self._on_update = on_update
        self._grace = watchdog_grace
        self._hosts = {image: parse(image).registry_host for image in job.images}
        self._host_count = len(set(self._hosts.values()))
        self._work: list[_Node] = []
        self._first_open = 0  # nodes before this one have nothing left to start or finish
        self._busy = 0
        self._timers: list[float] = []  # heap: ends of back-offs
        self._tasks: set[asyncio.Task[None]] = set()
        self._wanted: set[str] = set()  # hosts this run queues for in the caps
        self._wake = asyncio.Event()
        self._error: BaseException | None = None
        self._counts = {phase: 0 for phase in Phase}
        self._started = False
        self.running = False

    # --- views ------------------------------------------------------------------------------

    @property
    def wave(self) -> dict[str, int]:
        """Progress of this run's pairs: pending (retrying included), pulling, done, failed."""
        counts = {phase.value: n for phase, n in self._counts.items()}
        retrying = sum(1 for n in self._work for item in n.pending if item.attempts)
        return {**counts, "retrying": retrying, "parallel_nodes": self.parallel_nodes}

    @property
    def paused_registries(self) -> dict[str, float]:
        """Registries this job is paused on: host -> resume time on the run's clock."""
        return self.caps.paused(self.job.name, self._clock.now())

    # --- running ----------------------------------------------------------------------------

    async def run(self) -> dict[tuple[str, str], NodeImageStatus]:
        """Pull every pair not yet DONE; return ``statuses`` (updated in place)."""
        if self._started:
            raise RuntimeError("a JobRun runs once")
        self._started = self.running = True
        try:
            self._prepare()
            while self._counts[Phase.PENDING] or self._counts[Phase.PULLING]:
                if self._error is not None:
                    raise self._error
                self._wake.clear()
                self._dispatch()
                await self._idle()
            return self.statuses
        finally:
            try:
                for task in self._tasks:
                    task.cancel()
                if self._tasks:
                    await asyncio.gather(*self._tasks, return_exceptions=True)
            finally:
                self.caps.give_back(self)
                self.running = False

    def _prepare(self) -> None:
        for name in self.nodes:
            node = _Node(name)
            for index, image in enumerate(self.job.images):
                key = (name, image)
                old = self.statuses.get(key)
                if old is not None and old.phase is Phase.DONE:
                    self._counts[Phase.DONE] += 1
                    continue
                node.pending.append(_Item(node, index, image, self._hosts[image]))
                self._counts[Phase.PENDING] += 1
                if old is None or old.phase is not Phase.PENDING or old.attempts or old.cause:
                    self._publish(NodeImageStatus(node=name, image=image, updated_at=_rfc3339()))
            self._work.append(node)

    def _dispatch(self) -> None:
        """Start every pull the caps allow now, in node order."""
        now = self._clock.now()
        work = self._work
        while self._first_open < len(work) and not (
            work[self._first_open].pending or work[self._first_open].busy
        ):
            self._first_open += 1
        hosts = self._host_count
        blocked: set[str] = set()  # hosts paused or full for the rest of this pass
        full: set[str] = set()
        index = self._first_open
        while index < len(work) and self._busy < self.parallel_nodes and len(blocked) < hosts:
            node = work[index]
            index += 1
            if node.busy:
                continue
            for position, item in enumerate(node.pending):
                if item.not_before > now or item.host in blocked:
                    continue
                if self.caps.paused_until(self.job.name, item.host, now) is not None:
                    blocked.add(item.host)
                    continue
                if not self.caps.try_acquire(item.host, self.job.pacing.per_registry, self):
                    blocked.add(item.host)
                    full.add(item.host)
                    continue
                del node.pending[position]
                self._start(item)
                break
        for host in full:
            self.caps.wait(host, self.job.pacing.per_registry, self, self._wake.set)
        for host in self._wanted - full:
            self.caps.stop_waiting(host, self)
        self._wanted = full
        self.caps.return_grants(self)  # slots handed to this run that this pass did not use

    async def _idle(self) -> None:
        """Wait for a pull to end, a slot handed over, or the next back-off or pause to end."""
        if self._wake.is_set():
            return
        now = self._clock.now()
        while self._timers and self._timers[0] <= now:
            heapq.heappop(self._timers)
        ends = list(self.caps.paused(self.job.name, now).values())
        if self._timers:
            ends.append(self._timers[0])
        alarm = asyncio.ensure_future(self._alarm(min(ends) - now)) if ends else None
        try:
            await self._wake.wait()
        finally:
            if alarm is not None:
                alarm.cancel()

    async def _alarm(self, seconds: float) -> None:
        await self._clock.sleep(seconds)
        self._wake.set()

    def _start(self, item: _Item) -> None:
        item.node.busy = True
        self._busy += 1
        item.attempts += 1
        stamp = _rfc3339()
        self._change(item, phase=Phase.PULLING, attempts=item.attempts, started_at=stamp)
        task = asyncio.create_task(self._pull(item), name=f"prepull {item.node.name} {item.image}")
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._pulled(done, item))

    async def _pull(self, item: _Item) -> None:
        began = self._clock.now()
        outcome = await self._call(item)
        self._settle(item, outcome, self._clock.now() - began)

    def _pulled(self, task: asyncio.Task[None], item: _Item) -> None:
        """Always runs, even for a task cancelled before its first step: frees the slots."""
        self._tasks.discard(task)
        self.caps.release(item.host)
        item.node.busy = False
        self._busy -= 1
        self._wake.set()
        if task.cancelled():
            self._change(
                item,
                phase=Phase.FAILED,
                cause=Cause.CANCELLED.value,
                summary="the pre-pull run was cancelled while this pull was in flight",
                remedy="",
            )
        elif task.exception() is not None and self._error is None:
            self._error = task.exception()

    async def _call(self, item: _Item) -> PullOutcome:
        limit = self.job.timeout + self._grace
        call = asyncio.ensure_future(self._executor(item.node.name, item.image, self.job))
        alarm = asyncio.ensure_future(self._clock.sleep(limit))
        try:
            await asyncio.wait((call, alarm), return_when=asyncio.FIRST_COMPLETED)
        finally:
            alarm.cancel()
            if not call.done():
                call.cancel()
                await asyncio.gather(call, return_exceptions=True)
        if not call.cancelled():
            error = call.exception()
            if error is None:
                return call.result()
            log.error(
                "prepull executor raised",
                exc_info=error,
                extra={"fields": {"node": item.node.name, "image": item.image}},
            )
            return PullOutcome(
                ok=False,
                cause=Cause.UNKNOWN,
                summary=f"the executor raised {type(error).__name__}: {error}",
            )
        if alarm.done() and not alarm.cancelled():
            return PullOutcome(
                ok=False,
                cause=Cause.TIMEOUT,
                summary=f"no answer from {item.node.name} within {limit:g} s",
                remedy="check that the node's agent is up and reachable from the aggregator",
            )
        return PullOutcome(ok=False, cause=Cause.CANCELLED, summary="the executor was cancelled")

    def _settle(self, item: _Item, outcome: PullOutcome, elapsed: float) -> None:
        now = self._clock.now()
        self._note_ratelimit(item, outcome, now)
        duration = outcome.duration_ms if outcome.duration_ms > 0 else round(elapsed * 1000, 3)
        if outcome.ok:
            self._change(
                item,
                phase=Phase.DONE,
                skipped=outcome.skipped,
                digest=outcome.digest,
                duration_ms=duration,
                cause=None,
                summary=outcome.summary,
                remedy="",
            )
            return
        cause = str(outcome.cause) if outcome.cause else Cause.UNKNOWN.value
        failed: dict[str, Any] = {
            "duration_ms": duration,
            "cause": cause,
            "summary": outcome.summary,
            "remedy": outcome.remedy,
        }
        if item.attempts >= self.job.retries.attempts:
            self._change(item, phase=Phase.FAILED, **failed)
            return
        item.not_before = now + self.job.retries.delay(item.attempts)
        heapq.heappush(self._timers, item.not_before)
        bisect.insort(item.node.pending, item, key=lambda i: i.index)
        self._change(item, phase=Phase.PENDING, **failed)

    def _note_ratelimit(self, item: _Item, outcome: PullOutcome, now: float) -> None:
        remaining = outcome.ratelimit_remaining
        if remaining is not None:
            limited = remaining < self.job.pacing.ratelimit_pause_below
        else:
            limited = outcome.cause == Cause.RATE_LIMITED
        if not limited:
            return
        window = outcome.ratelimit_window
        seconds = window if window is not None and window > 0 else DEFAULT_RATELIMIT_WINDOW
        until = self.caps.pause(self.job.name, item.host, now + seconds)
        log.warning(
            "prepull paused on a registry rate limit",
            extra={
                "fields": {
                    "job": self.job.name,
                    "registry": item.host,
                    "remaining": remaining,
                    "seconds": round(until - now, 3),
                }
            },
        )

    # --- status -----------------------------------------------------------------------------

    def _change(self, item: _Item, **changes: Any) -> None:
        key = (item.node.name, item.image)
        old = self.statuses.get(key)
        if old is None:
            old = NodeImageStatus(node=key[0], image=key[1])
        self._counts[old.phase] -= 1
        self._counts[changes.get("phase", old.phase)] += 1
        self._publish(old.model_copy(update={**changes, "updated_at": _rfc3339()}))

    def _publish(self, status: NodeImageStatus) -> None:
        self.statuses[(status.node, status.image)] = status
        if self._on_update is None:
            return
        try:
            self._on_update(status)
        except Exception:  # a broken observer must not stop the pulls
            log.exception("prepull on_update failed")


async def run_job(
    job: Job,
    nodes: Iterable[str],
    executor: Executor,
    *,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    statuses: dict[tuple[str, str], NodeImageStatus] | None = None,
    on_update: Callable[[NodeImageStatus], None] | None = None,
    registry_caps: RegistryCaps | None = None,
) -> dict[tuple[str, str], NodeImageStatus]:
    """Run ``job`` once over ``nodes`` (see :class:`JobRun`); return the statuses.

    ``rng`` is accepted for symmetry with :func:`start_delay` and unused: a run draws nothing
    random (its order is the nodes' and the images' order).
    """
    del rng
    run = JobRun(
        job,
        nodes,
        executor,
        clock=clock,
        statuses=statuses,
        on_update=on_update,
        registry_caps=registry_caps,
    )
    return await run.run()
