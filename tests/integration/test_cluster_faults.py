"""Faults of pullcheck's own parts in a lab cluster: agents killed and frozen during a fan-out,
the aggregator restarted in the middle of a pre-pull wave, a storm of requests at one agent.

Five lab nodes (node-1..node-5, each with its own containerd and agent in its own namespaces,
``lab.nodes``) and a real aggregator (``tests.integration.cluster.lab_cluster``). The aggregator
knows the five agents statically (``node=address``), so its fan-outs never reach the other nodes
the lab may run. The agents' faults come from ``lab.agentfaults``, the storm from ``lab.storm``;
the long measurements are in ``bench/bench_fanout_faults.py`` and ``bench/bench_agent_storm.py``.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import access, agentfaults, cri, netns, nodes, procstat, storm
from lab.info import LabInfo
from lab.scenario import NodePlan
from lab.servers import TOKEN, Server, agent_config, server
from tests.integration.cluster import lab_cluster, pulltest, static_discovery

pytestmark = pytest.mark.lab

NODES = [f"node-{i}" for i in range(1, 6)]
KILLED, FROZEN = "node-2", "node-4"
NODE_TIMEOUT = 8  # the aggregator's per-node deadline (s): what a frozen agent costs a fan-out
PULL_TIMEOUT = 30  # over NODE_TIMEOUT: the per-node deadline is what cuts a frozen node off
REQUEST_DEADLINE = 30.0  # seconds to see a node's pull test reach the registry


def _address(name: str) -> str:
    return netns.node_address(nodes.node_index(name))


def _remove(info: LabInfo, images: list[str]) -> None:
    """``images`` absent from every node of ``NODES`` (containerd collects their blobs)."""
    for name in NODES:
        for image in images:
            cri.remove(info.nodes[name], image)


@pytest.fixture
def fanout_cluster(lab: LabInfo, tmp_path: Path) -> Iterator[tuple[LabInfo, Server]]:
    aggregator = {"node_timeout": NODE_TIMEOUT, "discovery": static_discovery(NODES)}
    with lab_cluster(
        lab, [NodePlan(n) for n in NODES], tmp_path, name="agg-fanout", aggregator=aggregator
    ) as cluster:
        yield cluster


def _wait_requests(info: LabInfo, mark: access.Mark, tag: str, addresses: set[str]) -> None:
    """Return once each of ``addresses`` sent the registry a request naming ``tag`` (its agent
    is testing that image now)."""
    deadline = time.monotonic() + REQUEST_DEADLINE
    seen: set[str] = set()
    while time.monotonic() < deadline:
        found = access.requests(info, "plain", since=mark, settle=0)
        seen = {r.remote for r in found if tag in r.uri} & addresses
        if seen == addresses:
            return
        time.sleep(0.02)
    raise AssertionError(f"only {sorted(seen)} of {sorted(addresses)} began the pull test")


def test_killed_and_frozen_agents_are_listed_and_do_not_hold_back_the_others(
    fanout_cluster: tuple[LabInfo, Server],
) -> None:
    info, agg = fanout_cluster
    # a big image, absent everywhere, under a tag only this test pulls: the agents are mid-pull
    # when their node's first request for it shows in the registry's log
    image = access.fresh_reference(info, "big")
    _remove(info, [info.images["big"]])
    mark = access.mark(info)
    try:
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(pulltest, agg, image, PULL_TIMEOUT)
            _wait_requests(
                info, mark, image.rsplit(":", 1)[1], {_address(KILLED), _address(FROZEN)}
            )
            agentfaults.kill(info, KILLED)
            agentfaults.freeze(info, FROZEN)
            body = answer.result()
        matrix = agg.client().get("/v1/connectivity").json()  # a second fan-out, still faulty
    finally:
        agentfaults.heal(info, [KILLED, FROZEN])

    by_node = {n["node"]: n for n in body["nodes"]}
    assert sorted(by_node) == NODES  # listed, never dropped
    frozen, killed = by_node[FROZEN], by_node[KILLED]
    assert killed["cause"] == frozen["cause"] == "agent_unreachable"
    # the frozen agent cost the fan-out its per-node deadline, and no more: the entry says so
    assert frozen["summary"] == f"no answer within {NODE_TIMEOUT:g} s", frozen
    assert "no answer within" not in killed["summary"], killed  # a broken connection, at once
    for name in sorted(set(NODES) - {KILLED, FROZEN}):
        entry = by_node[name]
        assert entry["success"] is True, entry
        assert "pullcheck_version" in entry and entry["image"] == image  # the agent's own result
    summary = body["summary"]
    assert (summary["nodes"], summary["ok"], summary["failed"]) == (5, 3, 2)
    assert summary["by_cause"] == {"agent_unreachable": [KILLED, FROZEN]}

    rows = {r["node"]: r for r in matrix["rows"]}
    assert sorted(rows) == NODES
    assert sorted(matrix["summary"]["unreachable"]) == [KILLED, FROZEN]
    assert rows[FROZEN]["summary"] == f"no answer within {NODE_TIMEOUT:g} s"
    assert rows[KILLED]["cause"] == "agent_unreachable"
    assert all(rows[n]["reachable"] for n in set(NODES) - {KILLED, FROZEN})

    # healed: the thawed agent and the restarted one answer the next test
    again = pulltest(agg, info.images["good"], PULL_TIMEOUT, mode="resolve")
    assert again["summary"]["ok"] == 5, again["summary"]


# --- the aggregator restarted mid-wave ------------------------------------------------------

JOB = "warm-wave"


def _wave_images(info: LabInfo) -> list[str]:
    return [info.images["big"], info.images["good"], info.images["tls"]]


def _job(info: LabInfo) -> dict[str, Any]:
    return {
        "name": JOB,
        "images": _wave_images(info),
        "schedule": "0 3 1 1 *",  # far away: run on demand
        "on_new_node": False,
        "retries": {"attempts": 2, "initial": 0.5, "maximum": 1},
        # one node at a time, one pull per registry: a wave long enough to cut
        "pacing": {"max_parallel_nodes": 1, "per_registry": 1, "jitter": 0},
    }


def _settled(body: dict[str, Any]) -> bool:
    return (
        not body["running"]
        and body["images_total"] == len(NODES) * 3
        and all(n["phase"] in ("done", "failed") for n in body["nodes"])
    )


def _pulls_per_node(info: LabInfo, mark: access.Mark) -> dict[tuple[str, str], Counter[str]]:
    """(node address, registry) -> how often containerd requested each URI (GET and HEAD)."""
    found: dict[tuple[str, str], Counter[str]] = {}
    for registry in ("plain", "tls"):
        for r in access.requests(info, registry, since=mark):
            if r.user_agent.startswith("containerd") and r.method in ("GET", "HEAD"):
                found.setdefault((r.remote, registry), Counter())[f"{r.method} {r.path}"] += 1
    return found


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["crash", "sigterm"])
def test_aggregator_restarted_mid_wave_resumes_and_pulls_nothing_twice(
    lab: LabInfo, tmp_path: Path, sig: signal.Signals
) -> None:
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(yaml.safe_dump({"jobs": [_job(lab)]}))
    aggregator = {
        "discovery": static_discovery(NODES),
        "prepull": {"jobs_file": str(jobs), "poll_interval": 0.5, "tick": 0.2},
    }
    # absent before the aggregator starts: it rebuilds its jobs from the nodes' images, and a
    # job with nothing on any node has not run (the run below pulls every pair)
    nodes.ensure_nodes(lab, len(NODES), agents=True)
    images = _wave_images(lab)
    _remove(lab, images)
    plans = [NodePlan(n) for n in NODES]
    with lab_cluster(lab, plans, tmp_path, name="agg-wave", aggregator=aggregator) as (info, agg):
        mark = access.mark(info)
        reply = agg.client().post(f"/v1/prepull/jobs/{JOB}/run")
        assert reply.status_code in (200, 202), reply.text
        # cut the wave once the first node has its images and before the last one has
        cut = agg.wait_prepull_job(JOB, lambda b: b["images_ready"] >= len(images), timeout=60)
        agg.proc.send_signal(sig)
        agg.proc.wait(timeout=30)
        assert cut["images_ready"] < cut["images_total"], cut
        # the same configuration (and port) as a new process: it rebuilds the job's state from
        # the nodes' image lists and pulls what is missing
        config = yaml.safe_load(agg.log.with_suffix(".yaml").read_text())
        port = int(agg.url.rsplit(":", 1)[1])
        with server("aggregator", config, tmp_path, name="agg-wave-2", port=port) as again:
            body = again.wait_prepull_job(JOB, _settled, timeout=90)

    assert {n["phase"] for n in body["nodes"]} == {"done"}, body["nodes"]
    pulled_now = [n for n in body["nodes"] if not n.get("skipped")]
    assert pulled_now, "the new aggregator pulled nothing: the wave was not cut"
    assert any(n.get("skipped") for n in body["nodes"])  # what the first one finished stays
    # every node pulled every image, and containerd asked the registry for nothing twice
    per_node = _pulls_per_node(info, mark)
    for name in NODES:
        for registry in ("plain", "tls"):
            counts = per_node.get((_address(name), registry), Counter())
            twice = {uri: n for uri, n in counts.items() if n > 1}
            assert not twice, f"{name} asked {registry} twice: {twice}"
        for image in images:
            registry = "tls" if image == info.images["tls"] else "plain"
            repo, tag = image.split("/", 1)[1].rsplit(":", 1)
            head = f"HEAD /v2/{repo}/manifests/{tag}"
            assert per_node.get((_address(name), registry), Counter())[head] == 1, (name, image)


# --- a storm at one agent -------------------------------------------------------------------

STORM = 1000
STORM_TAGS = 20  # distinct pull tests: more than pull_concurrency + pull_queue admit (2 + 8)
RSS_BOUND_MIB = 400.0  # the agent's peak during the storm (measured: idle 75, peak 92 MiB)
RSS_SETTLE_MIB = 48.0  # how far above idle the agent may stay once the storm is over
SETTLE_DEADLINE = 30.0


def test_a_storm_of_requests_gets_only_200_or_429_and_memory_comes_back(
    lab: LabInfo, tmp_path: Path
) -> None:
    endpoint = nodes.ensure_nodes(lab, len(NODES))["node-5"]
    cri.pull(endpoint, lab.images["good"])  # the pull tests' image is present on the node
    tags = [access.fresh_reference(lab) for _ in range(STORM_TAGS)]
    (tmp_path / "token").write_text(TOKEN + "\n")
    config = agent_config(lab, tmp_path / "token", endpoint)
    with server("agent", config, tmp_path, node="node-5", name="storm") as agent:
        pid = agent.proc.pid
        agent.client().get("/v1/connectivity").raise_for_status()  # warm: its first probes ran
        idle = procstat.status_mib(pid)["VmRSS"]
        fds = procstat.open_fds(pid)
        procstat.reset_peak(pid)
        result = asyncio.run(storm.storm(agent.url, storm.mix(tags, STORM), TOKEN))
        peak = procstat.status_mib(pid)["VmHWM"]
        settled, fds_after = _settle(pid, idle + RSS_SETTLE_MIB, fds)
        alive = agent.proc.poll() is None

    assert result.errors == [], result.errors  # no reset or refused connections, no timeouts
    assert set(result.statuses) <= {"200", "429"}, result.by_path
    assert sum(result.statuses.values()) == STORM
    assert result.missing_retry_after == 0
    assert all(c["200"] > 0 for c in result.by_path.values()), result.by_path
    assert alive
    assert peak < RSS_BOUND_MIB, f"peak RSS {peak:.0f} MiB (idle {idle:.0f} MiB)"
    assert settled <= idle + RSS_SETTLE_MIB, f"RSS {settled:.0f} MiB after, {idle:.0f} MiB idle"
    assert fds_after <= fds + 4, f"{fds_after} open fds after the storm, {fds} before"


def _settle(pid: int, rss_mib: float, fds: int) -> tuple[float, int]:
    """The agent's RSS and open fds once both are back under the bounds (or at the deadline)."""
    deadline = time.monotonic() + SETTLE_DEADLINE
    while True:
        rss, open_now = procstat.status_mib(pid)["VmRSS"], procstat.open_fds(pid)
        if (rss <= rss_mib and open_now <= fds + 4) or time.monotonic() > deadline:
            return rss, open_now
        time.sleep(0.5)
