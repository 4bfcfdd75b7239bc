"""Faults of the system itself (issue 12): a node's containerd killed in the middle of a pull, a
registry killed mid-blob, a registry that stalls mid-blob.

The containerd fault runs on a lab node and its own agent (``10.99.0.(10+i):8479``, started by the
lab in the node's namespaces as a host-network pod runs), because what is checked belongs to that
process: its ``/readyz``, its pid across the fault, its next test. The registry faults need a
registry that can be killed or stalled at a chosen byte without touching the lab's shared ones:
``lab.chaos.ChaosProxy`` on a free loopback port in front of the plain registry. A lab node
reaches only the lab's fixed forwarded ports, so these two run on the lab's main containerd with
the engine in this process (``agent.pulltest``) — the same code the agent runs, without a new
lab port (the recovery figures: ``bench/bench_recovery.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from agent.models import Cause, PullTestResult
from agent.pulltest import NodeSettings, PullTestRequest, run_pull_test
from lab import chaos, cri, nodefiles, nodes, scenario, services, state
from lab.info import LabInfo
from lab.nodefiles import NodeFiles
from tests.polling import until

NODE = "node-1"
MIB = 1024 * 1024
SLOW = 2 * MIB  # bytes per second the node receives while its containerd is killed
WAIT = 30.0  # seconds any one state is waited for (not a speed claim: a bound on a hang)


@pytest.fixture(scope="module")
def node_agent(lab: LabInfo) -> Iterator[httpx.Client]:
    """``NODE`` healthy on containerd 1.6 with no fault, and a client of its own agent."""
    scenario.apply(lab.dir, [scenario.NodePlan(NODE)])
    token = nodefiles.token_file(nodes.lab_paths(lab)).read_text().strip()
    with httpx.Client(
        base_url=nodes.agent_url(NODE),
        headers={"Authorization": f"Bearer {token}"},
        timeout=90,
        trust_env=False,
    ) as client:
        yield client


def _ready(agent: httpx.Client) -> int:
    return agent.get("/readyz").status_code


def _ingests(lab: LabInfo) -> dict[str, int]:
    """Bytes of every download in progress in the node's content store (containerd writes each
    blob to ``ingest/<ref>/data`` first; what a killed pull left behind stays there)."""
    paths = nodes.lab_paths(lab)
    holder = nodes.holder_pid(paths, NODE)
    root = NodeFiles(paths, NODE).containerd.root  # a tmpfs inside the node's mount namespace
    ingest = Path(f"/proc/{holder}/root{root}/io.containerd.content.v1.content/ingest")
    found = {}
    for data in ingest.glob("*/data"):
        with contextlib.suppress(FileNotFoundError):  # a blob finished meanwhile
            found[data.parent.name] = data.stat().st_size
    return found


def _mid_pull(lab: LabInfo, before: dict[str, int]) -> bool:
    """A layer of the node's pull is arriving: some download grew since ``before``."""
    return any(size > before.get(ref, 0) for ref, size in _ingests(lab).items())


def test_containerd_killed_mid_pull(lab: LabInfo, node_agent: httpx.Client) -> None:
    """The test ends as runtime_unavailable saying the runtime went away; /readyz drops and comes
    back by itself once containerd is back; the agent is the same process; the next test pulls."""
    paths = nodes.lab_paths(lab)
    image = lab.images["big"]
    pids = state.recorded_pids(paths)
    agent_pid, containerd_pid = pids[f"agent-{NODE}"], pids[f"containerd-{NODE}"]
    until(
        lambda: _ready(node_agent) == 200, WAIT, "the agent ready before the fault", interval=0.05
    )
    params = {"image": image, "mode": "pull", "timeout": "60"}
    try:
        with chaos.slow_downloads(lab, NODE, SLOW), ThreadPoolExecutor(1) as pool:
            # absent, blobs included: another test may have left it (or a killed pull's lease)
            cri.remove(lab.nodes[NODE], image)
            chaos.drop_leases(lab, NODE)
            before = _ingests(lab)
            reply = pool.submit(node_agent.get, "/v1/pulltest", params=params)
            until(lambda: _mid_pull(lab, before), WAIT, "the node's pull under way")
            os.kill(containerd_pid, signal.SIGKILL)
            body = reply.result().json()
        assert body["success"] is False, body
        assert body["cause"] == "runtime_unavailable", body
        assert body["summary"].startswith("the container runtime went away in the middle of"), body
        assert "journalctl -u containerd" in body["remedy"]
        until(
            lambda: _ready(node_agent) == 503,
            WAIT,
            "/readyz 503 while containerd is down",
            interval=0.05,
        )
        assert node_agent.get("/readyz").json()["ready"] is False
        nodes.restart_containerd(lab, NODE)
        until(
            lambda: _ready(node_agent) == 200,
            WAIT,
            "/readyz 200 once containerd is back",
            interval=0.05,
        )
    finally:
        if not services.owned(state.recorded_pids(paths)[f"containerd-{NODE}"], paths.dir):
            nodes.restart_containerd(lab, NODE)
    assert state.recorded_pids(paths)[f"agent-{NODE}"] == agent_pid
    assert services.owned(agent_pid, paths.dir), "the agent process is not the one from before"
    again = node_agent.get("/v1/pulltest", params=params).json()
    assert again["success"] is True, again
    assert again["image_info"]["removed"] is True
    chaos.drop_leases(lab, NODE)  # what the killed pull kept


# --- the registry killed / stalled mid-blob (main containerd, engine in this process) ---------


def _pull_through(
    lab: LabInfo, node: NodeSettings, proxy: chaos.ChaosProxy, timeout: float
) -> PullTestResult:
    image = f"{proxy.address}/pullcheck/big:1.0"
    cri.remove(lab.endpoint, lab.images["big"])  # shares its blobs: they must be fetched again
    request = PullTestRequest(image=image, mode="pull", timeout=timeout)
    return asyncio.run(run_pull_test(request, node))


def test_registry_killed_mid_blob_is_named_before_the_deadline(
    lab: LabInfo, node: NodeSettings
) -> None:
    with chaos.chaos_proxy() as proxy:
        proxy.arm("kill", 1 * MIB)
        result = _pull_through(lab, node, proxy, timeout=60)
    assert proxy.fired.is_set(), "the pull never fetched a blob through the proxy"
    assert not result.success
    assert result.cause is Cause.CONNECTION_RESET, result.summary
    assert result.summary.startswith(f"the transfer from {proxy.address} broke after it had")
    assert "EOF" in result.summary and "deadline" not in result.summary
    # the probes run once the pull failed, so they find the registry gone
    assert [r.cause for r in result.endpoints] == [Cause.CONNECTION_REFUSED]
    assert result.summary.endswith("now refuses connections: the registry went down")
    assert "stopped listening during the pull" in result.remedy


def test_registry_stalling_mid_blob_is_named_at_the_deadline(
    lab: LabInfo, node: NodeSettings
) -> None:
    """containerd 1.6 has no read timeout on a blob: the test's own deadline ends the pull, and
    the summary says the layer download stalled (the probes reach the manifest)."""
    with chaos.chaos_proxy() as proxy:
        proxy.arm("stall", 1 * MIB)
        result = _pull_through(lab, node, proxy, timeout=6)
    assert proxy.fired.is_set(), "the pull never fetched a blob through the proxy"
    assert not result.success
    assert result.cause is Cause.TIMEOUT
    assert result.summary == (
        "the pull did not finish within the 6 s deadline; every endpoint answered the probes "
        "up to the manifest, so the pull stalled or crawled in the layer download (the blobs)"
    )
    assert [r.success for r in result.endpoints] == [True]


def test_chaos_proxy_refuses_nonsense_plans() -> None:
    with chaos.chaos_proxy() as proxy:
        for action, after in (("explode", 1), ("kill", 0), ("stall", -1), ("kill", True)):
            with pytest.raises(ValueError, match="must be"):
                proxy.arm(action, after)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rate must be"), chaos.slow_downloads(Path("/x"), NODE, 0):
        pass
