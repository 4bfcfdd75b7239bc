"""``pullcheck cluster`` as a user runs it: a subprocess against a real aggregator and real agents
on lab nodes, plus a node whose agent does not answer (a closed port)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.info import LabInfo
from lab.servers import Server, agent_config, free_port, merge, server

pytestmark = pytest.mark.lab

# the aggregator allows what the agents do not: the agents answer 403, the node is agent_refused
REFUSED_IMAGE = "docker.io/library/busybox:1.36"


@pytest.fixture(scope="module")
def aggregator(lab: LabInfo, workdir: Path, agents: dict[str, Server]) -> Iterator[Server]:
    static = [f"{name}={srv.url.removeprefix('http://')}" for name, srv in agents.items()]
    static.append(f"node-down=127.0.0.1:{free_port()}")  # nothing listens there
    base = agent_config(lab, workdir / "token", lab.endpoint)
    config = merge(
        base,
        {
            "allow": [*base["allow"], "docker.io/library/*"],
            "aggregator": {"node_timeout": 20, "discovery": {"mode": "static", "agents": static}},
        },
    )
    with server("aggregator", config, workdir, name="cluster-cli") as srv:
        yield srv


def _cli(
    aggregator: Server | str, workdir: Path, *args: str, token_file: Path | None = None
) -> subprocess.CompletedProcess[str]:
    url = aggregator if isinstance(aggregator, str) else aggregator.url
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULLCHECK_", "CRICTL_"))}
    env["COLUMNS"] = "60"  # not a terminal: the tables must not be cut to this width anyway
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "cluster",
            *args,
            "--url",
            url,
            "--token-file",
            str(token_file or workdir / "token"),
        ],
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
        check=False,
    )


def _row(stdout: str, node: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith(node + " "))


def _json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    body = json.loads(proc.stdout)  # exactly one JSON object
    assert isinstance(body, dict)
    return body


def test_pull_json_has_every_node_and_exits_1_when_one_cannot(
    aggregator: Server, workdir: Path, lab: LabInfo
) -> None:
    proc = _cli(aggregator, workdir, "pull", lab.images["good"], "--mode", "resolve", "--json")
    assert proc.returncode == 1, proc.stderr
    body = _json(proc)
    assert body["image"] == lab.images["good"] and body["mode"] == "resolve"
    summary = body["summary"]
    assert (summary["nodes"], summary["ok"], summary["failed"]) == (4, 3, 1)
    assert summary["by_cause"] == {"agent_unreachable": ["node-down"]}
    assert [n["node"] for n in body["nodes"]] == ["node-1", "node-2", "node-3", "node-down"]
    assert len(summary["digests"]) == 1 and summary["digest_drift"] is False


def test_pull_human_output_gives_the_unreachable_nodes_reason_and_remedy(
    aggregator: Server, workdir: Path, lab: LabInfo
) -> None:
    image = lab.images["good"]
    down = next(
        n
        for n in _json(_cli(aggregator, workdir, "pull", image, "--mode", "resolve", "--json"))[
            "nodes"
        ]
        if n["node"] == "node-down"
    )
    assert down["cause"] == "agent_unreachable" and down["remedy"]
    proc = _cli(aggregator, workdir, "pull", image, "--mode", "resolve")
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    assert "4 node(s): 3 ok, 1 failed" in out and "agent_unreachable: node-down" in out
    row = _row(out, "node-down")  # one line per node: the table is not cut or wrapped
    assert "agent_unreachable" in row and down["summary"] in row and down["remedy"] in row
    assert all(_row(out, f"node-{i}").split()[1] == "ok" for i in (1, 2, 3))
    assert "node(s) answered" in proc.stderr  # progress as each node's line arrived


def test_pull_on_chosen_nodes_that_all_can_exits_0(
    aggregator: Server, workdir: Path, lab: LabInfo
) -> None:
    proc = _cli(
        aggregator,
        workdir,
        "pull",
        lab.images["good"],
        "--nodes",
        "node-1,node-2",
        "--timeout",
        "60",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK  2 node(s): 2 ok, 0 failed" in proc.stdout
    assert "digest sha256:" in proc.stdout and "node-3" not in proc.stdout


def test_a_refusing_agent_shows_its_http_status_message_and_remedy(
    aggregator: Server, workdir: Path
) -> None:
    body = _json(_cli(aggregator, workdir, "pull", REFUSED_IMAGE, "--mode", "resolve", "--json"))
    refused = [n for n in body["nodes"] if n["cause"] == "agent_refused"]
    assert [n["node"] for n in refused] == ["node-1", "node-2", "node-3"]
    assert all(n["status"] == 403 and n["remedy"] for n in refused)
    proc = _cli(aggregator, workdir, "pull", REFUSED_IMAGE, "--mode", "resolve")
    assert proc.returncode == 1
    for entry in refused:
        row = _row(proc.stdout, entry["node"])
        assert "agent_refused (HTTP 403)" in row and "not_allowed" in row
        assert entry["remedy"] in row


def test_connectivity_matrix_as_a_table_and_as_json(aggregator: Server, workdir: Path) -> None:
    proc = _cli(aggregator, workdir, "connectivity", "--json")
    assert proc.returncode == 1  # node-down did not answer
    matrix = _json(proc)
    assert matrix["summary"]["unreachable"] == ["node-down"]
    plain = next(c["url"] for c in matrix["columns"] if "plain.pullcheck.test:15000" in c["url"])
    human = _cli(aggregator, workdir, "connectivity")
    assert human.returncode == 1
    assert plain in human.stdout and "node-down: agent_unreachable" in human.stdout
    assert "ok" in _row(human.stdout, "node-1").split()


def test_usage_and_aggregator_errors(aggregator: Server, workdir: Path, tmp_path: Path) -> None:
    proc = _cli(aggregator, workdir, "pull", "x", "--nodes", "a,,b", "--json")
    assert proc.returncode == 2 and _json(proc)["error"] == "usage"
    proc = _cli(aggregator, workdir, "pull", "UPPER/Case:x", "--json")  # the aggregator's 400
    assert proc.returncode == 2 and _json(proc)["error"] == "invalid_reference"
    proc = _cli(aggregator, workdir, "pull", "evil.example.com/x:1")  # not in the allowlist
    assert proc.returncode == 1 and "not_allowed" in proc.stderr
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token\n")
    proc = _cli(aggregator, workdir, "connectivity", "--json", token_file=wrong)
    assert proc.returncode == 1 and _json(proc)["error"] == "unauthorized"
    assert "not-the-token" not in proc.stdout + proc.stderr
    closed = f"http://127.0.0.1:{free_port()}"
    proc = _cli(closed, workdir, "pull", "x", "--json")
    assert proc.returncode == 1 and _json(proc)["error"] == "aggregator_unreachable"
    proc = _cli(closed, workdir, "connectivity")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and closed in proc.stderr
