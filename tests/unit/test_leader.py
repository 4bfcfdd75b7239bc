"""Leader election over a Lease (agent/cluster/leader.py) against the fake kube-apiserver.

Each replica is a :class:`LeaseElection` with its own lightkube client and its own hand-driven
monotonic clock, so expiry is decided exactly as client-go decides it: by how long *this* replica
has seen the record unchanged, never by the timestamps in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import AsyncClient

from agent.cluster.discovery import kube_client
from agent.cluster.leader import (
    LEADER_URL_ANNOTATION,
    AlwaysLeader,
    Election,
    LeaseElection,
    LeaseLock,
    advertise_url,
    make_election,
    while_leading,
)
from agent.service.config import DiscoverySection, LeaderElectionSection
from tests.fakes.kube_api import FakeKubeApi, serve_kube_api

NAMESPACE, NAME = "pullcheck", "pullcheck-aggregator"
TOKEN = "aggregator-token"
USER = "system:serviceaccount:pullcheck:pullcheck-aggregator"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Wall:
    """The wall clock written into the record: the real one unless the test sets it."""

    def __init__(self) -> None:
        self.fixed: datetime | None = None

    def __call__(self) -> datetime:
        return self.fixed or datetime.now(UTC)


class Hand(Election):
    """An election the test drives."""

    mode = "lease"

    def leader(self) -> None:
        return None

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()

    def lead(self, leading: bool) -> None:
        self._set_leading(leading)


async def _until(check: Any) -> None:
    async with asyncio.timeout(5):
        while not check():
            await asyncio.sleep(0.01)


@pytest.fixture
def api() -> Iterator[FakeKubeApi]:
    with serve_kube_api() as fake:
        fake.add_user(TOKEN, USER)
        fake.grant_leases(USER, NAMESPACE)
        yield fake


def _connector(api: FakeKubeApi, tmp_path: Path) -> Any:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": api.url}}],
                "users": [{"name": "aggregator", "user": {"token": TOKEN}}],
                "contexts": [
                    {"name": "fake", "context": {"cluster": "fake", "user": "aggregator"}}
                ],
                "current-context": "fake",
            }
        )
    )
    section = DiscoverySection(kubeconfig=str(path), timeout=5)

    def connect() -> tuple[AsyncClient, str]:
        return kube_client(section)

    return connect


@pytest.fixture
def wall() -> Wall:
    return Wall()


@pytest.fixture
async def replicas(
    api: FakeKubeApi, tmp_path: Path, wall: Wall
) -> AsyncIterator[tuple[LeaseElection, LeaseElection, Clock, Clock]]:
    clocks = Clock(), Clock()
    made = [
        LeaseElection(
            LeaseLock(_connector(api, tmp_path), NAMESPACE, NAME),
            identity=identity,
            url=f"http://10.0.0.{index + 1}:8480",
            lease_duration=15,
            renew_deadline=10,
            retry_period=2,
            clock=clocks[index],
            now=wall,
        )
        for index, identity in enumerate(("agg-a", "agg-b"))
    ]
    yield made[0], made[1], clocks[0], clocks[1]
    for election in made:
        await election.lock.aclose()


def _spec(api: FakeKubeApi) -> dict[str, Any]:
    lease = api.lease(NAMESPACE, NAME)
    assert lease is not None
    spec: dict[str, Any] = lease["spec"]
    return spec


async def test_acquire_creates_the_lease_with_the_record_and_url(
    api: FakeKubeApi, replicas: tuple[LeaseElection, LeaseElection, Clock, Clock]
) -> None:
    a, _b, _, _ = replicas
    assert api.lease(NAMESPACE, NAME) is None
    assert await a.try_acquire_or_renew()
    lease = api.lease(NAMESPACE, NAME)
    assert lease is not None
    spec = lease["spec"]
    assert spec["holderIdentity"] == "agg-a" and spec["leaseDurationSeconds"] == 15
    assert spec["leaseTransitions"] == 0 and spec["acquireTime"] == spec["renewTime"]
    assert lease["metadata"]["annotations"][LEADER_URL_ANNOTATION] == "http://10.0.0.1:8480"
    assert [(r.method, r.status) for r in api.lease_requests()] == [("GET", 404), ("POST", 201)]


async def test_a_valid_lease_is_not_taken_and_names_the_leader(
    api: FakeKubeApi, replicas: tuple[LeaseElection, LeaseElection, Clock, Clock]
) -> None:
    a, b, _, clock_b = replicas
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    leader = b.leader()
    assert leader is not None and (leader.identity, leader.url) == ("agg-a", "http://10.0.0.1:8480")
    # B's clock runs on, but A renews: each renewal changes the record, so B's count restarts
    for _ in range(5):
        clock_b.advance(10)
        assert await a.try_acquire_or_renew()
        assert not await b.try_acquire_or_renew()
    assert _spec(api)["holderIdentity"] == "agg-a"


async def test_renewal_keeps_acquire_time_and_transitions(
    api: FakeKubeApi, replicas: tuple[LeaseElection, LeaseElection, Clock, Clock], wall: Wall
) -> None:
    a, _b, clock_a, _ = replicas
    wall.fixed = datetime(2026, 1, 1, 12, 0, 0, 5, tzinfo=UTC)
    assert await a.try_acquire_or_renew()
    first = _spec(api)
    clock_a.advance(2)
    wall.fixed += timedelta(seconds=2)
    assert await a.try_acquire_or_renew()
    renewed = _spec(api)
    assert renewed["acquireTime"] == first["acquireTime"] == "2026-01-01T12:00:00.000005Z"
    assert renewed["renewTime"] == "2026-01-01T12:00:02.000005Z"
    assert renewed["leaseTransitions"] == 0
    # the holder renews on the record it observed, without reading it first (fast path)
    assert [r.method for r in api.lease_requests()][-1:] == ["PUT"]
    assert len(api.lease_requests()) == 3


async def test_a_whole_second_is_written_as_a_micro_time(
    api: FakeKubeApi, replicas: tuple[LeaseElection, LeaseElection, Clock, Clock], wall: Wall
) -> None:
    """The API rejects a MicroTime without its six fraction digits (the fake does too)."""
    a, _b, _, _ = replicas
    wall.fixed = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert await a.try_acquire_or_renew(), a.last_error
    assert _spec(api)["renewTime"] == "2026-01-01T12:00:00.000001Z"


async def test_expiry_takeover_counts_from_the_last_change_this_replica_saw(
    api: FakeKubeApi, replicas: tuple[LeaseElection, LeaseElection, Clock, Clock]
) -> None:
    a, b, _, clock_b = replicas
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()  # B sees the record now
    clock_b.advance(14.9)  # A stopped renewing; not yet a lease duration on B's clock
    assert not await b.try_acquire_or_renew()
    clock_b.advance(0.2)
    assert await b.try_acquire_or_renew()
    spec = _spec(api)
    assert spec["holderIdentity"] == "agg-b" and spec["leaseTransitions"] == 1
    lease = api.lease(NAMESPACE, NAME)
    assert lease is not None
    assert lease["metadata"]["annotations"][LEADER_URL_ANNOTATION] == "http://10.0.0.2:8480"


async def test_timestamps_in_the_record_are_not_compared_with_the_local_clock(
    api: FakeKubeApi, replicas: tuple[LeaseElection, LeaseElection, Clock, Clock]
) -> None:
    """A record renewed "an hour ago" by a skewed clock is still valid for a whole duration."""
    _a, b, _, clock_b = replicas
    stale = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="microseconds")
    api.put_lease(
        NAMESPACE,
        NAME,
        {
            "holderIdentity": "agg-old",
            "leaseDurationSeconds": 15,
            "acquireTime": stale.replace("+00:00", "Z"),
            "renewTime": stale.replace("+00:00", "Z"),
            "leaseTransitions": 4,
        },
    )
    assert not await b.try_acquire_or_renew()
    clock_b.advance(15.1)
    assert await b.try_acquire_or_renew()
    assert _spec(api)["leaseTransitions"] == 5


async def test_conflict_loses_the_race(
    api: FakeKubeApi, replicas: tuple[LeaseElection, LeaseElection, Clock, Clock]
) -> None:
    """Both see an expired lease; the second write carries a stale resourceVersion: 409."""
    a, b, clock_a, clock_b = replicas
    api.put_lease(NAMESPACE, NAME, {"holderIdentity": "agg-gone", "leaseDurationSeconds": 15})
    assert not await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    clock_a.advance(16)
    clock_b.advance(16)

    real_update = b.lock.update

    async def update_after_a(record: Any) -> None:
        assert await a.try_acquire_or_renew()  # A writes between B's read and B's write
        await real_update(record)

    b.lock.update = update_after_a  # type: ignore[method-assign]
    assert not await b.try_acquire_or_renew()
    assert b.last_error is not None and "409 Conflict" in b.last_error
    assert _spec(api)["holderIdentity"] == "agg-a"
    assert [r.status for r in api.lease_requests()].count(409) == 1
    b.lock.update = real_update  # type: ignore[method-assign]
    assert not await b.try_acquire_or_renew()  # re-reads: A holds a valid lease now
    leader = b.leader()
    assert leader is not None and leader.identity == "agg-a"


async def test_release_lets_another_replica_take_over_at_once(
    api: FakeKubeApi, replicas: tuple[LeaseElection, LeaseElection, Clock, Clock]
) -> None:
    a, b, _, _ = replicas
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    assert await a.release()
    spec = _spec(api)
    assert "holderIdentity" not in spec and spec["leaseDurationSeconds"] == 1
    lease = api.lease(NAMESPACE, NAME)
    assert lease is not None and LEADER_URL_ANNOTATION not in lease["metadata"].get(
        "annotations", {}
    )
    assert await b.try_acquire_or_renew()  # no waiting: the record has no holder
    assert _spec(api)["holderIdentity"] == "agg-b" and _spec(api)["leaseTransitions"] == 1


async def test_rbac_per_verb_is_reported_with_the_grant_to_add(
    api: FakeKubeApi, replicas: tuple[LeaseElection, LeaseElection, Clock, Clock]
) -> None:
    a, _b, _, _ = replicas
    api.revoke_leases(USER)
    api.grant_leases(USER, NAMESPACE, ["get"])
    assert not await a.try_acquire_or_renew()
    assert a.last_error is not None
    assert "403 Forbidden" in a.last_error and "cannot create resource" in a.last_error
    assert "grant get, create and update on leases.coordination.k8s.io" in a.last_error
    assert api.lease(NAMESPACE, NAME) is None


async def test_the_leader_stops_when_renewal_fails_past_the_deadline(
    api: FakeKubeApi, tmp_path: Path
) -> None:
    changes: list[bool] = []
    election = LeaseElection(
        LeaseLock(_connector(api, tmp_path), NAMESPACE, NAME),
        identity="agg-a",
        url="http://10.0.0.1:8480",
        lease_duration=3,
        renew_deadline=0.6,
        retry_period=0.1,
        on_change=changes.append,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(election.run(stop))
    try:
        await asyncio.wait_for(election.wait_leading(), 10)
        api.revoke_leases(USER)  # the API refuses every renewal from now on
        revoked = len(api.lease_requests())
        await asyncio.wait_for(election.wait_following(), 10)
        # the renewals were refused (the last attempt may instead run out of the deadline's
        # remainder on a busy machine, and say so)
        assert election.last_error is not None
        assert any(r.status == 403 for r in api.lease_requests()[revoked:])
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert changes == [True, False]
    assert _spec(api)["holderIdentity"] == "agg-a"  # not released: the API refused that too


async def test_run_releases_on_graceful_stop(api: FakeKubeApi, tmp_path: Path) -> None:
    election = LeaseElection(
        LeaseLock(_connector(api, tmp_path), NAMESPACE, NAME),
        identity="agg-a",
        url="http://10.0.0.1:8480",
        lease_duration=3,
        renew_deadline=0.6,
        retry_period=0.1,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(election.run(stop))
    await asyncio.wait_for(election.wait_leading(), 10)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert not election.leading
    spec = _spec(api)
    assert "holderIdentity" not in spec and spec["leaseDurationSeconds"] == 1


async def test_while_leading_runs_work_only_during_a_term() -> None:
    election = Hand("agg-a", "http://10.0.0.1:8480")
    terms: list[str] = []

    async def work(term_stop: asyncio.Event) -> None:
        terms.append("start")
        try:
            await term_stop.wait()
        finally:
            terms.append("stop")

    stop = asyncio.Event()
    runner = asyncio.create_task(while_leading(election, work, stop, name="test work"))
    await asyncio.sleep(0.05)
    assert terms == []  # not leading: nothing runs
    election.lead(True)
    await _until(lambda: terms == ["start"])
    election.lead(False)
    await _until(lambda: terms == ["start", "stop"])
    election.lead(True)
    await _until(lambda: terms == ["start", "stop", "start"])
    stop.set()
    await asyncio.wait_for(runner, 5)
    assert terms == ["start", "stop", "start", "stop"]


async def test_while_leading_cancels_work_that_does_not_stop() -> None:
    election = AlwaysLeader("solo", "http://127.0.0.1:8480")
    stop_election = asyncio.Event()
    elected = asyncio.create_task(election.run(stop_election))
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def stubborn(_term_stop: asyncio.Event) -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # ignores term_stop
        except asyncio.CancelledError:
            cancelled.set()
            raise

    stop = asyncio.Event()
    runner = asyncio.create_task(while_leading(election, stubborn, stop, name="w", grace=0.05))
    await asyncio.wait_for(started.wait(), 5)
    stop.set()
    await asyncio.wait_for(runner, 5)
    assert cancelled.is_set()
    stop_election.set()
    await elected


def test_make_election_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_client() -> tuple[AsyncClient, str]:
        raise AssertionError("no API client is built before the election runs")

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("POD_NAME", "pullcheck-aggregator-7c9d-x2")
    monkeypatch.setenv("POD_IP", "10.1.2.3")
    monkeypatch.setenv("POD_NAMESPACE", "tools")
    auto = make_election(
        LeaderElectionSection(), listen="0.0.0.0:8480", client=no_client, default_namespace="x"
    )
    assert isinstance(auto, AlwaysLeader) and auto.identity == "pullcheck-aggregator-7c9d-x2"
    assert auto.url == "http://10.1.2.3:8480"
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    lease = make_election(
        LeaderElectionSection(), listen="0.0.0.0:8480", client=no_client, default_namespace="x"
    )
    assert isinstance(lease, LeaseElection)
    assert lease.lock.describe() == "tools/pullcheck-aggregator"
    assert (lease.lease_duration, lease.renew_deadline, lease.retry_period) == (15, 10.0, 2.0)


def test_advertise_url_and_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("POD_IP", "POD_NAME"):
        monkeypatch.delenv(name, raising=False)
    assert advertise_url("127.0.0.1:9000") == "http://127.0.0.1:9000"
    monkeypatch.setenv("POD_IP", "fd00::7")
    assert advertise_url("[::]:8480") == "http://[fd00::7]:8480"
    monkeypatch.delenv("POD_IP")
    first = make_election(
        LeaderElectionSection(mode="always"),
        listen="127.0.0.1:1",
        client=lambda: (_ for _ in ()).throw(AssertionError()),
        default_namespace="x",
    )
    second = make_election(
        LeaderElectionSection(mode="always"),
        listen="127.0.0.1:1",
        client=lambda: (_ for _ in ()).throw(AssertionError()),
        default_namespace="x",
    )
    assert first.identity != second.identity  # two processes on one host never share one


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lease_duration": 10, "renew_deadline": 10}, "lease_duration (10 s) must be greater"),
        ({"renew_deadline": 2, "retry_period": 2}, "renew_deadline (2 s) must be greater than 1.2"),
        ({"retry_period": float("nan")}, "retry_period"),
        ({"lease_duration": -1}, "lease_duration"),
        ({"renew_deadline": float("inf")}, "renew_deadline"),
        ({"lease_name": "Not_A_Name"}, "is not a DNS subdomain"),
        ({"lease_namespace": "a.b"}, "is not a namespace name"),
        ({"advertise_url": "http://10.0.0.1:8480/path"}, "is not a base URL"),
        ({"identity": " x"}, "leading or trailing spaces"),
        ({"mode": "never"}, "mode"),
    ],
)
def test_bad_settings_are_named(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LeaderElectionSection(**values)
