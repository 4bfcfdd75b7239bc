"""The pre-pull scheduler: node and registry caps, rolling waves, retries, rate limits, resume.

Every scenario runs the real scheduler on a virtual-time event loop (``run_virtual``): sleeps
take no real time, so timings below are exact virtual seconds. The fake executor sleeps for the
pull's duration and records what was in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest

from agent.cluster.prepull.models import Backoff, Job, NodeImageStatus, Pacing, Phase
from agent.cluster.prepull.registry_caps import RegistryCaps
from agent.cluster.prepull.scheduler import (
    DEFAULT_RATELIMIT_WINDOW,
    WATCHDOG_GRACE,
    JobRun,
    RealClock,
    run_job,
    start_delay,
)
from agent.models import Cause
from agent.node.models import PullOutcome
from tests.virtualtime import VirtualDeadlock, run_virtual

REG_A = "reg-a.example"
REG_B = "reg-b.example"
OK = PullOutcome(ok=True, digest="sha256:" + "a" * 64)

# plan(node, image, attempt) -> (seconds the pull takes, its outcome)
Plan = Callable[[str, str, int], tuple[float, PullOutcome]]


def now() -> float:
    return asyncio.get_running_loop().time()


def assert_idle(caps: RegistryCaps, *hosts: str) -> None:
    """No slot of ``hosts`` is held and no job waits for one: a newcomer with a cap of one gets
    a slot, and gets it again after giving it back (a waiting job would be handed it)."""
    newcomer = object()
    for host in hosts:
        for _ in range(2):
            assert caps.try_acquire(host, 1, newcomer), host
            caps.release(host)


def make_job(
    images: list[str] | None = None,
    *,
    name: str = "warm",
    nodes: int | str = "100%",
    per_registry: int = 100,
    retries: Backoff | None = None,
    pause_below: int = 10,
    timeout: float = 600.0,
) -> Job:
    return Job(
        name=name,
        images=images or [f"{REG_A}/app:1"],
        on_new_node=True,
        timeout=timeout,
        retries=retries or Backoff(),
        pacing=Pacing(
            max_parallel_nodes=nodes,
            per_registry=per_registry,
            jitter=0,
            ratelimit_pause_below=pause_below,
        ),
    )


@dataclass
class Call:
    job: str
    node: str
    image: str
    attempt: int
    start: float
    end: float | None = None
    cancelled: bool = False

    @property
    def host(self) -> str:
        return self.image.split("/", 1)[0]


@dataclass
class FakeExecutor:
    """Sleeps ``plan``'s duration, returns its outcome; records calls and what ran at once."""

    plan: Plan = lambda node, image, attempt: (1.0, OK)
    calls: list[Call] = field(default_factory=list)
    active: list[Call] = field(default_factory=list)
    peak_nodes: Counter[str] = field(default_factory=Counter)  # job -> nodes pulling at once
    peak_hosts: Counter[str] = field(default_factory=Counter)  # host -> pulls at once (all jobs)
    tries: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    serial_violation: bool = False
    on_start: Callable[[Call, list[Call]], None] | None = None

    async def __call__(self, node: str, image: str, job: Job, /) -> PullOutcome:
        self.tries[(job.name, node, image)] += 1
        call = Call(job.name, node, image, self.tries[(job.name, node, image)], now())
        if any(c.job == job.name and c.node == node for c in self.active):
            self.serial_violation = True
        if self.on_start is not None:
            self.on_start(call, list(self.active))
        self.calls.append(call)
        self.active.append(call)
        nodes = {c.node for c in self.active if c.job == job.name}
        self.peak_nodes[job.name] = max(self.peak_nodes[job.name], len(nodes))
        in_host = sum(1 for c in self.active if c.host == call.host)
        self.peak_hosts[call.host] = max(self.peak_hosts[call.host], in_host)
        duration, outcome = self.plan(node, image, call.attempt)
        try:
            await asyncio.sleep(duration)
        except asyncio.CancelledError:
            call.cancelled = True
            raise
        finally:
            call.end = now()
            self.active.remove(call)
        return outcome

    def starts(self, node: str, image: str | None = None) -> list[float]:
        return [c.start for c in self.calls if c.node == node and image in (None, c.image)]


def nodes(n: int) -> list[str]:
    return [f"n{i}" for i in range(n)]


def simulate(main: Coroutine[Any, Any, Any]) -> Any:
    return run_virtual(main)


async def timed(coro: Coroutine[Any, Any, Any]) -> tuple[Any, float]:
    start = now()
    result = await coro
    return result, now() - start


# --- node cap and rolling waves --------------------------------------------------------------


def test_node_cap_holds_and_waves_roll() -> None:
    job = make_job([f"{REG_A}/app:1", f"{REG_A}/side:1"], nodes=3)
    fake = FakeExecutor()

    statuses, took = simulate(timed(run_job(job, nodes(10), fake)))

    assert fake.peak_nodes["warm"] == 3
    assert not fake.serial_violation  # one pull at a time per node
    assert len(fake.calls) == 20
    assert all(s.phase is Phase.DONE for s in statuses.values())
    # node-major: a freed slot goes to the first node with work, so n0..n2 finish both images
    # by t=2, n3..n5 by t=4, n6..n8 by t=6, n9 alone by t=8 (its two pulls are serial)
    assert [max(c.end or 0 for c in fake.calls if c.node == n) for n in nodes(10)] == [
        2.0,
        2.0,
        2.0,
        4.0,
        4.0,
        4.0,
        6.0,
        6.0,
        6.0,
        8.0,
    ]
    assert took == pytest.approx(8.0)
    # images in the job's order on every node
    for node in nodes(10):
        assert [c.image for c in fake.calls if c.node == node] == job.images


@pytest.mark.parametrize(
    ("cap", "total", "expected"),
    [("25%", 10, 2), ("100%", 7, 7), ("1%", 10, 1), ("50%", 3, 1), ("10%", 40, 4), (5, 3, 3)],
)
def test_percentage_caps(cap: int | str, total: int, expected: int) -> None:
    job = make_job(nodes=cap)
    fake = FakeExecutor()
    run = JobRun(job, nodes(total), fake)

    simulate(run.run())

    assert fake.peak_nodes["warm"] == expected
    assert run.wave["parallel_nodes"] == job.pacing.parallel_nodes(total)


def test_slow_node_does_not_block_the_others() -> None:
    job = make_job(nodes=2)
    fake = FakeExecutor(plan=lambda node, image, attempt: (100.0 if node == "n0" else 1.0, OK))

    _, took = simulate(timed(run_job(job, nodes(6), fake)))

    # n0 holds one slot for 100 s; the other slot serves n1..n5 back to back
    assert [fake.starts(f"n{i}")[0] for i in range(6)] == [0.0, 0.0, 1.0, 2.0, 3.0, 4.0]
    assert took == pytest.approx(100.0)


def test_order_is_stable_and_deterministic() -> None:
    job = make_job([f"{REG_A}/x:1", f"{REG_B}/y:1", f"{REG_A}/z:1"], nodes=2, per_registry=1)
    given = ["zeta", "alpha", "mid", "alpha", "beta"]  # given order, a duplicate

    def once() -> list[tuple[str, str, float]]:
        fake = FakeExecutor()
        simulate(run_job(job, given, fake, rng=random.Random(7)))
        return [(c.node, c.image, c.start) for c in fake.calls]

    first = once()
    assert first == once()
    assert [n for n, image, _ in first if image == f"{REG_A}/x:1"] == [
        "zeta",
        "alpha",
        "mid",
        "beta",
    ]
    assert len(first) == 12  # the duplicate node is pulled once


def test_no_nodes_is_an_empty_run() -> None:
    fake = FakeExecutor()
    assert simulate(run_job(make_job(), [], fake)) == {}
    assert fake.calls == []


# --- registry caps ---------------------------------------------------------------------------


def test_registry_cap_per_host_within_a_job() -> None:
    images = [f"{REG_A}/x:1", f"{REG_B}/y:1"]
    job = make_job(images, per_registry=1)
    fake = FakeExecutor()
    caps = RegistryCaps()

    _, took = simulate(timed(run_job(job, nodes(4), fake, registry_caps=caps)))

    assert fake.peak_hosts == {REG_A: 1, REG_B: 1}
    assert caps.peak(REG_A) == caps.peak(REG_B) == 1
    # both registries busy at once: a node passes over a full registry for its next image
    assert took == pytest.approx(4.0)
    assert_idle(caps, REG_A, REG_B)


def test_registry_cap_holds_across_two_jobs() -> None:
    caps = RegistryCaps()
    fake = FakeExecutor()
    a = make_job(name="a", per_registry=3)
    b = make_job([f"{REG_A}/other:1"], name="b", per_registry=3)

    async def both() -> None:
        await asyncio.gather(
            run_job(a, nodes(10), fake, registry_caps=caps),
            run_job(b, nodes(10), fake, registry_caps=caps),
        )

    simulate(both())

    assert fake.peak_hosts[REG_A] == 3  # not 6: one counter for the registry
    assert caps.peak(REG_A) == 3
    assert len(fake.calls) == 20
    assert_idle(caps, REG_A)


def test_jobs_with_different_caps_share_one_counter() -> None:
    caps = RegistryCaps()
    seen_by_small: list[int] = []

    def watch(call: Call, active: list[Call]) -> None:
        if call.job == "small":
            seen_by_small.append(sum(1 for c in active if c.host == REG_A))

    # staggered durations: slots free one at a time
    fake = FakeExecutor(
        plan=lambda n, i, a: (1.0 if "other" in i else 1.0 + int(n[1:]) / 10, OK), on_start=watch
    )
    big = make_job(name="big", per_registry=4)
    small = make_job([f"{REG_A}/other:1"], name="small", per_registry=2)

    async def both() -> None:
        await asyncio.gather(
            run_job(big, nodes(8), fake, registry_caps=caps),
            run_job(small, nodes(4), fake, registry_caps=caps),
        )

    simulate(both())

    assert fake.peak_hosts[REG_A] == 4  # the largest cap bounds the total
    # the small job only starts while the registry is below its own cap: here, once the big
    # job has no more nodes to start and its last pulls drain
    assert len(seen_by_small) == 4
    assert max(seen_by_small) < 2
    last_big_start = max(c.start for c in fake.calls if c.job == "big")
    assert min(c.start for c in fake.calls if c.job == "small") > last_big_start
    assert len(fake.calls) == 12


def test_caps_hold_when_slots_free_together() -> None:
    caps = RegistryCaps()
    fake = FakeExecutor()  # every pull takes 1 s: four slots free at the same instant
    big = make_job(name="big", per_registry=4)
    small = make_job([f"{REG_A}/other:1"], name="small", per_registry=2)

    async def both() -> None:
        await asyncio.gather(
            run_job(big, nodes(8), fake, registry_caps=caps),
            run_job(small, nodes(4), fake, registry_caps=caps),
        )

    simulate(both())

    assert fake.peak_hosts[REG_A] == caps.peak(REG_A) == 4
    assert len(fake.calls) == 12
    assert_idle(caps, REG_A)


def test_a_freed_slot_goes_to_the_job_that_waited() -> None:
    caps = RegistryCaps()
    fake = FakeExecutor()
    a = make_job(name="a", per_registry=1)
    b = make_job([f"{REG_A}/other:1"], name="b", per_registry=1)

    async def both() -> None:
        await asyncio.gather(
            run_job(a, nodes(4), fake, registry_caps=caps),
            run_job(b, nodes(4), fake, registry_caps=caps),
        )

    simulate(both())

    # a queued first (right after its first start), then the jobs alternate
    assert "".join(c.job for c in fake.calls) == "aabababb"


def test_operator_ceiling_lowers_a_job_cap() -> None:
    caps = RegistryCaps(ceilings={REG_A: 2})
    fake = FakeExecutor()

    simulate(run_job(make_job(per_registry=50), nodes(6), fake, registry_caps=caps))

    assert fake.peak_hosts[REG_A] == 2
    assert caps.cap(REG_A, 50) == 2
    assert caps.cap(REG_B, 50) == 50


def test_caps_reject_bad_ceiling_and_unbalanced_release() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RegistryCaps(ceilings={REG_A: 0})
    caps = RegistryCaps()
    with pytest.raises(RuntimeError, match="without a slot"):
        caps.release(REG_A)


def test_handover_respects_the_waiting_job_cap() -> None:
    caps = RegistryCaps()
    woken: list[str] = []
    big, small, other = object(), object(), object()
    for _ in range(3):
        assert caps.try_acquire(REG_A, 3, big)
    assert not caps.try_acquire(REG_A, 2, small)
    caps.wait(REG_A, 2, small, lambda: woken.append("small"))

    caps.release(REG_A)  # 2 left in flight: not below the small job's cap of 2
    assert woken == []
    assert not caps.try_acquire(REG_A, 2, small)
    caps.release(REG_A)  # 1 left: the slot is handed to the small job
    assert woken == ["small"]
    # counted, reserved for it: a job with a cap of 3 gets one more slot, not two
    assert caps.try_acquire(REG_A, 3, other)
    assert not caps.try_acquire(REG_A, 3, other)
    assert caps.try_acquire(REG_A, 2, small)  # the reserved slot, over its cap
    for _ in range(3):  # big's, other's and small's
        caps.release(REG_A)
    assert woken == ["small"]  # served: it left the queue
    assert_idle(caps, REG_A)


# --- retries ---------------------------------------------------------------------------------


class RecordingClock(RealClock):
    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await super().sleep(seconds)


def failing(times: int, cause: Cause = Cause.TIMEOUT, duration: float = 0.5) -> Plan:
    def plan(node: str, image: str, attempt: int) -> tuple[float, PullOutcome]:
        if attempt <= times:
            return duration, PullOutcome(ok=False, cause=cause, summary=f"try {attempt}")
        return duration, OK

    return plan


@pytest.mark.parametrize(
    ("backoff", "fails", "gaps"),
    [
        (Backoff(attempts=4), 3, [1.0, 2.0, 4.0]),
        (Backoff(attempts=5, initial=10, maximum=15), 4, [10.0, 15.0, 15.0, 15.0]),
        (Backoff(attempts=7), 6, [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]),
    ],
)
def test_retries_wait_the_exact_backoff(backoff: Backoff, fails: int, gaps: list[float]) -> None:
    job = make_job(retries=backoff)
    fake = FakeExecutor(plan=failing(fails))
    clock = RecordingClock()

    statuses = simulate(run_job(job, ["n0"], fake, clock=clock))

    assert [nxt.start - (prev.end or 0) for prev, nxt in itertools.pairwise(fake.calls)] == gaps
    status = statuses[("n0", job.images[0])]
    assert status.phase is Phase.DONE
    assert status.attempts == fails + 1
    assert status.cause is None
    # the back-offs were waited on the injected clock, not around it
    waits = [s for s in clock.sleeps if s < job.timeout]
    assert waits == gaps


def test_failed_after_the_last_try_with_cause_summary_remedy() -> None:
    job = make_job(retries=Backoff(attempts=3))
    outcome = PullOutcome(
        ok=False,
        cause=Cause.UNAUTHORIZED,
        summary="401 from reg-a.example",
        remedy="give the job a docker_config",
        duration_ms=12.5,
    )
    fake = FakeExecutor(plan=lambda node, image, attempt: (0.1, outcome))
    run = JobRun(job, ["n0"], fake)

    statuses = simulate(run.run())

    status = statuses[("n0", job.images[0])]
    assert status.phase is Phase.FAILED
    assert status.attempts == 3
    assert status.cause == "unauthorized"
    assert status.summary == "401 from reg-a.example"
    assert status.remedy == "give the job a docker_config"
    assert status.duration_ms == 12.5
    assert len(fake.calls) == 3
    assert run.wave == {
        "pending": 0,
        "pulling": 0,
        "done": 0,
        "failed": 1,
        "retrying": 0,
        "parallel_nodes": 1,
    }


def test_node_and_registry_slots_are_free_during_backoff() -> None:
    job = make_job(nodes=1, per_registry=1, retries=Backoff(attempts=2, initial=10))
    fake = FakeExecutor(
        plan=lambda n, i, a: (1.0, OK if n != "n0" or a > 1 else PullOutcome(ok=False))
    )

    statuses = simulate(run_job(job, ["n0", "n1"], fake))

    # n0 fails at t=1 and backs off 10 s; n1 takes the only node and registry slot at once
    assert fake.starts("n1") == [1.0]
    assert fake.starts("n0") == [0.0, 11.0]
    assert all(s.phase is Phase.DONE for s in statuses.values())


def test_a_node_pulls_its_next_image_while_one_backs_off() -> None:
    images = [f"{REG_A}/first:1", f"{REG_A}/second:1"]
    job = make_job(images, retries=Backoff(attempts=2, initial=10))
    fake = FakeExecutor(
        plan=lambda n, i, a: (1.0, PullOutcome(ok=False) if "first" in i and a == 1 else OK)
    )

    simulate(run_job(job, ["n0"], fake))

    assert [(c.image, c.start) for c in fake.calls] == [
        (images[0], 0.0),
        (images[1], 1.0),
        (images[0], 11.0),
    ]
    assert not fake.serial_violation


def test_retry_is_pending_with_the_last_cause() -> None:
    job = make_job(retries=Backoff(attempts=2, initial=5))
    fake = FakeExecutor(plan=failing(1, Cause.DNS_FAILURE, duration=1.0))
    seen: list[tuple[Phase, int, str | None]] = []
    run = JobRun(job, ["n0"], fake, on_update=lambda s: seen.append((s.phase, s.attempts, s.cause)))

    async def main() -> dict[str, int]:
        task = asyncio.create_task(run.run())
        await asyncio.sleep(3)  # in the back-off
        wave = run.wave
        await task
        return wave

    wave = simulate(main())

    assert wave["pending"] == 1
    assert wave["retrying"] == 1
    assert seen == [
        (Phase.PENDING, 0, None),
        (Phase.PULLING, 1, None),
        (Phase.PENDING, 1, "dns_failure"),
        (Phase.PULLING, 2, "dns_failure"),
        (Phase.DONE, 2, None),
    ]


# --- executor misbehaviour -------------------------------------------------------------------


def test_an_executor_that_raises_fails_the_try() -> None:
    job = make_job(retries=Backoff(attempts=2))
    calls = 0

    async def explode(node: str, image: str, job: Job, /) -> PullOutcome:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    statuses = simulate(run_job(job, ["n0"], explode))

    status = statuses[("n0", job.images[0])]
    assert calls == 2
    assert status.phase is Phase.FAILED
    assert status.cause == "unknown"
    assert "RuntimeError: boom" in status.summary


def test_watchdog_times_out_a_silent_executor() -> None:
    job = make_job(retries=Backoff(attempts=1), timeout=10)
    fake = FakeExecutor(plan=lambda n, i, a: (10_000.0, OK))

    statuses, took = simulate(timed(run_job(job, ["n0"], fake)))

    status = statuses[("n0", job.images[0])]
    assert status.phase is Phase.FAILED
    assert status.cause == "timeout"
    assert took == pytest.approx(10 + WATCHDOG_GRACE)
    assert fake.calls[0].cancelled


def test_a_broken_observer_does_not_stop_the_run() -> None:
    def observer(status: NodeImageStatus) -> None:
        raise ValueError("observer bug")

    statuses = simulate(run_job(make_job(), nodes(3), FakeExecutor(), on_update=observer))

    assert all(s.phase is Phase.DONE for s in statuses.values())


# --- phases, statuses, resume ----------------------------------------------------------------


def test_phases_and_fields_of_a_pull() -> None:
    job = make_job([f"{REG_A}/x:1", f"{REG_A}/y:1"])
    outcomes = {
        job.images[0]: PullOutcome(ok=True, digest="sha256:" + "b" * 64, duration_ms=1234.0),
        job.images[1]: PullOutcome(ok=True, skipped=True, digest="sha256:" + "c" * 64),
    }
    fake = FakeExecutor(plan=lambda n, i, a: (2.0, outcomes[i]))
    updates: list[NodeImageStatus] = []

    statuses = simulate(run_job(job, ["n0"], fake, on_update=updates.append))

    pulled, skipped = statuses[("n0", job.images[0])], statuses[("n0", job.images[1])]
    assert [u.phase for u in updates if u.image == job.images[0]] == [
        Phase.PENDING,
        Phase.PULLING,
        Phase.DONE,
    ]
    assert (pulled.digest, pulled.duration_ms, pulled.skipped, pulled.attempts) == (
        "sha256:" + "b" * 64,
        1234.0,
        False,
        1,
    )
    assert skipped.skipped
    assert skipped.duration_ms == 2000.0  # the outcome had none: measured on the clock
    for status in (pulled, skipped):
        stamp = datetime.fromisoformat(status.updated_at)
        assert stamp.utcoffset() == timedelta(0)
        assert datetime.fromisoformat(status.started_at) <= stamp
    assert updates[-1] is statuses[("n0", job.images[1])]  # the stored status is the last one


def test_resume_skips_done_pairs_and_retries_the_rest() -> None:
    job = make_job([f"{REG_A}/x:1", f"{REG_A}/y:1"])
    x, y = job.images
    done = NodeImageStatus(node="n0", image=x, phase=Phase.DONE, digest="sha256:" + "d" * 64)
    statuses = {
        ("n0", x): done,
        ("n1", x): NodeImageStatus(node="n1", image=x, phase=Phase.FAILED, attempts=3, cause="x"),
        ("n1", y): NodeImageStatus(node="n1", image=y, phase=Phase.PULLING, attempts=1),
        ("other", x): NodeImageStatus(node="other", image=x, phase=Phase.FAILED),
    }
    fake = FakeExecutor()
    updated: list[tuple[str, str]] = []
    run = JobRun(
        job,
        ["n0", "n1"],
        fake,
        statuses=statuses,
        on_update=lambda s: updated.append((s.node, s.image)),
    )

    result = simulate(run.run())

    assert result is statuses  # updated in place
    assert statuses[("n0", x)] is done  # untouched
    assert ("n0", x) not in updated
    assert sorted((c.node, c.image) for c in fake.calls) == [("n0", y), ("n1", x), ("n1", y)]
    assert statuses[("n1", x)].attempts == 1  # a fresh count of tries
    assert statuses[("n1", x)].cause is None
    assert statuses[("other", x)].phase is Phase.FAILED  # not this run's pair
    assert run.wave["done"] == 4


def test_wave_view_during_a_run() -> None:
    job = make_job(nodes=2)
    run = JobRun(job, nodes(5), FakeExecutor())

    async def main() -> list[dict[str, int]]:
        task = asyncio.create_task(run.run())
        views = []
        for pause in (0.5, 1.0, 1.0):
            await asyncio.sleep(pause)
            views.append(run.wave)
        await task
        views.append(run.wave)
        return views

    views = simulate(main())

    keys = ("pending", "pulling", "done", "failed")
    assert [tuple(v[k] for k in keys) for v in views] == [
        (3, 2, 0, 0),  # t=0.5: n0 n1 pulling
        (1, 2, 2, 0),  # t=1.5: n2 n3 pulling
        (0, 1, 4, 0),  # t=2.5: n4 pulling
        (0, 0, 5, 0),
    ]


# --- rate limits -----------------------------------------------------------------------------


def test_ratelimit_pauses_the_registry_until_the_window_ends() -> None:
    job = make_job(per_registry=1)
    low = PullOutcome(ok=True, ratelimit_remaining=3, ratelimit_window=120)
    high = PullOutcome(ok=True, ratelimit_remaining=50, ratelimit_window=120)
    fake = FakeExecutor(plan=lambda n, i, a: (1.0, low if n == "n0" else high))
    caps = RegistryCaps()
    run = JobRun(job, nodes(4), fake, registry_caps=caps)

    async def main() -> tuple[dict[str, float], dict[str, str], dict[str, float]]:
        task = asyncio.create_task(run.run())
        await asyncio.sleep(50)
        during = (run.paused_registries, caps.paused_rfc3339(job.name))
        await task
        return (*during, run.paused_registries)

    paused, paused_wall, after = simulate(main())

    assert paused == {REG_A: 121.0}  # n0 reported 3 < 10 left at t=1: paused 120 s
    resume = datetime.fromisoformat(paused_wall[REG_A])
    assert resume.utcoffset() == timedelta(0)
    assert [fake.starts(n)[0] for n in nodes(4)] == [0.0, 121.0, 122.0, 123.0]
    assert after == {}


def test_ratelimit_pause_leaves_other_registries_running() -> None:
    images = [f"{REG_A}/x:1", f"{REG_B}/y:1"]
    job = make_job(images, per_registry=1)
    low = PullOutcome(ok=True, ratelimit_remaining=0, ratelimit_window=600)
    fake = FakeExecutor(plan=lambda n, i, a: (1.0, low if REG_A in i else OK))

    simulate(run_job(job, nodes(4), fake))

    b_starts = sorted(c.start for c in fake.calls if c.host == REG_B)
    a_starts = sorted(c.start for c in fake.calls if c.host == REG_A)
    assert b_starts == [0.0, 1.0, 2.0, 3.0]  # reg-b never paused
    assert a_starts == [0.0, 601.0, 1202.0, 1803.0]  # reg-a paused after every pull


def test_rate_limited_failure_without_header_pauses_the_default_window() -> None:
    job = make_job(retries=Backoff(attempts=2, initial=1))
    limited = PullOutcome(ok=False, cause=Cause.RATE_LIMITED, summary="429")
    fake = FakeExecutor(plan=lambda n, i, a: (1.0, limited if a == 1 else OK))

    statuses = simulate(run_job(job, ["n0"], fake))

    # failed at t=1: the 1 s back-off ends first, the pause at 1 + 60
    assert fake.starts("n0") == [0.0, 1.0 + DEFAULT_RATELIMIT_WINDOW]
    assert statuses[("n0", job.images[0])].phase is Phase.DONE


def test_ratelimit_above_the_threshold_does_not_pause() -> None:
    job = make_job(per_registry=1, pause_below=5)
    fake = FakeExecutor(plan=lambda n, i, a: (1.0, PullOutcome(ok=True, ratelimit_remaining=5)))

    _, took = simulate(timed(run_job(job, nodes(3), fake)))

    assert took == pytest.approx(3.0)


def test_pauses_are_per_job() -> None:
    caps = RegistryCaps()
    caps.pause("a", REG_A, 100.0)
    assert caps.paused("a", now=50.0) == {REG_A: 100.0}
    assert caps.paused("b", now=50.0) == {}
    assert caps.pause("a", REG_A, 80.0) == 100.0  # never shortened
    assert caps.paused("a", now=100.0) == {}
    caps.pause("a", REG_B, 10.0)
    assert caps.paused("a", now=0.0) == {REG_B: 10.0}  # the expired one is gone


# --- cancellation ----------------------------------------------------------------------------


def test_cancellation_stops_pulls_in_flight_and_frees_slots() -> None:
    job = make_job(nodes=2)
    fake = FakeExecutor(plan=lambda n, i, a: (100.0, OK))
    caps = RegistryCaps()
    updates: list[NodeImageStatus] = []
    run = JobRun(job, nodes(4), fake, registry_caps=caps, on_update=updates.append)

    async def main() -> tuple[float, set[asyncio.Task[Any]]]:
        task = asyncio.create_task(run.run())
        await asyncio.sleep(10)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return now(), {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}

    finished, leftovers = simulate(main())

    assert finished == 10.0
    assert leftovers == set()
    assert [c.cancelled for c in fake.calls] == [True, True]
    assert_idle(caps, REG_A)
    phases = {k[0]: s.phase for k, s in run.statuses.items()}
    assert phases == {
        "n0": Phase.FAILED,
        "n1": Phase.FAILED,
        "n2": Phase.PENDING,
        "n3": Phase.PENDING,
    }
    assert run.statuses[("n0", job.images[0])].cause == "cancelled"
    assert updates[-1].cause == "cancelled"
    assert not run.running


def test_cancellation_right_after_start_frees_slots() -> None:
    caps = RegistryCaps()
    run = JobRun(make_job(), nodes(3), FakeExecutor(), registry_caps=caps)

    async def main() -> None:
        task = asyncio.create_task(run.run())
        await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    simulate(main())

    assert_idle(caps, REG_A)


def test_cancelled_job_hands_its_slots_to_another_job() -> None:
    caps = RegistryCaps()
    fake = FakeExecutor(plan=lambda n, i, a: (100.0, OK))
    a = JobRun(make_job(name="a", per_registry=2), nodes(4), fake, registry_caps=caps)
    b = make_job([f"{REG_A}/other:1"], name="b", per_registry=2)

    async def main() -> float:
        first = asyncio.create_task(a.run())
        await asyncio.sleep(1)
        second = asyncio.create_task(run_job(b, nodes(2), fake, registry_caps=caps))
        await asyncio.sleep(1)
        first.cancel()
        await second
        return now()

    assert simulate(main()) == 102.0  # b starts when a is cancelled at t=2
    assert fake.peak_hosts[REG_A] == 2


def test_a_run_runs_once() -> None:
    run = JobRun(make_job(), ["n0"], FakeExecutor())
    simulate(run.run())
    with pytest.raises(RuntimeError, match="runs once"):
        simulate(run.run())


# --- start delay and the virtual loop --------------------------------------------------------


def test_start_delay_is_seeded_jitter() -> None:
    job = Job(name="j", images=["x"], on_new_node=True, pacing=Pacing(jitter=30))
    first = [start_delay(job, random.Random(1)) for _ in range(3)]
    assert len(set(first)) == 1
    draws = [start_delay(job, random.Random(seed)) for seed in range(200)]
    assert all(0 <= d <= 30 for d in draws)
    assert max(draws) > 25 and min(draws) < 5
    still = Job(name="j", images=["x"], on_new_node=True, pacing=Pacing(jitter=0))
    assert start_delay(still, random.Random(1)) == 0.0


def test_virtual_loop_jumps_time_and_detects_deadlock() -> None:
    async def sleepy() -> float:
        await asyncio.gather(asyncio.sleep(3600), asyncio.sleep(5))
        return now()

    assert simulate(sleepy()) == 3600.0

    async def stuck() -> None:
        await asyncio.Event().wait()

    with pytest.raises(VirtualDeadlock):
        simulate(stuck())
