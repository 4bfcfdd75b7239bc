"""The aggregator in-process: its AgentClient's typed answers and failures, the summaries, the
ndjson stream, the connectivity matrix, auth and validation, and the served schema.

No root, no lab: the aggregator app runs under ``httpx.ASGITransport`` and its agents are
in-process ASGI apps replaying answers recorded from real lab agents
(``tests/unit/data/agent_answers``); a node whose agent is down is a really closed port.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jsonschema  # type: ignore[import-untyped]
import pytest
from pydantic import TypeAdapter

from agent.cluster.app import AggregatorState, create_aggregator_app
from agent.cluster.client import AgentClient, CallFailure, FailureKind, Readyz
from agent.cluster.models import NodeFailure, NodeResult, StreamLine, SummaryLine
from agent.models import PullTestResult
from agent.node.models import (
    ConnectivityAnswer,
    HealthAnswer,
    ImagesAnswer,
    PrepullBody,
    PullOutcome,
    PullTestBody,
)
from agent.service.config import Settings
from lab.servers import free_port
from tests.unit.agent_replay import Agents, ReplayAgent, recorded

TOKEN = "cluster-api-token-93b1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
IMAGE = "plain.pullcheck.test:15000/pullcheck/good:1.0"  # the image of the recordings
GOOD_DIGEST = "sha256:5e4854dd0ddcb1a4eec237df79574783cafc8e0a2e63335c38dae7198ba07ed0"
CORRUPT_DIGEST = "sha256:8cf5e62b7c15e79e8c40fdfebac2583e0ccbcec104895df92310edcce355031b"
FAILURE_FIELDS = ["node", "agent", "success", "cause", "summary", "remedy", "status", "error"]
LINES: TypeAdapter[Any] = TypeAdapter(StreamLine)

#: what each kind of in-process agent answers
PULL_GOOD = {"/v1/pulltest": "pulltest-good-pull", "/healthz": "healthz", "/readyz": "readyz"}
RESOLVE_GOOD = {"/v1/pulltest": "pulltest-good-resolve"}
RESOLVE_CORRUPT = {"/v1/pulltest": "pulltest-corrupt-resolve"}
REFUSED_PORT = {"/v1/pulltest": "pulltest-refused-resolve"}
NOT_ALLOWED = {"/v1/pulltest": "pulltest-not-allowed", "/v1/connectivity": "pulltest-not-allowed"}
GARBAGE = {"/v1/pulltest": "garbage", "/readyz": "garbage"}
HANGS = {"/v1/pulltest": "hang"}


def _agents(**routes: dict[str, str]) -> dict[str, ReplayAgent]:
    """One in-process agent per node name: ``node_1=PULL_GOOD`` serves node-1."""
    return {
        f"{name.replace('_', '-')}.test:8479": ReplayAgent(name.replace("_", "-"), answers)
        for name, answers in routes.items()
    }


def _settings(tmp_path: Path, static: list[str], **aggregator: Any) -> Settings:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    return Settings.model_validate(
        {
            "token_file": str(token),
            "allow": ["*.pullcheck.test:*/*"],
            "limits": {"rate_limit_per_minute": 0},
            "aggregator": {
                "node_timeout": 5,
                "discovery": {"mode": "static", "agents": static},
                "leader_election": {"mode": "always"},
                **aggregator,
            },
        }
    )


def _static(agents: dict[str, ReplayAgent], *extra: str) -> list[str]:
    return [f"{agent.node}={where}" for where, agent in agents.items()] + list(extra)


@asynccontextmanager
async def aggregator(
    tmp_path: Path, agents: dict[str, ReplayAgent], static: list[str], **section: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, AggregatorState]]:
    """The aggregator app in-process (no lifespan: no background task runs) over ``agents``."""
    state = AggregatorState(_settings(tmp_path, static, **section), transport=Agents(agents))
    app = create_aggregator_app(state)
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://aggregator") as client:
        try:
            yield client, state
        finally:
            await state.close()


def _closed() -> str:
    return f"node-down=127.0.0.1:{free_port()}"


def _ndjson(text: str) -> list[Any]:
    return [LINES.validate_json(line) for line in text.splitlines() if line]


# --- the AgentClient ------------------------------------------------------------------------


@pytest.fixture
async def replayed() -> AsyncIterator[tuple[AgentClient, ReplayAgent]]:
    agent = ReplayAgent(
        "node-7",
        {
            "/healthz": "healthz",
            "/readyz": "readyz",
            "/v1/images": "images-after-prepull",
            "/v1/pulltest": "pulltest-good-pull",
            "/v1/prepull": "prepull-good",
            "/v1/connectivity": "connectivity",
        },
    )
    client = AgentClient(token=lambda: TOKEN, transport=Agents({"node-7.test:8479": agent}))
    yield client, agent
    await client.aclose()


async def test_the_client_parses_each_answer_into_the_nodes_models(
    replayed: tuple[AgentClient, ReplayAgent],
) -> None:
    client, agent = replayed
    url = "http://node-7.test:8479"
    health = await client.health(url)
    assert isinstance(health, HealthAnswer) and health.node == "node-7"
    ready = await client.ready(url)
    assert isinstance(ready, Readyz) and ready.status == 200 and ready.answer.ready
    images = await client.images(url)
    assert isinstance(images, ImagesAnswer)
    assert IMAGE in images.images[0].repo_tags
    test = PullTestBody(image=IMAGE, mode="pull", timeout=30)
    result = await client.pulltest(url, test, deadline=5)
    assert isinstance(result, PullTestResult) and result.success and result.node == "node-7"
    assert result.digest == GOOD_DIGEST
    asked = agent.seen[-1]
    assert asked.method == "GET" and asked.body == b""
    assert (
        asked.query
        == "image=plain.pullcheck.test%3A15000%2Fpullcheck%2Fgood%3A1.0&mode=pull&timeout=30"
    )
    outcome = await client.prepull(url, PrepullBody(image=IMAGE, timeout=60), deadline=5)
    assert isinstance(outcome, PullOutcome) and outcome.ok and outcome.digest == GOOD_DIGEST
    assert json.loads(agent.seen[-1].body) == {
        "image": IMAGE,
        "policy": "IfNotPresent",
        "timeout": 60.0,
    }
    connectivity = await client.connectivity(url, deadline=5)
    assert isinstance(connectivity, ConnectivityAnswer)
    assert connectivity.registries[0].endpoints[0].success
    # every call presented the bearer token
    assert {seen.headers.get("authorization") for seen in agent.seen} == {f"Bearer {TOKEN}"}


async def test_credentials_go_in_a_post_body_never_in_a_url(
    replayed: tuple[AgentClient, ReplayAgent],
) -> None:
    client, agent = replayed
    url = "http://node-7.test:8479"
    test = PullTestBody(image=IMAGE, mode="resolve", creds="user:hunter2")
    with pytest.raises(ValueError, match="never in a URL"):
        await client.pulltest(url, test, deadline=5)
    assert agent.seen == []  # refused before anything was sent
    refused = await client.pulltest(url, test, deadline=5, post=True)
    assert isinstance(refused, CallFailure) and refused.error == "plain_http_credentials"
    assert agent.seen == []  # plain HTTP: credentials only when the config says so
    client.plain_http_credentials = True
    result = await client.pulltest(url, test, deadline=5, post=True)
    assert isinstance(result, PullTestResult)
    (asked,) = agent.seen
    assert asked.method == "POST" and asked.query == ""
    assert json.loads(asked.body) == {"image": IMAGE, "mode": "resolve", "creds": "user:hunter2"}


async def test_fields_a_newer_agent_adds_are_dropped_not_refused() -> None:
    agent = ReplayAgent("node-7", {"/v1/pulltest": "pulltest-good-pull"}, added={"later": 1})
    client = AgentClient(transport=Agents({"node-7.test:8479": agent}))
    try:
        result = await client.pulltest(
            "http://node-7.test:8479", PullTestBody(image=IMAGE), deadline=5
        )
    finally:
        await client.aclose()
    assert isinstance(result, PullTestResult) and result.success
    assert "later" not in result.model_dump()


@pytest.mark.parametrize(
    ("answers", "kind", "status", "error", "message"),
    [
        ({"/v1/pulltest": "pulltest-not-allowed"}, FailureKind.REFUSED, 403, "not_allowed",
         "docker.io/library/busybox is not in the registry allowlist"),
        ({"/v1/pulltest": "pulltest-rate-limited"}, FailureKind.REFUSED, 429, "rate_limited",
         "too many requests from this client"),
        ({"/v1/pulltest": "garbage"}, FailureKind.GARBAGE, 200, None,
         "HTTP 200, not a pullcheck agent's answer (answer: Invalid JSON"),
        ({"/v1/pulltest": "healthz"}, FailureKind.GARBAGE, 200, None,
         "HTTP 200, not a pullcheck agent's answer (pullcheck_version: required key is missing)"),
        ({"/v1/pulltest": "hang"}, FailureKind.TIMEOUT, None, None, "no answer within 0.3 s"),
    ],
)  # fmt: skip
async def test_every_failure_is_one_typed_failure(
    answers: dict[str, str],
    kind: FailureKind,
    status: int | None,
    error: str | None,
    message: str,
) -> None:
    agents = Agents({"node-7.test:8479": ReplayAgent("node-7", answers)})
    client = AgentClient(transport=agents)
    try:
        test = PullTestBody(image=IMAGE)
        failure = await client.pulltest("http://node-7.test:8479", test, deadline=0.3)
    finally:
        await client.aclose()
    assert isinstance(failure, CallFailure)
    assert (failure.kind, failure.status, failure.error) == (kind, status, error)
    assert failure.message.startswith(message)


async def test_a_closed_port_is_unreachable() -> None:
    client = AgentClient()
    try:
        failure = await client.ready(f"http://127.0.0.1:{free_port()}", deadline=5)
    finally:
        await client.aclose()
    assert isinstance(failure, CallFailure)
    assert failure.kind is FailureKind.UNREACHABLE and failure.status is None
    assert failure.message  # the connect error, in one line


async def test_an_answer_over_the_bound_is_garbage_and_not_read_whole() -> None:
    agents = Agents(
        {"node-7.test:8479": ReplayAgent("node-7", {"/v1/pulltest": "pulltest-good-pull"})}
    )
    client = AgentClient(transport=agents, max_answer_bytes=1024)
    try:
        failure = await client.pulltest(
            "http://node-7.test:8479", PullTestBody(image=IMAGE), deadline=5
        )
    finally:
        await client.aclose()
    assert isinstance(failure, CallFailure) and failure.kind is FailureKind.GARBAGE
    assert "an answer over 1024 bytes" in failure.message


@pytest.mark.parametrize("bad", [0, -1])
def test_the_client_refuses_nonsense_bounds(bad: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        AgentClient(max_connections=bad)
    with pytest.raises(ValueError, match="at least 1"):
        AgentClient(max_answer_bytes=bad)


async def test_a_stale_kept_alive_connection_is_retried_once() -> None:
    """A real server that answers the first request on a connection, keeps it open, and closes
    it without answering when the next request arrives on it (an idle timeout racing the
    request): the client asks once more on a new connection and gets the answer."""
    _status, health = recorded("healthz")
    payload = json.dumps(health).encode()
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")  # the next request on this connection: dropped
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = AgentClient()
    try:
        first = await client.health(f"http://127.0.0.1:{port}")
        second = await client.health(f"http://127.0.0.1:{port}")
    finally:
        await client.aclose()
        server.close()
    assert isinstance(first, HealthAnswer) and isinstance(second, HealthAnswer)
    assert connections == 2  # the second answer came over a new connection


# --- the summaries --------------------------------------------------------------------------


async def test_every_node_is_listed_with_its_result_or_why_not(tmp_path: Path) -> None:
    agents = _agents(
        node_1=PULL_GOOD,
        node_2=RESOLVE_GOOD,
        node_3=REFUSED_PORT,
        node_garbage=GARBAGE,
        node_refusing=NOT_ALLOWED,
    )
    async with aggregator(tmp_path, agents, _static(agents, _closed())) as (client, _state):
        reply = await client.get("/v1/pulltest", params={"image": IMAGE}, headers=AUTH)
        metrics = (await client.get("/metrics", headers=AUTH)).text
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert list(body) == ["image", "mode", "summary", "nodes"]
    assert body["image"] == IMAGE and body["mode"] is None
    summary = body["summary"]
    assert (summary["nodes"], summary["ok"], summary["failed"]) == (6, 2, 4)
    assert summary["by_cause"] == {
        "agent_refused": ["node-refusing"],
        "agent_unreachable": ["node-down", "node-garbage"],
        "connection_refused": ["node-3"],
    }
    # node-1 pulled (the repo digest), node-2 resolved (the manifest HEAD's digest): one digest
    assert summary["digests"] == {GOOD_DIGEST: ["node-1", "node-2"]}
    assert summary["digest_drift"] is False and summary["duration_ms"] >= 0
    nodes = {entry["node"]: entry for entry in body["nodes"]}
    assert [entry["node"] for entry in body["nodes"]] == sorted(nodes)
    # an agent's result is passed on as it answered, plus the agent's URL
    _status, answered = recorded("pulltest-good-pull")
    newer = {"via": "", "deciding_fragment": ""}  # fields added after the answer was recorded
    assert nodes["node-1"] == {**newer, **answered, "agent": "http://node-1.test:8479"}
    for name in ("node-down", "node-garbage", "node-refusing"):
        assert list(nodes[name]) == FAILURE_FIELDS and nodes[name]["success"] is False
    assert nodes["node-refusing"]["status"] == 403
    assert nodes["node-refusing"]["error"] == "not_allowed"
    assert "allowlist (allow)" in nodes["node-refusing"]["remedy"]
    assert nodes["node-garbage"]["status"] == 200
    assert "something other than a pullcheck agent" in nodes["node-garbage"]["remedy"]
    assert nodes["node-down"]["status"] is None and nodes["node-down"]["error"] is None
    assert "spec.nodeName=node-down" in nodes["node-down"]["remedy"]
    counted = 'pullcheck_aggregator_node_results_total{cause="%s"} %s'
    assert counted % ("agent_unreachable", "2.0") in metrics
    assert counted % ("connection_refused", "1.0") in metrics
    assert counted % ("none", "2.0") in metrics


async def test_two_digests_for_one_tag_are_digest_drift(tmp_path: Path) -> None:
    agents = _agents(node_a=PULL_GOOD, node_b=RESOLVE_CORRUPT)
    async with aggregator(tmp_path, agents, _static(agents)) as (client, _state):
        reply = await client.get("/v1/pulltest", params={"image": IMAGE}, headers=AUTH)
    summary = reply.json()["summary"]
    assert summary["ok"] == 2 and summary["digest_drift"] is True
    assert summary["digests"] == {GOOD_DIGEST: ["node-a"], CORRUPT_DIGEST: ["node-b"]}


async def test_a_requested_node_no_agent_is_known_for_is_listed_and_failed(
    tmp_path: Path,
) -> None:
    agents = _agents(node_1=PULL_GOOD, node_2=PULL_GOOD)
    async with aggregator(tmp_path, agents, _static(agents)) as (client, _state):
        params = {"image": IMAGE, "nodes": "node-1,node-9"}
        reply = await client.get("/v1/pulltest", params=params, headers=AUTH)
        metrics = (await client.get("/metrics", headers=AUTH)).text
    body = reply.json()
    summary = body["summary"]
    assert (summary["nodes"], summary["ok"], summary["failed"]) == (2, 1, 1)
    assert summary["by_cause"] == {"node_not_found": ["node-9"]}
    missing = body["nodes"][1]
    assert missing["node"] == "node-9" and missing["agent"] == ""
    assert "(2 agents found)" in missing["summary"] and "kubectl get nodes" in missing["remedy"]
    assert agents["node-2.test:8479"].seen == []  # not asked for
    assert 'pullcheck_aggregator_node_results_total{cause="node_not_found"} 1.0' in metrics


async def test_agents_known_by_address_only_are_asked_who_they_are(tmp_path: Path) -> None:
    """DNS discovery knows addresses only: for ``nodes=`` the aggregator asks /healthz."""
    agents = _agents(node_1=PULL_GOOD, node_2=PULL_GOOD)
    static = list(agents)  # host:port, no node names
    async with aggregator(tmp_path, agents, static) as (client, _state):
        params = {"image": IMAGE, "nodes": "node-2"}
        reply = await client.get("/v1/pulltest", params=params, headers=AUTH)
    assert [entry["node"] for entry in reply.json()["nodes"]] == ["node-2"]
    assert [seen.path for seen in agents["node-2.test:8479"].seen] == ["/healthz", "/v1/pulltest"]
    assert [seen.path for seen in agents["node-1.test:8479"].seen] == ["/healthz"]


async def test_ndjson_streams_each_node_as_it_answers_then_the_summary(tmp_path: Path) -> None:
    agents = _agents(node_1=PULL_GOOD, node_slow=HANGS)
    static = _static(agents)
    async with aggregator(tmp_path, agents, static, node_timeout=1) as (client, _state):
        params = {"image": IMAGE, "nodes": "node-slow,node-1,node-9", "stream": "ndjson"}
        reply = await client.get("/v1/pulltest", params=params, headers=AUTH)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("application/x-ndjson")
    *entries, last = _ndjson(reply.text)
    # the node without an agent first, then in the order they answered: the silent one last
    assert [entry.node for entry in entries] == ["node-9", "node-1", "node-slow"]
    assert isinstance(entries[1], NodeResult) and entries[1].success
    slow = entries[2]
    assert isinstance(slow, NodeFailure) and slow.summary == "no answer within 1 s"
    assert isinstance(last, SummaryLine)
    assert last.summary.by_cause == {
        "agent_unreachable": ["node-slow"],
        "node_not_found": ["node-9"],
    }
    assert (last.summary.nodes, last.summary.ok) == (3, 1)


async def test_credentials_reach_the_agents_only_in_the_post_body(tmp_path: Path) -> None:
    agents = _agents(node_1=PULL_GOOD)
    static = _static(agents)
    async with aggregator(tmp_path, agents, static, allow_plain_http_credentials=True) as (
        client,
        _state,
    ):
        reply = await client.post(
            "/v1/pulltest",
            json={"image": IMAGE, "mode": "resolve", "creds": "user:hunter2"},
            headers=AUTH,
        )
    assert reply.status_code == 200, reply.text
    assert reply.json()["summary"]["ok"] == 1 and "hunter2" not in reply.text
    (asked,) = agents["node-1.test:8479"].seen
    assert asked.method == "POST" and asked.query == ""
    assert json.loads(asked.body)["creds"] == "user:hunter2"


# --- connectivity, agents, readiness --------------------------------------------------------


async def test_the_connectivity_matrix_has_a_row_per_node(tmp_path: Path) -> None:
    agents = _agents(node_1={"/v1/connectivity": "connectivity"}, node_2=NOT_ALLOWED)
    async with aggregator(tmp_path, agents, _static(agents, _closed())) as (client, _state):
        reply = await client.get("/v1/connectivity", headers=AUTH)
        metrics = (await client.get("/metrics", headers=AUTH)).text
    matrix = reply.json()
    _status, probed = recorded("connectivity")
    endpoint = probed["registries"][0]["endpoints"][0]
    url = endpoint["endpoint"]["url"]
    assert matrix["columns"] == [
        {"registry": probed["registries"][0]["registry"], "url": url, "role": "upstream"}
    ]
    rows = {row["node"]: row for row in matrix["rows"]}
    assert [row["node"] for row in matrix["rows"]] == ["node-1", "node-2", "node-down"]
    assert rows["node-1"] == {
        "node": "node-1",
        "reachable": True,
        "cells": {url: {"success": True, "cause": None, "summary": endpoint["summary"]}},
    }
    assert list(rows["node-down"]) == ["node", "reachable", "cause", "summary", "remedy", "status"]
    assert rows["node-down"]["cause"] == "agent_unreachable"
    assert rows["node-2"]["cause"] == "agent_refused" and rows["node-2"]["status"] == 403
    assert matrix["summary"] == {
        "nodes": 3,
        "unreachable": ["node-2", "node-down"],
        "failing": {},
    }
    # a node that answered counts as a success, not as "unknown"
    assert 'pullcheck_aggregator_node_results_total{cause="none"} 1.0' in metrics
    assert 'pullcheck_aggregator_node_results_total{cause="unknown"}' not in metrics


async def test_the_agent_list_shows_readiness_and_why_not(tmp_path: Path) -> None:
    agents = _agents(node_1=PULL_GOOD, node_garbage=GARBAGE)
    async with aggregator(tmp_path, agents, _static(agents, _closed())) as (client, state):
        before = (await client.get("/v1/agents", headers=AUTH)).json()
        await state.readiness.check(await state.discovery.agents())
        after = (await client.get("/v1/agents", headers=AUTH)).json()
    assert {a["state"] for a in before["agents"]} == {"unknown"}
    assert all("reason" not in a for a in before["agents"]) and before["last_error"] is None
    listed = {a["node"]: a for a in after["agents"]}
    assert listed["node-1"] == {
        "node": "node-1",
        "url": "http://node-1.test:8479",
        "state": "ready",
    }
    assert listed["node-garbage"]["state"] == "unreachable"
    assert "not a pullcheck agent's answer" in listed["node-garbage"]["reason"]
    assert listed["node-down"]["state"] == "unreachable" and listed["node-down"]["reason"]


async def test_without_agents_the_aggregator_is_not_ready_and_says_so(tmp_path: Path) -> None:
    async with aggregator(tmp_path, {}, []) as (client, _state):
        ready = await client.get("/readyz")
        health = await client.get("/healthz")
        pulltest = await client.get("/v1/pulltest", params={"image": IMAGE}, headers=AUTH)
    assert ready.status_code == 503
    body = ready.json()
    assert (body["ready"], body["agents"]) == (False, 0) and "discovery.agents" in body["error"]
    assert body["leader"]["mode"] == "always" and body["leader"]["leading"] is False
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert pulltest.status_code == 503 and pulltest.json()["error"] == "no_agents"


async def test_job_routes_without_a_leader_ask_to_retry(tmp_path: Path) -> None:
    agents = _agents(node_1=PULL_GOOD)
    async with aggregator(tmp_path, agents, _static(agents)) as (client, _state):
        listing = await client.get("/v1/prepull/jobs", headers=AUTH)
        forwarded = await client.post(
            "/v1/prepull/jobs/warm/run",
            headers={**AUTH, "X-Pullcheck-Forwarded-By": "agg-b"},
        )
    assert listing.status_code == 503 and listing.headers["retry-after"] == "2"
    assert listing.json() == {
        "error": "no_leader",
        "message": "no replica leads the scheduled work yet: retry",
    }
    assert forwarded.status_code == 503 and "does not lead" in forwarded.json()["message"]


# --- auth and validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/v1/pulltest?image={IMAGE}"),
        ("GET", "/v1/pulltest?image=UPPER&timeout=nan&nodes=no/de"),  # 401 before any 400
        ("POST", "/v1/pulltest"),
        ("GET", "/v1/agents"),
        ("GET", "/v1/connectivity"),
        ("GET", "/v1/prepull/jobs"),
        ("POST", "/v1/prepull/jobs/warm/run"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
    ],
)
@pytest.mark.parametrize("token", [None, "Bearer wrong-token"])
async def test_every_route_but_health_needs_the_token(
    tmp_path: Path, method: str, path: str, token: str | None
) -> None:
    agents = _agents(node_1=PULL_GOOD)
    headers = {"Authorization": token} if token else {}
    async with aggregator(tmp_path, agents, _static(agents)) as (client, _state):
        reply = await client.request(method, path, headers=headers, content=b"{not json")
    assert reply.status_code == 401, reply.text
    assert reply.json()["error"] == "unauthorized"
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert agents["node-1.test:8479"].seen == []


@pytest.mark.parametrize(
    ("query", "status", "kind", "says"),
    [
        ({"image": IMAGE, "verbose": "1"}, 400, "bad_request", "verbose"),
        ({"image": IMAGE, "timeout": "nan"}, 400, "bad_request", "timeout"),
        ({"image": IMAGE, "timeout": "inf"}, 400, "bad_request", "timeout"),
        ({"image": IMAGE, "timeout": "-1"}, 400, "bad_request", "timeout"),
        ({"image": IMAGE, "timeout": "99999"}, 400, "bad_request", "at most"),
        ({"image": IMAGE, "mode": "everything"}, 400, "bad_request", "mode"),
        ({"image": IMAGE, "stream": "csv"}, 400, "bad_request", "stream"),
        ({"image": IMAGE, "nodes": "node-1,no/de"}, 400, "bad_request", "'no/de' is not a node"),
        ({"image": ""}, 400, "bad_request", "image"),
        ({"image": "UPPER/Case:x"}, 400, "invalid_reference", "UPPER/Case:x"),
        ({"image": "evil.example.com/x:1"}, 403, "not_allowed", "allowlist"),
    ],
)
async def test_bad_pull_test_requests_are_refused_before_any_agent_is_asked(
    tmp_path: Path, query: dict[str, str], status: int, kind: str, says: str
) -> None:
    agents = _agents(node_1=PULL_GOOD)
    async with aggregator(tmp_path, agents, _static(agents)) as (client, _state):
        reply = await client.get("/v1/pulltest", params=query, headers=AUTH)
    assert reply.status_code == status, reply.text
    assert reply.json()["error"] == kind and says in reply.json()["message"]
    assert agents["node-1.test:8479"].seen == []


async def test_the_rate_limit_spares_metrics_but_not_the_schema(tmp_path: Path) -> None:
    agents = _agents(node_1=PULL_GOOD)
    plain = _settings(tmp_path, _static(agents))
    limits = plain.limits.model_copy(update={"rate_limit_per_minute": 1, "rate_limit_burst": 1})
    state = AggregatorState(plain.model_copy(update={"limits": limits}), transport=Agents(agents))
    transport = httpx.ASGITransport(create_aggregator_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://aggregator") as client:
        try:
            first = await client.get("/v1/agents", headers=AUTH)
            schema = await client.get("/openapi.json", headers=AUTH)
            scrapes = [await client.get("/metrics", headers=AUTH) for _ in range(3)]
        finally:
            await state.close()
    assert first.status_code == 200
    assert schema.status_code == 429 and schema.json()["error"] == "rate_limited"
    assert [reply.status_code for reply in scrapes] == [200, 200, 200]


async def test_a_parameter_twice_and_a_bad_body_are_400_without_echoing_values(
    tmp_path: Path,
) -> None:
    agents = _agents(node_1=PULL_GOOD)
    async with aggregator(tmp_path, agents, _static(agents)) as (client, _state):
        twice = await client.get("/v1/agents?x=1&x=2", headers=AUTH)
        body = {"image": IMAGE, "creds": "user:hunter2", "password": "hunter2"}
        extra = await client.post("/v1/pulltest", json=body, headers=AUTH)
        not_json = await client.post("/v1/pulltest", content=b'{"creds": "hunter2"', headers=AUTH)
    assert twice.status_code == 400 and "'x' given more than once" in twice.json()["message"]
    assert extra.status_code == 400 and "password" in extra.json()["message"]
    assert not_json.status_code == 400
    for reply in (extra, not_json):
        assert "hunter2" not in reply.text
    assert agents["node-1.test:8479"].seen == []


# --- the served schema ----------------------------------------------------------------------


def _check(schema: dict[str, Any], path: str, method: str, status: int, answer: Any) -> None:
    """``answer`` conforms to the served schema of ``method path`` → ``status``."""
    responses = schema["paths"][path][method]["responses"]
    documented = responses.get(str(status)) or responses[f"{str(status)[0]}XX"]
    expected = documented["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator({**expected, "components": schema["components"]}).validate(
        answer
    )


#: requests whose answers the schema must describe: (method, path, query, body, with the token)
ASKED: list[tuple[str, str, dict[str, str], Any, bool]] = [
    (
        "GET",
        "/v1/pulltest",
        {"image": IMAGE, "nodes": "node-1,node-2,node-down,node-9"},
        None,
        True,
    ),
    ("POST", "/v1/pulltest", {}, {"image": IMAGE}, True),
    ("GET", "/v1/pulltest", {"image": IMAGE, "nodes": "a/b"}, None, True),
    ("GET", "/v1/agents", {}, None, True),
    ("GET", "/v1/agents", {}, None, False),
    ("GET", "/v1/connectivity", {}, None, True),
    ("GET", "/v1/prepull/jobs", {}, None, True),
    ("GET", "/readyz", {}, None, False),
    ("GET", "/healthz", {}, None, False),
]


async def test_the_served_schema_describes_every_answer(tmp_path: Path) -> None:
    agents = _agents(
        node_1=PULL_GOOD, node_2=REFUSED_PORT, node_3={"/v1/connectivity": "connectivity"}
    )
    async with aggregator(tmp_path, agents, _static(agents, _closed())) as (client, state):
        schema = (await client.get("/openapi.json", headers=AUTH)).json()
        await state.readiness.check(await state.discovery.agents())
        statuses = []
        for method, path, query, body, token in ASKED:
            reply = await client.request(
                method, path, params=query, json=body, headers=AUTH if token else {}
            )
            _check(schema, path, method.lower(), reply.status_code, reply.json())
            statuses.append(reply.status_code)
    assert statuses == [200, 200, 400, 200, 401, 200, 503, 200, 200]
    assert {"/metrics", "/v1/prepull/jobs/{name}", "/v1/prepull/jobs/{name}/run"} <= set(
        schema["paths"]
    )
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
