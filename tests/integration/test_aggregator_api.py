"""The aggregator against several real agents (each on its own lab containerd) plus bad ones."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from lab import control
from lab.info import LabInfo
from lab.servers import (
    Server,
    agent_config,
    copy_in_plain_registry,
    free_port,
    garbage_agent,
    merge,
    server,
)
from tests.integration.conftest import NODES

pytestmark = pytest.mark.lab


def _aggregator_config(
    lab: LabInfo, workdir: Path, static: list[str], **extra: object
) -> dict[str, Any]:
    base = agent_config(lab, workdir / "token", lab.endpoint)
    return merge(
        base,
        {
            "aggregator": {
                "node_timeout": 6,
                "discovery": {"mode": "static", "agents": static},
                # the lab's agents serve plain HTTP; without this the aggregator refuses to send
                # them credentials (tests/unit/test_cluster_api.py)
                "allow_plain_http_credentials": True,
            },
            **extra,
        },
    )


@pytest.fixture(scope="module")
def aggregator(lab: LabInfo, workdir: Path, agents: dict[str, Server]) -> Iterator[Server]:
    with garbage_agent() as garbage:
        static = [f"{name}={srv.url.removeprefix('http://')}" for name, srv in agents.items()]
        static += [
            f"node-down=127.0.0.1:{free_port()}",  # nothing listens
            "node-slow=127.0.0.1:15099",  # the lab's silent listener: accepts, never answers
            f"node-garbage={garbage}",
        ]
        with server("aggregator", _aggregator_config(lab, workdir, static), workdir) as srv:
            yield srv


def test_every_node_is_listed_and_bad_agents_are_agent_unreachable(
    aggregator: Server, lab: LabInfo
) -> None:
    reply = aggregator.client().get(
        "/v1/pulltest", params={"image": lab.images["good"], "mode": "pull", "timeout": "30"}
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    summary = body["summary"]
    names = [n["node"] for n in body["nodes"]]
    assert sorted(names) == sorted(
        ["node-1", "node-2", "node-3", "node-down", "node-slow", "node-garbage"]
    )
    assert summary["nodes"] == 6 and summary["ok"] == 3 and summary["failed"] == 3
    assert summary["by_cause"] == {"agent_unreachable": ["node-down", "node-garbage", "node-slow"]}
    for entry in body["nodes"]:
        if not entry["success"]:  # the reason and what to check, for the human table too
            assert entry["summary"] and entry["agent"].startswith("http://127.0.0.1:")
            assert entry["status"] == (200 if entry["node"] == "node-garbage" else None)
    failed = {n["node"]: n for n in body["nodes"] if not n["success"]}
    assert "spec.nodeName=node-down" in failed["node-down"]["remedy"]
    assert "something other than a pullcheck agent" in failed["node-garbage"]["remedy"]
    assert len(summary["digests"]) == 1 and summary["digest_drift"] is False
    ok = [n for n in body["nodes"] if n["success"]]
    assert all(n["image_info"]["image_id"].startswith("sha256:") for n in ok)
    assert {n["runtime"]["endpoint"] for n in ok} == set(control.ensure_nodes(lab, NODES).values())


def test_streaming_ndjson_then_summary(aggregator: Server, lab: LabInfo) -> None:
    with aggregator.client().stream(
        "GET",
        "/v1/pulltest",
        params={
            "image": lab.images["refused"],
            "mode": "resolve",
            "timeout": "5",
            "stream": "ndjson",
        },
    ) as reply:
        assert reply.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in reply.iter_lines() if line]
    *nodes, last = lines
    assert len(nodes) == 6 and "summary" in last
    assert last["summary"]["by_cause"]["connection_refused"] == ["node-1", "node-2", "node-3"]
    # agents answer before the silent one times out: the first lines are real results
    assert nodes[0]["cause"] in {"connection_refused", "agent_unreachable"}
    assert nodes[-1]["node"] == "node-slow"


def test_nodes_filter(aggregator: Server, lab: LabInfo) -> None:
    reply = aggregator.client().get(
        "/v1/pulltest",
        params={"image": lab.images["good"], "mode": "resolve", "nodes": "node-2,node-down"},
    )
    body = reply.json()
    assert sorted(n["node"] for n in body["nodes"]) == ["node-2", "node-down"]


def test_a_requested_node_discovery_does_not_know_is_listed_and_failed(
    aggregator: Server, lab: LabInfo
) -> None:
    reply = aggregator.client().get(
        "/v1/pulltest",
        params={"image": lab.images["good"], "mode": "resolve", "nodes": "node-1,node-9"},
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    summary = body["summary"]
    assert (summary["nodes"], summary["ok"], summary["failed"]) == (2, 1, 1)
    assert summary["by_cause"] == {"node_not_found": ["node-9"]}
    missing = next(n for n in body["nodes"] if n["node"] == "node-9")
    assert missing["cause"] == "node_not_found" and missing["success"] is False
    assert "node-9" in missing["summary"] and "kubectl get nodes" in missing["remedy"]
    with aggregator.client().stream(
        "GET",
        "/v1/pulltest",
        params={
            "image": lab.images["good"],
            "mode": "resolve",
            "nodes": "node-9",
            "stream": "ndjson",
        },
    ) as streamed:
        assert streamed.status_code == 200
        lines = [json.loads(line) for line in streamed.iter_lines() if line]
    assert [line.get("cause") for line in lines[:-1]] == ["node_not_found"]
    assert lines[-1]["summary"]["failed"] == 1
    metrics = aggregator.client().get("/metrics").text
    assert 'pullcheck_aggregator_node_results_total{cause="node_not_found"}' in metrics
    # a name that cannot be a node is a usage error, not an entry
    bad = aggregator.client().get(
        "/v1/pulltest", params={"image": lab.images["good"], "nodes": "node-1,no/de"}
    )
    assert bad.status_code == 400 and "'no/de' is not a node name" in bad.json()["message"]


def test_agents_by_state_in_the_metrics_and_the_agent_list(aggregator: Server) -> None:
    """Every replica checks the agents' /readyz: 3 ready, 3 that are not pullcheck agents
    answering (refused, silent, an HTML page)."""

    def counts() -> dict[str, float]:
        text = aggregator.client().get("/metrics").text
        found = re.findall(r'^pullcheck_aggregator_agents\{state="(\w+)"\} (\S+)$', text, re.M)
        return {state: float(value) for state, value in found}

    deadline = time.monotonic() + 30
    while counts().get("ready") != 3 or counts().get("unreachable") != 3:
        assert time.monotonic() < deadline, counts()
        time.sleep(0.3)
    assert counts() == {
        "discovered": 6,
        "ready": 3,
        "unready": 0,
        "unreachable": 3,
        "unknown": 0,
    }
    listed = {a["node"]: a for a in aggregator.client().get("/v1/agents").json()["agents"]}
    assert listed["node-1"]["state"] == "ready" and "reason" not in listed["node-1"]
    assert listed["node-garbage"]["state"] == "unreachable"
    assert "not a pullcheck agent" in listed["node-garbage"]["reason"]


def test_an_agent_that_refuses_is_listed_with_its_status_and_a_remedy(
    lab: LabInfo, workdir: Path, agents: dict[str, Server]
) -> None:
    """An agent holding another token answers 401: the aggregator names the token as the fix."""
    (workdir / "other-token").write_text("not-the-aggregators-token\n")
    endpoint = control.ensure_nodes(lab, NODES)["node-2"]
    config = agent_config(lab, workdir / "other-token", endpoint)
    with server("agent", config, workdir, node="node-rotated") as rotated:
        static = [
            f"node-1={agents['node-1'].url.removeprefix('http://')}",
            f"node-rotated={rotated.url.removeprefix('http://')}",
        ]
        config = _aggregator_config(lab, workdir, static)
        with server("aggregator", config, workdir, name="agg-refused") as agg:
            body = (
                agg.client()
                .get("/v1/pulltest", params={"image": lab.images["good"], "mode": "resolve"})
                .json()
            )
    entry = next(n for n in body["nodes"] if n["node"] == "node-rotated")
    assert entry["cause"] == "agent_refused" and entry["success"] is False
    assert entry["status"] == 401 and entry["error"] == "unauthorized"
    assert entry["summary"].startswith("the agent answered HTTP 401 unauthorized")
    assert "same token" in entry["remedy"] and "pullcheck-token" in entry["remedy"]
    assert body["summary"]["by_cause"] == {"agent_refused": ["node-rotated"]}
    assert "not-the-aggregators-token" not in json.dumps(body)


def test_aggregator_auth_and_allowlist(aggregator: Server) -> None:
    assert (
        aggregator.client(token=None).get("/v1/pulltest", params={"image": "x"}).status_code == 401
    )
    assert aggregator.client(token="nope").get("/v1/agents").status_code == 401
    reply = aggregator.client().get("/v1/pulltest", params={"image": "evil.example.com/x:1"})
    assert reply.status_code == 403 and reply.json()["error"] == "not_allowed"
    reply = aggregator.client().get("/v1/pulltest", params={"image": "x", "verbose": "1"})
    assert reply.status_code == 400


def test_connectivity_matrix(aggregator: Server, lab: LabInfo) -> None:
    matrix = aggregator.client().get("/v1/connectivity").json()
    urls = [c["url"] for c in matrix["columns"]]
    assert any("plain.pullcheck.test:15000" in u for u in urls)
    rows = {r["node"]: r for r in matrix["rows"]}
    assert rows["node-1"]["reachable"] and not rows["node-down"]["reachable"]
    assert sorted(matrix["summary"]["unreachable"]) == ["node-down", "node-garbage", "node-slow"]


def test_digest_drift_is_flagged(lab: LabInfo, workdir: Path) -> None:
    """Two nodes whose hosts.toml sends the same name to repositories holding different images."""
    copy_in_plain_registry("pullcheck/good:1.0", "pullcheck/drift:1.0")
    copy_in_plain_registry("pullcheck/corrupt:1.0", "other/pullcheck/drift:1.0")
    name = "drift.pullcheck.test:15000"
    upstream = "http://plain.pullcheck.test:15000"
    views = {
        # node a: the registry as it is
        "drift-a": f'server = "{upstream}"\n[host."{upstream}"]\n'
        'capabilities = ["pull", "resolve"]\n',
        # node b: a "mirror" whose API root is another tree of the registry (override_path)
        "drift-b": f'server = "{upstream}"\n[host."{upstream}/v2/other"]\n'
        'capabilities = ["pull", "resolve"]\noverride_path = true\n',
    }
    with ExitStack() as stack:
        static = []
        for node, hosts_toml in views.items():
            root = workdir / node / "certs.d"
            (root / name).mkdir(parents=True)
            (root / name / "hosts.toml").write_text(hosts_toml)
            config = agent_config(
                lab,
                workdir / "token",
                lab.endpoint,
                allow=["drift.pullcheck.test:*/*"],
                agent={"registry_config_path": str(root)},
            )
            srv = stack.enter_context(server("agent", config, workdir, node=node))
            static.append(f"{node}={srv.url.removeprefix('http://')}")
        config = _aggregator_config(lab, workdir, static, allow=["drift.pullcheck.test:*/*"])
        agg = stack.enter_context(server("aggregator", config, workdir, name="drift-agg"))
        image = f"{name}/pullcheck/drift:1.0"
        body = agg.client().get("/v1/pulltest", params={"image": image, "mode": "resolve"}).json()
    summary = body["summary"]
    assert summary["ok"] == 2, body
    assert summary["digest_drift"] is True and len(summary["digests"]) == 2
    assert sorted(n for nodes in summary["digests"].values() for n in nodes) == [
        "drift-a",
        "drift-b",
    ]


def test_aggregator_without_agents_says_so(lab: LabInfo, workdir: Path) -> None:
    config = _aggregator_config(lab, workdir, [])
    with server("aggregator", config, workdir, name="empty") as agg:
        assert agg.client(token=None).get("/readyz").status_code == 503
        reply = agg.client().get("/v1/pulltest", params={"image": lab.images["good"]})
        assert reply.status_code == 503 and reply.json()["error"] == "no_agents"


def test_post_passes_credentials_to_agents_only(aggregator: Server, lab: LabInfo) -> None:
    reply = aggregator.client().post(
        "/v1/pulltest",
        params={"nodes": "node-1"},
        json={
            "image": lab.images["private"],
            "mode": "resolve",
            "creds": f"{lab.username}:{lab.password}",
        },
    )
    body = reply.json()
    assert body["summary"]["ok"] == 1, body
    assert lab.password not in reply.text and lab.password not in aggregator.log_text()
