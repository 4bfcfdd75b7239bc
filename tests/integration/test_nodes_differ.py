"""Nodes that differ: a lab cluster where each node fails its own way, seen through the aggregator.

Eleven lab nodes (``lab.nodes``: each in its own network and mount namespace, with its own
containerd and its own agent on its own address) get one fault each (``lab.nodefaults``; node-1
none, node-11 its MTU black hole in its own test only); one real aggregator finds their agents by
DNS (the bridge resolver's headless-Service-style name), as in a cluster. What the runtime decides
(each node's cause, the pre-pull job, the MTU stall) runs once per containerd build (1.6, 1.7, 2.x:
``lab.runtimes``); the connectivity matrix (pullcheck's own probes) and a cleared fault on 1.6.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import cri, nodefaults, nodes, runtimes, scenario
from lab.info import LabInfo
from lab.servers import Server
from tests.integration.cluster import lab_cluster, pulltest

pytestmark = pytest.mark.lab

# node -> (fault, cause the aggregator must report for the TLS image; None = the pull works)
PLAN: dict[str, tuple[str | None, str | None]] = {
    "node-1": (None, None),
    "node-2": ("dns-nxdomain", "dns_failure"),
    "node-3": ("dns-servfail", "dns_failure"),
    "node-4": ("dns-unreachable", "dns_failure"),
    "node-5": ("registry-refused", "connection_refused"),
    "node-6": ("registry-timeout", "timeout"),
    "node-7": ("ca-missing", "tls_error"),
    "node-8": ("disk-full", "disk_full"),
    "node-9": ("proxy-refused", "connection_refused"),
    "node-10": ("dead-mirror", None),
    # the MTU black hole: switched on in its own test, the module's last (see there)
    "node-11": (None, None),
}
FAILING = {n for n, (_, cause) in PLAN.items() if cause}
PULL_TIMEOUT = 30
MTU_NODE = "node-11"
MTU_TIMEOUT = 8  # the black hole's pull stalls until the test's deadline: keep it short


@pytest.fixture(scope="module", params=runtimes.RUNTIMES, ids=lambda r: f"containerd-{r}")
def cluster(
    request: pytest.FixtureRequest, lab: LabInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LabInfo, Server, Path]]:
    """The planned nodes on one runtime, and an aggregator discovering their agents by DNS."""
    runtime: str = request.param
    plans = [scenario.NodePlan(n, runtime, (f,) if f else ()) for n, (f, _) in PLAN.items()]
    workdir = tmp_path_factory.mktemp(f"differ-{runtime}")
    jobs = workdir / "jobs.yaml"
    prepull = {"jobs_file": str(jobs), "poll_interval": 0.5, "tick": 0.5}
    jobs.write_text(yaml.safe_dump({"jobs": [_job(lab)]}))
    with lab_cluster(
        lab, plans, workdir, name=f"agg-{runtime}", aggregator={"prepull": prepull}
    ) as (info, agg):
        yield info, agg, workdir


def _job(info: LabInfo) -> dict[str, Any]:
    return {
        "name": "warm-tls",
        "images": [info.images["tls"]],
        "schedule": "0 3 1 1 *",  # far away: run on demand
        "on_new_node": False,
        "retries": {"attempts": 1, "initial": 0.5, "maximum": 1},
        "pacing": {"max_parallel_nodes": 10, "per_registry": 10, "jitter": 0},
    }


def _pulltest(agg: Server, image: str) -> dict[str, Any]:
    """The planned nodes only (the lab may run others: other modules', a benchmark's). Naming
    nodes makes the aggregator learn every DNS-discovered agent's name while its start-up
    pre-pull run is under way: that run must still end (it once never did)."""
    return pulltest(agg, image, PULL_TIMEOUT, nodes=",".join(PLAN))


def test_each_node_fails_its_own_way(cluster: tuple[LabInfo, Server, Path]) -> None:
    info, agg, _ = cluster
    body = _pulltest(agg, info.images["tls"])
    by_node = {n["node"]: n for n in body["nodes"]}
    assert set(by_node) == set(PLAN)
    for name, (fault, cause) in PLAN.items():
        entry = by_node[name]
        assert entry["cause"] == cause, f"{name} ({fault}): {entry.get('summary')}"
        assert entry["success"] is (cause is None)
    summary = body["summary"]
    assert summary["nodes"] == len(by_node) and summary["failed"] == len(FAILING)
    want: dict[str, list[str]] = {}
    for name, (_, cause) in PLAN.items():
        if cause:
            want.setdefault(cause, []).append(name)
    assert {k: sorted(v) for k, v in summary["by_cause"].items()} == {
        k: sorted(v) for k, v in want.items()
    }
    # the runtime's own words where the probes cannot see the fault (containerd's environment)
    assert "proxyconnect tcp" in by_node["node-9"]["summary"]
    assert "10.99.0.1:3128" in by_node["node-9"]["summary"]


# the probes are pullcheck's own, the same whatever containerd a node runs: on one runtime only
@pytest.mark.parametrize("cluster", ["1.6"], indirect=True, ids=["containerd-1.6"])
def test_connectivity_matrix_shows_who_cannot_reach_what(
    cluster: tuple[LabInfo, Server, Path],
) -> None:
    info, agg, _ = cluster
    matrix = agg.client().get("/v1/connectivity").json()
    plain = f"http://{info.registries['plain']}/v2"
    tls = f"https://{info.registries['tls']}/v2"
    # (the lab may run more nodes than planned: other tests add some)
    rows = {r["node"]: r for r in matrix["rows"] if r["node"] in PLAN}
    assert set(rows) == set(PLAN) and all(r["reachable"] for r in rows.values())

    def cause(node: str, url: str) -> str | None:
        cell: dict[str, Any] = rows[node]["cells"][url]
        return None if cell["success"] else cell["cause"]

    for node in ("node-2", "node-3", "node-4"):
        assert cause(node, plain) == cause(node, tls) == "dns_failure"
    assert cause("node-5", plain) == cause("node-5", tls) == "connection_refused"
    assert cause("node-6", plain) == cause("node-6", tls) == "timeout"
    # the missing CA breaks TLS only; the proxy and the full disk are invisible to probes
    assert cause("node-7", plain) is None and cause("node-7", tls) == "tls_error"
    for node in ("node-1", "node-8", "node-9", "node-11"):
        assert cause(node, plain) is None and cause(node, tls) is None
    mirror = f"http://{info.registries['refused']}/v2"
    assert cause("node-10", mirror) == "connection_refused"
    # (node-8: no module but this one tests images on it; an agent keeps probing the registries
    # of its recent tests, and node-1 is the node other modules' tests use first)
    assert mirror not in rows["node-8"]["cells"]
    failing = matrix["summary"]["failing"]
    assert sorted(n for n in failing[tls] if n in PLAN) == sorted(
        ["node-2", "node-3", "node-4", "node-5", "node-6", "node-7"]
    )


def test_prepull_job_skips_the_broken_nodes_with_their_causes(
    cluster: tuple[LabInfo, Server, Path],
) -> None:
    info, agg, _ = cluster
    for name in PLAN:  # the image absent everywhere, so every node really pulls
        cri.remove(info.nodes[name], info.images["tls"])
    before = _wait_job(agg, "warm-tls", settled=False)  # not running (a start-up run ended)
    reply = agg.client().post("/v1/prepull/jobs/warm-tls/run")
    assert reply.status_code in (200, 202), reply.text
    body = _wait_job(agg, "warm-tls", after=before.get("last_started"))
    # DNS discovery knows addresses only: a job's entry is labelled by the agent's address until
    # the aggregator has learnt the node's name from one of its answers
    name_of = {nodes.agent_url(n).removeprefix("http://"): n for n in PLAN} | {n: n for n in PLAN}
    per_node = {name_of[n["node"]]: n for n in body["nodes"] if n["node"] in name_of}
    assert set(per_node) == set(PLAN)
    for name, (fault, cause) in PLAN.items():
        entry = per_node[name]
        if cause is None:
            assert entry["phase"] == "done", f"{name}: {entry}"
        else:
            assert entry["phase"] == "failed", f"{name} ({fault}): {entry}"
            assert entry["cause"] == cause, f"{name} ({fault}): {entry}"


@pytest.mark.parametrize("cluster", ["1.6"], indirect=True, ids=["containerd-1.6"])
def test_a_cleared_fault_makes_the_node_pass(cluster: tuple[LabInfo, Server, Path]) -> None:
    info, agg, _ = cluster
    for name in ("node-2", "node-9"):  # a resolver fault, and one that restarts containerd
        nodefaults.clear(info.dir, name)
    try:
        # (not node-6: its dropped SYNs would make the test wait 12 s for nothing)
        body = pulltest(agg, info.images["tls"], PULL_TIMEOUT, nodes="node-2,node-3,node-9")
        success = {n["node"]: n["success"] for n in body["nodes"]}
        assert success == {"node-2": True, "node-3": False, "node-9": True}  # node-3 still fails
        assert body["summary"]["failed"] == 1
    finally:
        for name in ("node-2", "node-9"):
            nodefaults.set_fault(info.dir, name, PLAN[name][0] or "", True)


def test_an_mtu_black_hole_stalls_the_blob_download(cluster: tuple[LabInfo, Server, Path]) -> None:
    """Packets over 1400 bytes from the gateway dropped (``mtu-blackhole``): the TLS handshake
    and the manifest fit, the first full-size segment of a blob never arrives, so the pull
    stalls until the test's deadline — ``timeout`` on 1.6, 1.7 and 2.x alike (containerd has no
    stall timeout of its own here) — and the probes see nothing wrong. Switched on for this
    test only, the module's last, so the other tests do not wait for its stall."""
    info, agg, _ = cluster
    cri.remove(info.nodes[MTU_NODE], info.images["tls"])  # the pre-pull test put it there
    nodefaults.set_fault(info.dir, MTU_NODE, "mtu-blackhole", True)
    try:
        body = pulltest(agg, info.images["tls"], MTU_TIMEOUT, nodes=MTU_NODE)
        [entry] = body["nodes"]
        assert entry["cause"] == "timeout" and entry["success"] is False, entry.get("summary")
        assert "stalled or crawled in the layer download" in entry["summary"], entry["summary"]
        assert body["summary"]["by_cause"] == {"timeout": [MTU_NODE]}
        [row] = [
            r for r in agg.client().get("/v1/connectivity").json()["rows"] if r["node"] == MTU_NODE
        ]
        tls = f"https://{info.registries['tls']}/v2"
        assert row["cells"][tls]["success"], row["cells"][tls]  # every probe answer fits
    finally:
        nodefaults.set_fault(info.dir, MTU_NODE, "mtu-blackhole", False)


def _wait_job(
    agg: Server, name: str, timeout: float = 120, *, settled: bool = True, after: str | None = None
) -> dict[str, Any]:
    """The job's status once it is not running (and, with ``settled``, every node finished a
    run started after ``after``)."""

    def check(body: dict[str, Any]) -> bool:
        return not body["running"] and (
            not settled
            or (
                body["last_started"] != after
                and bool(body["nodes"])
                and all(n["phase"] in ("done", "failed") for n in body["nodes"])
            )
        )

    return agg.wait_prepull_job(name, check, timeout)
