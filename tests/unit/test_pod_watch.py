"""The automatic pod diagnosis against the fake API server (real HTTP, the apiserver's shapes):
the watch (list, bookmarks, 410 Gone, errors), one test per image x node x pull secrets for a
storm of failing replicas, Events counted not duplicated (also across a restart), a pod that
pulls again drops out, and no secret value anywhere."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest

from agent.cluster.state import AggregatorState
from agent.credentials import loads_docker_config
from agent.kube.watch import Backoff, Change, Listed, Reflector, Synced, resource_path
from agent.service.config import Settings
from tests.fakes.kube_api import FakeKubeApi, serve_kube_api
from tests.fakes.kube_objects import Container, dockerconfigjson_secret, pod
from tests.unit.agent_replay import recorded

TOKEN = "aggregator-token-1"
USER = "system:serviceaccount:pullcheck:pullcheck-aggregator"
SECRET = "s3cr3t-Pa55-9d2f"
REGISTRY = "registry.pullcheck.test:5000"
IMAGE = f"{REGISTRY}/team/app:v1.0.0"
RUNTIME_401 = (
    f'rpc error: code = Unknown desc = failed to pull and unpack image "{IMAGE}": failed to '
    f'resolve reference "{IMAGE}": pulling from host {REGISTRY} failed with status code '
    "[manifests v1.0.0]: 401 Unauthorized"
)


@pytest.fixture
def api() -> Iterator[FakeKubeApi]:
    with serve_kube_api() as fake:
        fake.add_user(TOKEN, USER)
        for resource, verbs in (
            ("pods", ("get", "list", "watch")),
            ("secrets", ("get",)),
            ("serviceaccounts", ("get",)),
            ("events", ("create", "get", "patch")),
        ):
            fake.grant(USER, resource, verbs)
        yield fake


def _failing(
    name: str, *, node: str = "node-1", reason: str = "ImagePullBackOff"
) -> dict[str, Any]:
    return pod(
        name,
        "shop",
        containers=[Container("app", IMAGE, waiting=reason, error=RUNTIME_401)],  # type: ignore[arg-type]
        node=node,
        pull_secrets=["regcred"],
    )


class FakeAgents(httpx.AsyncBaseTransport):
    """Agents that pass a pull only with an entry for REGISTRY holding SECRET; counts tests."""

    def __init__(self) -> None:
        self.tests: list[tuple[str, str]] = []  # (node, image)
        self.bodies: list[bytes] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        node = request.url.host.split(".")[0]
        if request.url.path == "/healthz":
            return httpx.Response(200, json={"status": "ok", "node": node})
        body = json.loads(await request.aread())
        self.bodies.append(json.dumps(body).encode())
        self.tests.append((node, body["image"]))
        keyring = loads_docker_config(json.dumps(body["docker_config"]), origin="request")
        passwords = [c.password for c in keyring.lookup(body["image"].rsplit(":", 1)[0])]
        _status, result = recorded("pulltest-good-pull")
        result |= {"node": node, "image": body["image"], "reference": body["image"]}
        if SECRET not in passwords:
            result |= {
                "success": False,
                "cause": "unauthorized",
                "summary": f"{REGISTRY} refused the credentials (401)",
                "remedy": "fix the pull secret",
                "runtime_error": RUNTIME_401,
                "image_info": None,
            }
        return httpx.Response(200, json=result)


def _settings(tmp_path: Path, api: FakeKubeApi, **diagnosis: Any) -> Settings:
    token = tmp_path / "token"
    token.write_text("agent-token\n")
    kubeconfig = api.kubeconfig(tmp_path / "kubeconfig", TOKEN, namespace="pullcheck")
    return Settings.model_validate(
        {
            "token_file": str(token),
            "allow": ["*.pullcheck.test:*/*"],
            "aggregator": {
                "discovery": {
                    "mode": "static",
                    "agents": ["node-1=node-1.test:8479", "node-2=node-2.test:8479"],
                    "agent_scheme": "https",
                    "kubeconfig": str(kubeconfig),
                },
                "leader_election": {"mode": "always"},
                "pod_diagnosis": {"enabled": True, "watch_timeout": 10, **diagnosis},
            },
        }
    )


@asynccontextmanager
async def _diagnosing(
    tmp_path: Path, api: FakeKubeApi, agents: FakeAgents, **diagnosis: Any
) -> AsyncIterator[AggregatorState]:
    state = AggregatorState(_settings(tmp_path, api, **diagnosis), transport=agents)
    stop = asyncio.Event()
    task = asyncio.create_task(state.pods.run(stop))
    try:
        yield state
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await state.close()


async def _until(check: Callable[[], bool], what: str, seconds: float = 15.0) -> None:
    """Wait for a condition (a bound on waiting, not an assertion about speed)."""
    async with asyncio.timeout(seconds):
        while not check():
            await asyncio.sleep(0.02)
    assert check(), what


def _http(api: FakeKubeApi, token: str) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        base_url=api.url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx2.Timeout(5, read=30),
        trust_env=False,
    )


def _events(api: FakeKubeApi) -> list[dict[str, Any]]:
    return [e for e in api.stored("Event", "shop") if e.get("reason") == "PullcheckDiagnosis"]


# --- the watch ------------------------------------------------------------------------------


async def test_reflector_lists_follows_bookmarks_and_lists_again_after_410(
    api: FakeKubeApi, tmp_path: Path
) -> None:
    api.put(_failing("web-1"))
    seen: list[Listed | Synced | Change] = []
    restarts: list[str] = []

    async def sink(item: Listed | Synced | Change) -> None:
        seen.append(item)

    async with _http(api, TOKEN) as http:
        reflector = Reflector(
            http, resource_path("pods", "shop"), watch_timeout=10, on_restart=restarts.append
        )
        task = asyncio.create_task(reflector.run(sink))
        await _until(lambda: any(isinstance(s, Synced) for s in seen), "listed")
        listed = [o["metadata"]["name"] for s in seen if isinstance(s, Listed) for o in s.objects]
        assert listed == ["web-1"] and restarts == ["relist"]
        await _until(lambda: api.watch_count() == 1, "watching")
        api.put(_failing("web-2"))
        await _until(lambda: any(isinstance(s, Change) for s in seen), "a change")
        change = next(s for s in seen if isinstance(s, Change))
        assert change.type == "ADDED" and change.object["metadata"]["name"] == "web-2"
        api.bookmark()
        await _until(lambda: reflector.version == str(api.resource_version), "bookmark")
        # the stream ends and the version left the window: 410 Gone → list again
        api.put(_failing("web-3"))
        await _until(lambda: len([s for s in seen if isinstance(s, Change)]) == 2, "web-3")
        api.compact()
        reflector.version = "4701"  # as after a long disconnection: out of the server's window
        api.close_watches()
        await _until(lambda: restarts.count("relist") == 2, "relisted")
        # the closed stream ends cleanly, or as a disconnect when the server closed it before
        # its response head went out: either way the resumed watch is refused (410) → re-list
        assert restarts[-3] in ("end", "error") and restarts[-2:] == ["expired", "relist"]
        names = {o["metadata"]["name"] for s in seen if isinstance(s, Listed) for o in s.objects}
        assert names == {"web-1", "web-2", "web-3"}
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_reflector_survives_api_errors_and_names_them(api: FakeKubeApi) -> None:
    api.fail("pods", 500, times=2, verb="list")
    restarts: list[str] = []
    synced = asyncio.Event()

    async def sink(item: Listed | Synced | Change) -> None:
        if isinstance(item, Synced):
            synced.set()

    async with _http(api, "nope") as http:
        reflector = Reflector(
            http, resource_path("pods"), backoff=Backoff(0.01, 0.05), on_restart=restarts.append
        )
        task = asyncio.create_task(reflector.run(sink))
        await _until(lambda: restarts.count("error") >= 2, "errors")
        assert "HTTP 401" in reflector.last_error and "list /api/v1/pods" in reflector.last_error
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    async with _http(api, TOKEN) as http:
        reflector = Reflector(
            http, resource_path("pods"), backoff=Backoff(0.01, 0.05), on_restart=restarts.append
        )
        task = asyncio.create_task(reflector.run(sink))
        await asyncio.wait_for(synced.wait(), 15)
        assert "HTTP 500" in reflector.last_error  # the injected failures, then a good list
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# --- the diagnosis --------------------------------------------------------------------------


async def test_a_storm_of_failing_replicas_is_one_test_per_node_and_image(
    api: FakeKubeApi, tmp_path: Path
) -> None:
    api.put(dockerconfigjson_secret("regcred", "shop", {REGISTRY: ("deploy", "wrong-password")}))
    for number in range(40):
        api.put(_failing(f"web-{number}", node="node-1" if number % 2 else "node-2"))
    agents = FakeAgents()
    async with _diagnosing(tmp_path, api, agents) as state:
        await _until(lambda: len(_events(api)) == 40, "one Event per pod")
        assert sorted(agents.tests) == [("node-1", IMAGE), ("node-2", IMAGE)]
        diagnoser = state.pods.diagnoser
        assert diagnoser is not None
        listed = diagnoser.diagnoses("shop")
        assert len(listed) == 40 and {d.cause for d in listed} == {"unauthorized"}
        # kubelet retries every replica: verdicts reused, Events not rewritten within the TTL
        for number in range(40):
            api.put(
                _failing(
                    f"web-{number}",
                    node="node-1" if number % 2 else "node-2",
                    reason="ErrImagePull",
                )
            )
        await _until(
            lambda: (
                api.watch_count() >= 1
                and state.pods.metrics.tests.labels("reused")._value.get() >= 2
            ),
            "re-checked",
        )
        assert len(agents.tests) == 2
        assert all(e["count"] == 1 for e in _events(api))
    event = _events(api)[0]
    assert event["type"] == "Warning" and event["involvedObject"]["kind"] == "Pod"
    assert event["message"].startswith("unauthorized: ")
    assert event["involvedObject"]["fieldPath"] == "spec.containers{app}"
    # a restarted aggregator diagnoses again: the same Events are counted, not duplicated
    async with _diagnosing(tmp_path, api, agents):
        await _until(lambda: all(e["count"] == 2 for e in _events(api)), "counted again")
    assert len(_events(api)) == 40


async def test_a_wrong_registry_key_is_named_and_the_fixed_secret_passes(
    api: FakeKubeApi, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api.put(
        dockerconfigjson_secret("regcred", "shop", {"registry.pullcheck.test": ("deploy", SECRET)})
    )
    api.put(_failing("web-1"))
    agents = FakeAgents()
    async with _diagnosing(tmp_path, api, agents) as state:
        await _until(lambda: len(_events(api)) == 1, "an Event")
        (event,) = _events(api)
        assert "unauthorized" in event["message"]
        assert f"no entry for {REGISTRY}" in event["message"]
        assert f'add an entry for "{REGISTRY}"' in event["message"]
        # the secret is fixed; kubelet retries: the next test passes on that node
        api.put(dockerconfigjson_secret("regcred", "shop", {REGISTRY: ("deploy", SECRET)}))
        api.put(_failing("web-1", reason="ErrImagePull"))
        await _until(lambda: len(_events(api)) == 2, "the verdict after the fix")
        ok = next(e for e in _events(api) if e["type"] == "Normal")
        assert ok["message"].startswith("ok: node node-1 pulled")
        assert len(agents.tests) == 2
        # the pod starts: it drops out
        api.put(
            pod("web-1", "shop", containers=[Container("app", IMAGE)], pull_secrets=["regcred"])
        )
        diagnoser = state.pods.diagnoser
        assert diagnoser is not None
        await _until(lambda: diagnoser.diagnoses() == [], "dropped out")
        metrics = state.metrics.render()[0].decode()
    outputs = [json.dumps(e) for e in api.stored("Event")] + [metrics, caplog.text]
    outputs += [d.model_dump_json() for d in diagnoser.diagnoses()]
    for text in outputs:
        assert SECRET not in text
    assert any(SECRET.encode() in body for body in agents.bodies)  # it did reach the agent
    assert 'cause="unauthorized"' in metrics and "web-1" not in metrics


async def test_credentials_never_go_to_an_agent_over_plain_http(
    api: FakeKubeApi, tmp_path: Path
) -> None:
    api.put(dockerconfigjson_secret("regcred", "shop", {REGISTRY: ("deploy", SECRET)}))
    api.put(_failing("web-1"))
    agents = FakeAgents()
    settings = _settings(tmp_path, api)
    discovery = settings.aggregator.discovery.model_copy(update={"agent_scheme": "http"})
    aggregator = settings.aggregator.model_copy(update={"discovery": discovery})
    state = AggregatorState(
        settings.model_copy(update={"aggregator": aggregator}), transport=agents
    )
    try:
        answer = await state.pods.test_pod("shop", "web-1")
    finally:
        await state.close()
    (test,) = answer.tests
    assert test.result is None and agents.tests == []
    assert "node node-1" in test.error and "over plain HTTP" in test.error
    assert "allow_plain_http_credentials" in test.error


class GatedAgents(FakeAgents):
    """FakeAgents whose tests wait at a gate, counting how many are in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.in_flight = self.peak = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/healthz":
            return await super().handle_async_request(request)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await self.gate.wait()
            return await super().handle_async_request(request)
        finally:
            self.in_flight -= 1


async def test_a_pods_tests_are_one_per_image_and_bounded(api: FakeKubeApi, tmp_path: Path) -> None:
    api.put(dockerconfigjson_secret("regcred", "shop", {REGISTRY: ("deploy", SECRET)}))
    images = [f"{REGISTRY}/team/{name}:v1" for name in ("a", "b", "c", "d")]
    failing = [(f"c{n}", images[i]) for n, i in enumerate((0, 0, 1, 2, 0, 3, 2))]
    api.put(
        pod(
            "web-1",
            "shop",
            init_containers=[Container("setup", images[1], waiting="ErrImagePull", error="401")],
            containers=[
                Container(n, i, waiting="ImagePullBackOff", error="401") for n, i in failing
            ],
            pull_secrets=["regcred"],
        )
    )
    agents = GatedAgents()
    settings = _settings(tmp_path, api)
    aggregator = settings.aggregator.model_copy(update={"max_in_flight": 2})
    state = AggregatorState(
        settings.model_copy(update={"aggregator": aggregator}), transport=agents
    )
    try:
        task = asyncio.create_task(state.pods.test_pod("shop", "web-1"))
        await _until(lambda: agents.in_flight == 2, "two tests under way")
        for _ in range(50):  # room for a third to start, were the bound broken
            await asyncio.sleep(0)
        assert agents.in_flight == 2
        agents.gate.set()
        answer = await asyncio.wait_for(task, 15)
    finally:
        await state.close()
    assert agents.peak == 2  # min(8, aggregator.max_in_flight)
    assert sorted(image for _node, image in agents.tests) == images  # one test per image
    assert [t.container for t in answer.tests] == ["setup", *(n for n, _i in failing)]
    for test in answer.tests:
        assert test.result is not None and test.result.success, test
        assert test.result.image == test.image
