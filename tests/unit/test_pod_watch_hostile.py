"""The watch and the pod diagnosis against answers that are broken or hostile: an API answer
whose ``metadata`` is not an object, a consumer that fails, a re-list that fails half-way,
an Event message of multi-byte characters. Each ends in a clear state, never in a watch that
silently stopped."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import httpx2
import pytest
from lightkube import AsyncClient, KubeConfig
from prometheus_client import CollectorRegistry

from agent.cluster.pods.diagnosis import PodDiagnoser, PodReader
from agent.cluster.pods.metrics import PodMetrics
from agent.cluster.pods.pulltests import NodeTester
from agent.kube.events import EventRecorder, Involved
from agent.kube.watch import Backoff, Change, Listed, Reflector, Synced
from agent.service.config import PodDiagnosisSection
from tests.fakes.kube_api import FakeKubeApi, serve_kube_api
from tests.fakes.kube_objects import Container, pod

TOKEN = "recorder-token"
USER = "system:serviceaccount:pullcheck:pullcheck-aggregator"
PATH = "/api/v1/namespaces/shop/pods"
IMAGE = "registry.pullcheck.test:5000/team/app:v1.0.0"


def _list_body(metadata: Any, items: list[dict[str, Any]] | None = None) -> bytes:
    return json.dumps({"kind": "PodList", "metadata": metadata, "items": items or []}).encode()


class _Replayed:
    """An API server replaying a fixed sequence of answers to the Reflector, then a quiet
    watch that ends (what a server at its timeoutSeconds does)."""

    def __init__(self, answers: list[tuple[int, bytes]]) -> None:
        self.answers = answers
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        if self.answers:
            status, body = self.answers.pop(0)
            return httpx2.Response(status, content=body)
        if request.url.params.get("watch"):
            return httpx2.Response(200, content=b"")  # the stream ends at once
        return httpx2.Response(200, content=_list_body({"resourceVersion": "9"}))


async def _until(check: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    """Wait for a condition (a bound on waiting, not an assertion about speed)."""
    async with asyncio.timeout(seconds):
        while not check():
            await asyncio.sleep(0.01)
    assert check(), what


async def test_answers_whose_metadata_is_not_an_object_do_not_end_the_watch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = _Replayed(
        [
            (200, _list_body(["not", "an", "object"])),  # no resourceVersion: an error
            (200, _list_body({"resourceVersion": "5"})),
            # a watch event whose object's metadata is a string
            (200, b'{"type":"MODIFIED","object":{"metadata":"x"}}\n'),
        ]
    )
    seen: list[Listed | Synced | Change] = []
    restarts: list[str] = []

    async def sink(item: Listed | Synced | Change) -> None:
        seen.append(item)

    async with httpx2.AsyncClient(
        base_url="http://api.test", transport=httpx2.MockTransport(server)
    ) as http:
        reflector = Reflector(http, PATH, backoff=Backoff(0.001, 0.01), on_restart=restarts.append)
        task = asyncio.create_task(reflector.run(sink))
        await _until(lambda: len(server.requests) >= 5, "the watch went on")
        assert not task.done(), "the watch ended"
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert restarts[:3] == ["relist", "error", "relist"]
    assert "list /api/v1/namespaces/shop/pods: no resourceVersion in the answer" in caplog.text
    assert any(isinstance(s, Change) and s.object == {"metadata": "x"} for s in seen)
    assert reflector.version == "5"  # an event without a usable version leaves it
    # then streams that end at once, without an event: errors with a back-off, not a spin
    assert "very short watch" in reflector.last_error
    assert restarts[3] == "end"  # the stream with the event
    assert set(restarts[4:]) == {"error"} and len(restarts) >= 5


async def test_a_failing_consumer_lists_again_instead_of_stopping(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = _Replayed([])
    calls: list[str] = []

    async def sink(item: Listed | Synced | Change) -> None:
        calls.append(type(item).__name__)
        if len(calls) == 1:
            raise RuntimeError("a bug in the consumer")

    async with httpx2.AsyncClient(
        base_url="http://api.test", transport=httpx2.MockTransport(server)
    ) as http:
        reflector = Reflector(http, PATH, backoff=Backoff(0.001, 0.01))
        task = asyncio.create_task(reflector.run(sink))
        await _until(lambda: "Synced" in calls, "listed again after the failure")
        assert not task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert calls[:3] == ["Listed", "Listed", "Synced"]  # the failed page came again
    assert "the sink failed; listing again" in caplog.text
    assert "RuntimeError: a bug in the consumer" in caplog.text  # the bug, for its fixer


def _failing(name: str) -> dict[str, Any]:
    return pod(
        name,
        "shop",
        containers=[Container("app", IMAGE, waiting="ImagePullBackOff", error="401")],
        pull_secrets=["regcred"],
    )


async def test_a_relist_that_failed_half_way_does_not_keep_a_deleted_pod() -> None:
    diagnoser = PodDiagnoser(
        PodDiagnosisSection(enabled=True),
        reader=cast(PodReader, object()),  # observing reads nothing
        tester=cast(NodeTester, object()),
        recorder=None,
        metrics=PodMetrics(CollectorRegistry()),
    )
    a, b = _failing("web-a"), _failing("web-b")
    await diagnoser.observe(Listed([a, b], first=True))
    await diagnoser.observe(Synced("10"))
    assert [d.pod for d in diagnoser.diagnoses()] == ["web-a", "web-b"]
    # a re-list shows both on its first page, then fails; web-b is deleted meanwhile
    await diagnoser.observe(Listed([a], first=True))
    await diagnoser.observe(Listed([b]))
    # the next re-list no longer shows web-b: it drops out
    await diagnoser.observe(Listed([a], first=True))
    await diagnoser.observe(Synced("12"))
    assert [d.pod for d in diagnoser.diagnoses()] == ["web-a"]


@pytest.fixture
def api() -> Iterator[FakeKubeApi]:
    with serve_kube_api() as fake:
        fake.add_user(TOKEN, USER)
        fake.grant(USER, "events", ("create", "get", "patch"))
        yield fake


async def test_an_event_message_is_bounded_in_bytes_not_characters(
    api: FakeKubeApi, tmp_path: Path
) -> None:
    config = KubeConfig.from_file(api.kubeconfig(tmp_path / "kubeconfig", TOKEN))
    client = AsyncClient(config, namespace="shop", trust_env=False)
    recorder = EventRecorder(client, component="pullcheck-aggregator", instance="agg-0")
    involved = Involved("Pod", "shop", "web-1", "uid-1", field_path="spec.containers{app}")
    message = "unauthorized: " + "—" * 1000  # 3 bytes each in UTF-8
    try:
        assert await recorder.record(involved, reason="PullcheckDiagnosis", message=message) == (
            "created"
        )
    finally:
        await client.close()
    [event] = api.stored("Event", "shop")
    stored = event["message"]
    assert len(stored.encode()) <= 1024
    assert message.startswith(stored) and len(stored.encode()) > 1020  # whole characters only
    assert dt.datetime.fromisoformat(event["firstTimestamp"].replace("Z", "+00:00"))
