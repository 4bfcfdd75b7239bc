"""A lab cluster for the integration tests: netns nodes as a scenario plans them, and a real
aggregator that finds their agents by DNS (the bridge resolver's headless-Service-style name)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lab import nodes, scenario
from lab.info import LabInfo
from lab.servers import TOKEN, Server, agent_config, merge, server

__all__ = ["lab_cluster", "pulltest", "static_discovery", "wait_discovered"]

DISCOVERY_DEADLINE = 30.0  # seconds for the aggregator to list every planned agent


@contextmanager
def lab_cluster(
    lab: LabInfo,
    plans: list[scenario.NodePlan],
    workdir: Path,
    *,
    name: str,
    aggregator: dict[str, Any] | None = None,
) -> Iterator[tuple[LabInfo, Server]]:
    """The nodes ``plans`` describe, and an aggregator (``aggregator``: extra config of its
    section) that has discovered all their agents. The planned nodes are left healthy on 1.6."""
    scenario.apply(lab.dir, plans)
    info = LabInfo.load(Path(lab.dir))
    (workdir / "token").write_text(TOKEN + "\n")
    config = merge(
        agent_config(info, workdir / "token", info.endpoint),
        {
            "aggregator": merge(
                {
                    "node_timeout": 60,
                    "discovery": nodes.discovery_section(info),
                    "allow_plain_http_credentials": True,
                },
                aggregator or {},
            )
        },
    )
    try:
        with server("aggregator", config, workdir, name=name) as agg:
            wait_discovered(agg, [p.name for p in plans])
            yield info, agg
    finally:
        scenario.apply(lab.dir, [scenario.NodePlan(p.name) for p in plans])


def static_discovery(names: list[str]) -> dict[str, Any]:
    """An aggregator ``discovery`` section listing exactly ``names``' agents, by node name (the
    ``aggregator`` argument of ``lab_cluster``: its fan-outs reach no other lab node)."""
    return {
        "mode": "static",
        "agents": [f"{n}={nodes.agent_url(n).removeprefix('http://')}" for n in names],
    }


def wait_discovered(agg: Server, names: list[str]) -> None:
    """Wait until the aggregator lists the agents of ``names``. DNS discovery knows no node
    names: the agents are listed by address until they answer."""
    addresses = {nodes.agent_url(n).removeprefix("http://") for n in names}
    deadline = time.monotonic() + DISCOVERY_DEADLINE
    seen: set[str] = set()
    while time.monotonic() < deadline:
        reply = agg.client().get("/v1/agents")
        if reply.status_code == 200:
            seen = {a["url"].removeprefix("http://") for a in reply.json().get("agents", [])}
            if addresses <= seen:
                return
        time.sleep(0.3)
    raise AssertionError(
        f"the aggregator's DNS discovery found {sorted(seen)}, want {sorted(addresses)}"
    )


def pulltest(agg: Server, image: str, timeout: float = 30, **params: str) -> dict[str, Any]:
    """A cluster-wide pull test (every node the lab runs: other tests may have added some)."""
    query = {"image": image, "mode": "pull", "timeout": str(timeout), **params}
    reply = agg.client().get("/v1/pulltest", params=query)
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body
