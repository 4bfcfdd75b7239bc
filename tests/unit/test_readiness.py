"""Readiness of the discovered agents (agent/cluster/readiness.py) against real HTTP servers."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agent.cluster.client import AgentClient
from agent.cluster.discovery import AgentTarget
from agent.cluster.readiness import AgentReadiness, AgentState
from lab.servers import free_port

ANSWERS: dict[str, tuple[int, bytes]] = {
    "ready": (200, json.dumps({"ready": True, "runtime": "containerd 1.6.20"}).encode()),
    "unready": (503, json.dumps({"ready": False, "runtime": "no such file: x.sock"}).encode()),
    "garbage": (200, b"<html>not an agent</html>"),
}


class _Agent(ThreadingHTTPServer):
    """Answers /readyz like one kind of agent."""

    daemon_threads = True

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.asked = 0
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Agent

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.asked += 1
        time.sleep(0.05)  # long enough for concurrent checks to overlap
        status, body = ANSWERS[self.server.kind]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def agents() -> Iterator[dict[str, _Agent]]:
    started = {kind: _Agent(kind) for kind in ANSWERS}
    for server in started.values():
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield started
    for server in started.values():
        server.shutdown()
        server.server_close()


@pytest.fixture
async def client() -> AsyncIterator[AgentClient]:
    made = AgentClient()
    yield made
    await made.aclose()


@pytest.fixture
def targets(agents: dict[str, _Agent]) -> dict[str, AgentTarget]:
    found = {
        kind: AgentTarget("127.0.0.1", server.server_address[1], node=f"node-{kind}")
        for kind, server in agents.items()
    }
    found["down"] = AgentTarget("127.0.0.1", free_port(), node="node-down")  # nothing listens
    found["new"] = AgentTarget("127.0.0.1", free_port(), node="node-new")  # never asked
    return found


async def test_states_reasons_and_counts(
    client: AgentClient, targets: dict[str, AgentTarget]
) -> None:
    readiness = AgentReadiness(client, timeout=2)
    kinds = ("ready", "unready", "garbage", "down")
    await readiness.check([targets[k] for k in kinds])
    assert {k: readiness.get(targets[k]).state for k in kinds} == {
        "ready": AgentState.READY,
        "unready": AgentState.UNREADY,
        "garbage": AgentState.UNREACHABLE,
        "down": AgentState.UNREACHABLE,
    }
    assert readiness.failure(targets["ready"], "node-ready") is None
    waiting = readiness.failure(targets["unready"], "node-unready")
    assert waiting is not None and waiting.cause == "runtime_unavailable"
    assert "HTTP 503: no such file: x.sock" in waiting.summary and "containerd" in waiting.remedy
    garbage = readiness.failure(targets["garbage"], "node-garbage")
    assert garbage is not None and garbage.cause == "agent_unreachable"
    assert "not a pullcheck agent's answer" in garbage.summary
    assert readiness.counts(targets.values()) == {
        "discovered": 5,
        "ready": 1,
        "unready": 1,
        "unreachable": 2,
        "unknown": 1,
    }


async def test_due_rechecks_not_ready_agents_sooner_than_ready_ones(
    client: AgentClient, targets: dict[str, AgentTarget]
) -> None:
    readiness = AgentReadiness(client, recheck=5, ready_recheck=30)
    ready, unready, new = targets["ready"], targets["unready"], targets["new"]
    await readiness.check([ready, unready])
    now = time.monotonic()
    assert readiness.due([ready, unready, new], now) == [new]
    assert readiness.due([ready, unready], now + 5) == [unready]
    assert readiness.due([ready, unready], now + 30) == [ready, unready]
    readiness.retain([ready])
    assert readiness.get(unready).state is AgentState.UNKNOWN  # forgotten: discovery dropped it


async def test_concurrent_checks_of_one_agent_share_one_request(
    agents: dict[str, _Agent], client: AgentClient, targets: dict[str, AgentTarget]
) -> None:
    readiness = AgentReadiness(client)
    target = targets["ready"]
    await asyncio.gather(readiness.check([target]), readiness.check([target]))
    assert agents["ready"].asked == 1 and readiness.get(target).state is AgentState.READY


async def test_run_exports_the_counts_each_round(
    client: AgentClient, targets: dict[str, AgentTarget]
) -> None:
    readiness = AgentReadiness(client)
    exported: list[dict[str, int]] = []
    stop = asyncio.Event()

    async def agents() -> list[AgentTarget]:
        return [targets["ready"], targets["unready"]]

    def export(counts: dict[str, int]) -> None:
        exported.append(counts)
        stop.set()

    await asyncio.wait_for(readiness.run(stop, agents, export, interval=0.01), 10)
    assert exported == [{"discovered": 2, "ready": 1, "unready": 1, "unreachable": 0, "unknown": 0}]
