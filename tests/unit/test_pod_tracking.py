"""The diagnosis' bookkeeping at scale, without timing anything: a watch event or a piece of
work touches only its own containers (never a scan of every tracked one), the indexes hold
exactly what is tracked, and the per-cause counts follow every change. Also the one rule for
waiting containers, on the raw JSON and on a typed pod's ``to_dict()``."""

from __future__ import annotations

import datetime as dt
from collections import Counter, OrderedDict
from typing import Any, cast

import pytest
from lightkube.resources.core_v1 import Pod, Secret, ServiceAccount
from prometheus_client import CollectorRegistry

from agent.cluster.pods.diagnosis import PodDiagnoser, PodReader
from agent.cluster.pods.metrics import PodMetrics
from agent.cluster.pods.pulltests import NodeTester
from agent.cluster.pods.tracking import PENDING, Entry, Tracked, Verdict, WorkKey
from agent.credentials import Keyring
from agent.kube.watch import Change, Listed, Synced
from agent.models import PullTestResult
from agent.pods.waiting import PodKey, field_path, waiting_on_pull
from agent.service.config import PodDiagnosisSection
from tests.fakes.kube_objects import Container, WaitingReason, pod

NAMESPACE = "shop"
PODS = 3000
NODES = 50


class _CountingDict(OrderedDict[Any, Any]):
    """An OrderedDict that counts every walk over it (iteration, keys, values, items)."""

    walks = 0

    def __iter__(self) -> Any:
        type(self).walks += 1
        return super().__iter__()

    def keys(self) -> Any:
        type(self).walks += 1
        return super().keys()

    def values(self) -> Any:
        type(self).walks += 1
        return super().values()

    def items(self) -> Any:
        type(self).walks += 1
        return super().items()


def _image(number: int) -> str:
    return f"registry.pullcheck.test:5000/team/app-{number % 7}:v1"


def _failing(number: int, reason: WaitingReason = "ImagePullBackOff") -> dict[str, Any]:
    return pod(
        f"web-{number}",
        NAMESPACE,
        containers=[
            Container("app", _image(number), waiting=reason, error="401"),
            Container("sidecar", "registry.pullcheck.test:5000/team/proxy:v1", waiting=reason),
        ],
        node=f"node-{number % NODES}",
    )


class _Reader:
    def __init__(self) -> None:
        self.reads: list[str] = []

    async def get_pod(self, namespace: str, name: str) -> Pod:
        self.reads.append(name)
        return cast(Pod, Pod.from_dict(_failing(int(name.rsplit("-", 1)[1]))))

    async def get_secret(self, namespace: str, name: str) -> Secret:
        raise AssertionError("these pods name no pull secret")

    async def get_service_account(self, namespace: str, name: str) -> ServiceAccount:
        return cast(
            ServiceAccount,
            ServiceAccount.from_dict({"metadata": {"name": name, "namespace": namespace}}),
        )


class _Tester:
    def __init__(self) -> None:
        self.runs: list[tuple[str, str]] = []

    async def run(self, node: str, image: str, keyring: Keyring | None) -> PullTestResult | str:
        self.runs.append((node, image))
        return f"no pullcheck agent found on node {node}"


def _diagnoser(reader: _Reader, tester: _Tester, **section: Any) -> PodDiagnoser:
    return PodDiagnoser(
        PodDiagnosisSection(enabled=True, max_pending=100_000, **section),
        reader=cast(PodReader, reader),
        tester=cast(NodeTester, tester),
        recorder=None,
        metrics=PodMetrics(CollectorRegistry()),
    )


def _recount(tracked: Tracked) -> dict[str, int]:
    return dict(Counter(entry.cause for _container, entry in tracked.items()))


async def test_events_and_work_touch_their_own_containers_only() -> None:
    """With thousands tracked, no event and no piece of work walks the whole table (the
    quadratic scan this replaced): the table is walked 0 times, whatever its size."""
    reader, tester = _Reader(), _Tester()
    diagnoser = _diagnoser(reader, tester, max_tracked=100_000, tests_per_minute=6000)
    tracked = diagnoser._tracked
    tracked._entries = _CountingDict()
    _CountingDict.walks = 0
    for first in range(0, PODS, 500):
        page = [_failing(n) for n in range(first, first + 500)]
        await diagnoser.observe(Listed(page, first=first == 0))
    await diagnoser.observe(Synced("10"))
    works = len({(_image(n), n % NODES) for n in range(PODS)}) + NODES  # app's, sidecar's
    assert tracked.sizes() == (2 * PODS, PODS, works)
    for number in range(0, PODS, 3):
        await diagnoser.observe(Change("MODIFIED", _failing(number, "ErrImagePull")))
    for number in range(1, PODS, 30):
        await diagnoser.observe(Change("DELETED", _failing(number)))
    await diagnoser.observe(Change("ADDED", _failing(PODS)))
    deleted = len(range(1, PODS, 30))
    assert tracked.sizes()[:2] == (2 * (PODS + 1 - deleted), PODS + 1 - deleted)
    work = list(diagnoser._pending)
    for key in work[:20]:
        await diagnoser.settle(key)
    assert len(tester.runs) == 20 and len(reader.reads) == 20  # one pod read per piece of work
    assert _CountingDict.walks == 0, "an event or a piece of work walked every tracked container"
    # the counts kept along the way are what a full count finds
    assert tracked.causes() == _recount(tracked)
    assert tracked.causes()["error"] == sum(len(tracked.of_work(k)) for k in work[:20])


def _entry(work: WorkKey, uid: str = "uid-1") -> Entry:
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    return Entry(uid, work[1], work[2], "ErrImagePull", False, work, now, now)


def test_the_indexes_hold_exactly_what_is_tracked() -> None:
    tracked = Tracked()
    work_a: WorkKey = ("shop", "app:v1", "node-1", ())
    work_b: WorkKey = ("shop", "app:v1", "node-1", ("regcred",))
    web1, web1_side, web2 = (
        ("shop", "web-1", "app"),
        ("shop", "web-1", "side"),
        ("shop", "web-2", "app"),
    )
    tracked.put(web1, _entry(work_a))
    tracked.put(web1_side, _entry(work_a))
    tracked.put(web2, _entry(work_a))
    assert tracked.sizes() == (3, 2, 1)
    assert tracked.of_pod(PodKey("shop", "web-1")) == [web1, web1_side]
    assert tracked.of_work(work_a) == [web1, web1_side, web2]
    # a pod's secrets changed: its containers move to the new work key, the old one empties
    tracked.seen(web2, work_b)
    assert tracked.of_work(work_b) == [web2] and web2 not in tracked.of_work(work_a)
    verdict = Verdict("unauthorized", "401", "fix the secret", "registry.pullcheck.test")
    tracked.judge(web1, verdict)
    assert tracked.causes() == {"unauthorized": 1, PENDING: 2}
    tracked.drop(web1)
    tracked.drop(web1_side)
    tracked.drop(web1)  # twice: nothing left to drop
    assert tracked.sizes() == (1, 1, 1)  # no empty pod or work entry is kept
    assert tracked.of_pod(PodKey("shop", "web-1")) == [] and tracked.of_work(work_a) == []
    assert tracked.causes() == {PENDING: 1}
    # replacing a container's entry (a new pod of the same name) re-indexes it
    tracked.put(web2, _entry(work_a, uid="uid-2"))
    assert tracked.sizes() == (1, 1, 1) and tracked.of_work(work_a) == [web2]
    assert tracked.of_work(work_b) == []


def test_eviction_keeps_the_most_recently_seen_and_cleans_the_indexes() -> None:
    tracked = Tracked()
    works = [("shop", f"app-{n}:v1", "node-1", ()) for n in range(5)]
    for number, work in enumerate(works):
        tracked.put(("shop", f"web-{number}", "app"), _entry(work))
    tracked.seen(("shop", "web-0", "app"), works[0])  # seen again: the newest now
    tracked.evict(2)
    assert [c for c, _e in tracked.items()] == [("shop", "web-4", "app"), ("shop", "web-0", "app")]
    assert tracked.sizes() == (2, 2, 2)
    assert tracked.causes() == {PENDING: 2}


async def test_a_full_table_evicts_the_least_recently_seen_containers() -> None:
    diagnoser = _diagnoser(_Reader(), _Tester(), max_tracked=3)
    for number in range(4):
        await diagnoser.observe(Change("ADDED", _failing(number)))
    assert [(d.pod, d.container) for d in diagnoser.diagnoses()] == [
        ("web-2", "sidecar"),
        ("web-3", "app"),
        ("web-3", "sidecar"),
    ]
    assert diagnoser._tracked.sizes()[:2] == (3, 2)
    assert diagnoser._tracked.causes() == {PENDING: 3}


# --- which containers wait on a pull: one rule for raw JSON and typed pods -------------------


@pytest.mark.parametrize(
    "reason", ["ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"]
)
def test_waiting_is_the_same_from_the_raw_object_and_a_typed_pod(reason: WaitingReason) -> None:
    raw = pod(
        "web-1",
        NAMESPACE,
        init_containers=[Container("setup", "busybox:1.36", waiting=reason)],
        containers=[
            Container("app", "registry.pullcheck.test:5000/app:v1", policy="Never", waiting=reason),
            Container("ok", "nginx:1.27"),
        ],
    )
    found = waiting_on_pull(raw)
    assert found == waiting_on_pull(Pod.from_dict(raw).to_dict())
    assert [(w.container, w.init, w.reason) for w in found] == [
        ("setup", True, reason),
        ("app", False, reason),
    ]
    assert found[1].policy == "Never" and found[1].image == "registry.pullcheck.test:5000/app:v1"
    assert found[0].field_path == "spec.initContainers{setup}"
    assert field_path("app", False) == "spec.containers{app}"


def test_waiting_bounds_hostile_statuses() -> None:
    raw = _failing(1)
    status = raw["status"]["containerStatuses"][0]
    status["state"]["waiting"]["message"] = "x" * 100_000
    raw["status"]["containerStatuses"] = [status] * 1000 + ["garbage", None, 7]
    raw["spec"]["containers"][0]["image"] = "i" * 5000
    found = waiting_on_pull(raw)
    assert len(found) == 256  # of each kind, at most
    assert len(found[0].message) == 1024 and len(found[0].image) == 1024
    assert waiting_on_pull({"spec": "x", "status": {"containerStatuses": {"a": 1}}}) == []
    assert waiting_on_pull({}) == []
