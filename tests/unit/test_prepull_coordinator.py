"""The pre-pull coordinator talking to agents through the AgentClient: readiness, the nodes'
images (what is present is done), pre-pulls, and the failures of agents that refuse, answer
garbage or are down. The agents are in-process apps replaying answers recorded from real lab
agents (``tests/unit/data/agent_answers``); a down agent is a really closed port."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.types import Receive, Scope, Send

from agent.cluster.client import AgentClient
from agent.cluster.discovery import AgentTarget
from agent.cluster.prepull.coordinator import PrepullCoordinator
from agent.cluster.prepull.models import JobStatus, Phase
from lab.servers import free_port
from tests.unit.agent_replay import Agents, ReplayAgent

PRESENT = "plain.pullcheck.test:15000/pullcheck/good:1.0"  # in the recorded image list
MISSING = "plain.pullcheck.test:15000/pullcheck/other:2.0"
READY = {"/readyz": "readyz", "/v1/images": "images-after-prepull"}


def _settled(status: JobStatus) -> bool:
    """Every pair pulled or failed (two images on one node)."""
    return (
        not status.running
        and len(status.nodes) == 2
        and all(item.phase in (Phase.DONE, Phase.FAILED) for item in status.nodes)
    )


@contextlib.asynccontextmanager
async def _running(
    tmp_path: Path,
    agents: dict[str, ReplayAgent],
    targets: list[AgentTarget],
    job: dict[str, Any],
    label: Callable[[AgentTarget], str] = lambda target: target.node or target.label,
) -> AsyncIterator[PrepullCoordinator]:
    """A coordinator running job ``job`` over ``targets`` (answered by ``agents``; nodes named
    by ``label``)."""
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(yaml.safe_dump({"jobs": [job]}))

    async def discovered() -> list[AgentTarget]:
        return targets

    client = AgentClient(transport=Agents(agents))
    coordinator = PrepullCoordinator(
        jobs_file=jobs,
        missing_ok=False,
        poll_interval=60,
        tick=0.02,
        agents=discovered,
        client=client,
        label=label,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(coordinator.run(stop))
    try:
        yield coordinator
    finally:
        stop.set()
        await running
        await client.aclose()


async def _status_when(
    coordinator: PrepullCoordinator, done: Callable[[JobStatus], bool]
) -> JobStatus:
    async with asyncio.timeout(20):
        while (status := coordinator.status("warm")) is None or not done(status):
            await asyncio.sleep(0.02)
    return status


async def _run_until(
    tmp_path: Path,
    agents: dict[str, ReplayAgent],
    targets: list[AgentTarget],
    done: Callable[[JobStatus], bool] = _settled,
) -> JobStatus:
    """Run the coordinator over ``targets`` until the job's status is ``done``."""
    job = {
        "name": "warm",
        "images": [PRESENT, MISSING],
        "on_new_node": True,
        "retries": {"attempts": 1},
        "pacing": {"max_parallel_nodes": "100%", "jitter": 0},
    }
    async with _running(tmp_path, agents, targets, job) as coordinator:
        return await _status_when(coordinator, done)


async def test_present_images_are_done_and_missing_ones_are_pulled(tmp_path: Path) -> None:
    agent = ReplayAgent("node-1", {**READY, "/v1/prepull": "prepull-good"})
    target = AgentTarget("node-1.test", 8479, node="node-1")
    status = await _run_until(tmp_path, {"node-1.test:8479": agent}, [target])
    items = {item.image: item for item in status.nodes}
    assert items[PRESENT].phase is Phase.DONE and items[PRESENT].summary == "present on the node"
    assert items[MISSING].phase is Phase.DONE and items[MISSING].digest.startswith("sha256:5e48")
    (pulled,) = [seen for seen in agent.seen if seen.path == "/v1/prepull"]
    assert json.loads(pulled.body) == {"image": MISSING, "policy": "IfNotPresent", "timeout": 600}


async def test_a_new_run_pulls_again_what_the_node_no_longer_has(tmp_path: Path) -> None:
    """kubelet's image garbage collection removed a pre-pulled image: the next run pulls it."""
    agent = ReplayAgent("node-1", {**READY, "/v1/prepull": "prepull-good"})
    target = AgentTarget("node-1.test", 8479, node="node-1")
    job = {"name": "warm", "images": [PRESENT], "schedule": "0 3 1 1 *", "retries": {"attempts": 1}}
    agents = {"node-1.test:8479": agent}

    def idle(status: JobStatus) -> bool:
        return not status.running

    async with _running(tmp_path, agents, [target], job) as coordinator:

        async def run_once() -> JobStatus:
            await _status_when(coordinator, idle)
            assert coordinator.start("warm", ["node-1"])
            return await _status_when(coordinator, idle)

        async with asyncio.timeout(20):
            while "node-1" not in coordinator.known:
                await asyncio.sleep(0.02)
        first = await run_once()  # present: done without a pull
        assert [i.summary for i in first.nodes] == ["present on the node"]
        assert not [s for s in agent.seen if s.path == "/v1/prepull"]
        again = await run_once()  # still present: still nothing to pull
        assert [i.phase for i in again.nodes] == [Phase.DONE]
        assert not [s for s in agent.seen if s.path == "/v1/prepull"]
        agent.routes["/v1/images"] = "images-none"  # garbage-collected since
        third = await run_once()
    (pulled,) = [s for s in agent.seen if s.path == "/v1/prepull"]
    assert json.loads(pulled.body)["image"] == PRESENT
    assert [(i.phase, i.skipped) for i in third.nodes] == [(Phase.DONE, False)]


@dataclass
class _GatedAgent(ReplayAgent):
    """A replayed agent whose pre-pull answers wait for ``gate`` (a pull under way)."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/v1/prepull":
            self.arrived.set()
            await self.gate.wait()
        await super().__call__(scope, receive, send)


async def test_a_node_named_in_the_middle_of_a_wave_keeps_its_pairs(tmp_path: Path) -> None:
    """DNS discovery: a node is known by its address until an answer names it. A name learnt
    while its pull runs must not orphan the wave's pairs (the wave never ended)."""
    agent = _GatedAgent("node-1", {**READY, "/v1/prepull": "prepull-good"})
    target = AgentTarget("10.0.0.1", 8479)  # no node name, as DNS discovery finds it
    learnt: dict[str, str] = {}
    job = {"name": "warm", "images": [MISSING], "on_new_node": True, "retries": {"attempts": 1}}
    agents: dict[str, ReplayAgent] = {"10.0.0.1:8479": agent}

    def label(t: AgentTarget) -> str:
        return t.node or learnt.get(t.url) or t.label

    async with _running(tmp_path, agents, [target], job, label) as coordinator:
        async with asyncio.timeout(20):
            await agent.arrived.wait()
        learnt[target.url] = "node-1"  # e.g. a cluster pull test asked it who it is
        await asyncio.sleep(0.1)  # several ticks see the new name
        agent.gate.set()
        status = await _status_when(coordinator, lambda s: not s.running and s.images_ready > 0)
    assert [(i.node, i.phase) for i in status.nodes] == [("node-1", Phase.DONE)]
    assert len([s for s in agent.seen if s.path == "/v1/prepull"]) == 1


@pytest.mark.parametrize(
    ("answer", "cause", "says"),
    [
        ("pulltest-not-allowed", "agent_refused", "the agent answered HTTP 403 not_allowed"),
        ("garbage", "agent_unreachable", "not a pullcheck agent's answer"),
    ],
)
async def test_an_agent_that_refuses_or_answers_garbage_fails_the_pull_with_why(
    tmp_path: Path, answer: str, cause: str, says: str
) -> None:
    agent = ReplayAgent("node-1", {**READY, "/v1/prepull": answer})
    target = AgentTarget("node-1.test", 8479, node="node-1")
    status = await _run_until(tmp_path, {"node-1.test:8479": agent}, [target])
    failed = {item.image: item for item in status.nodes}[MISSING]
    assert failed.phase is Phase.FAILED and failed.cause == cause
    assert says in failed.summary and failed.remedy


async def test_a_node_whose_agent_is_down_waits_with_the_reason(tmp_path: Path) -> None:
    up = ReplayAgent("node-1", {**READY, "/v1/prepull": "prepull-good"})
    targets = [
        AgentTarget("node-1.test", 8479, node="node-1"),
        AgentTarget("127.0.0.1", free_port(), node="node-down"),
    ]

    def node_1_done_and_node_down_explained(status: JobStatus) -> bool:
        by_node = {item.node: item for item in status.nodes}
        return (
            not status.running
            and status.images_ready == 2
            and "node-down" in by_node
            and by_node["node-down"].cause is not None
        )

    agents = {"node-1.test:8479": up}
    status = await _run_until(tmp_path, agents, targets, node_1_done_and_node_down_explained)
    assert status.images_total == 4 and status.wave["pending"] == 2
    waiting = [item for item in status.nodes if item.node == "node-down"]
    assert [item.phase for item in waiting] == [Phase.PENDING, Phase.PENDING]
    for item in waiting:
        assert item.cause == "agent_unreachable" and item.attempts == 0
        assert item.summary.startswith("/readyz: ") and "spec.nodeName=node-down" in item.remedy
