"""The shipped alert for real: a lab Prometheus (Debian's package, ``lab.prometheus``) scrapes
three lab nodes' agents and an aggregator and evaluates the shipped PrometheusRule unchanged.

When two nodes lose the registries (``registry-refused``: their egress to the registry ports is
rejected), PullcheckRegistryUnreachableFromSeveralNodes goes pending for each registry with the
count of nodes; one node alone does not raise it; clearing the faults resolves it. The rule's
``for: 10m`` is kept: Prometheus evaluates every second, so the alert is pending within seconds and
stays pending (firing after 10 minutes, and every alert's labels and annotations when firing, are
covered by the promtool unit tests in tests/manifests/promtool).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.service.metrics import registry_label
from lab import nodefaults, nodefiles, nodes, prometheus, scenario
from lab.info import LabInfo
from lab.servers import agent_config, merge, server

pytestmark = pytest.mark.lab

NODES = ["node-1", "node-2", "node-3"]
DOWN = ["node-1", "node-2"]
ALERT = "PullcheckRegistryUnreachableFromSeveralNodes"
GROUP = "pullcheck.registries"


@pytest.fixture(scope="module")
def prom(lab: LabInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[prometheus.Prometheus]:
    """Three healthy nodes, an aggregator finding them by DNS, a Prometheus scraping all four."""
    scenario.apply(lab.dir, [scenario.NodePlan(n) for n in NODES])
    info = LabInfo.load(Path(lab.dir))
    workdir = tmp_path_factory.mktemp("alerts")
    token = nodefiles.token_file(nodes.lab_paths(info))
    config = merge(
        agent_config(info, token, info.endpoint),
        {"aggregator": {"discovery": nodes.discovery_section(info)}},
    )
    try:
        with (
            server("aggregator", config, workdir, name="agg-alerts") as agg,
            prometheus.running(
                workdir, token, NODES, aggregator=agg.url.removeprefix("http://")
            ) as running,
        ):
            yield running
    finally:
        scenario.apply(lab.dir, [scenario.NodePlan(n) for n in NODES])


def _registries(lab: LabInfo) -> set[str]:
    return {registry_label(lab.registries[k]) for k in ("plain", "tls")}


def _up(prom: prometheus.Prometheus, expr: str) -> dict[tuple[str, str], str]:
    """(node, registry) -> value of ``expr`` over the agents' series."""
    return {
        (s["metric"].get("node", ""), s["metric"].get("registry", "")): s["value"][1]
        for s in prom.query(expr)
    }


def _down_everywhere(prom: prometheus.Prometheus, names: list[str], registries: set[str]) -> bool:
    """Prometheus has scraped ``pullcheck_registry_up == 0`` from each of ``names`` for each
    registry, and 1 from the other planned nodes."""
    values = _up(prom, 'pullcheck_registry_up{job="pullcheck-agent"}')
    return all(
        values.get((n, r)) == ("0" if n in names else "1") for n in NODES for r in registries
    )


def _alerts(prom: prometheus.Prometheus, registries: set[str]) -> dict[str, dict[str, Any]]:
    """The alert's instances for ``registries`` (an agent also keeps probing the registries of
    its recent tests: on a lab that ran other tests first, the blackhole registry is rightly
    unreachable from several nodes)."""
    alerts = prom.alerts(ALERT)
    return {a["labels"]["registry"]: a for a in alerts if a["labels"]["registry"] in registries}


def _alerts_for(prom: prometheus.Prometheus, registries: set[str]) -> dict[str, dict[str, Any]]:
    """The alerts by registry once there is one for each of ``registries`` (else empty)."""
    alerts = _alerts(prom, registries)
    return alerts if set(alerts) == registries else {}


def _all_targets_up(prom: prometheus.Prometheus) -> set[str] | None:
    """The jobs scraped, once all four targets (three agents, the aggregator) are up."""
    up = [(s["metric"]["job"], s["value"][1]) for s in prom.query("up")]
    return {job for job, _ in up} if len(up) == 4 and {v for _, v in up} == {"1"} else None


def _loaded_rule(prom: prometheus.Prometheus) -> dict[str, Any]:
    rules: list[dict[str, Any]] = [
        r for g in prom.rules() if g["name"] == GROUP for r in g["rules"] if r["name"] == ALERT
    ]
    assert len(rules) == 1, rules
    return rules[0]


def test_registry_unreachable_from_several_nodes(lab: LabInfo, prom: prometheus.Prometheus) -> None:
    registries = _registries(lab)
    jobs = prom.wait_until("all targets up", lambda: _all_targets_up(prom))
    assert jobs == {prometheus.AGENT_JOB, prometheus.AGGREGATOR_JOB}
    prom.wait_until("registries reached", lambda: _down_everywhere(prom, [], registries))
    # the rule Prometheus runs is the shipped one, its for: included
    loaded, shipped = _loaded_rule(prom), prometheus.alert_rules(prometheus.rule_groups())[ALERT]
    assert (
        loaded["query"]
        == shipped["expr"]
        == "count by (registry) (pullcheck_registry_up == 0) >= 2"
    )
    assert shipped["for"] == "10m" and loaded["duration"] == 600

    try:
        # one node alone is that node: no alert, after an evaluation that saw it down
        nodefaults.set_fault(lab.dir, DOWN[0], "registry-refused", True)
        prom.wait_until("node-1 seen down", lambda: _down_everywhere(prom, DOWN[:1], registries))
        prom.wait_evaluated(GROUP)
        assert _alerts(prom, registries) == {}

        # two nodes: pending for each registry, with the count; not firing before its for: 10m
        nodefaults.set_fault(lab.dir, DOWN[1], "registry-refused", True)
        pending = prom.wait_until(
            "alert pending for both registries",
            lambda: _alerts_for(prom, registries),
        )
        for registry, alert in pending.items():
            assert alert["state"] == "pending", alert
            want = {"alertname": ALERT, "registry": registry, "severity": "warning"}
            assert alert["labels"] == want
            assert float(alert["value"]) == 2
            summary = f"Registry {registry} is unreachable from 2 nodes"
            assert alert["annotations"]["summary"] == summary
        everywhere = prom.alerts("PullcheckRegistryUnreachableFromAllNodes")
        assert [a for a in everywhere if a["labels"]["registry"] in registries] == []
        states = prom.query(f'ALERTS{{alertname="{ALERT}"}}')
        assert {
            (s["metric"]["registry"], s["metric"]["alertstate"])
            for s in states
            if s["metric"]["registry"] in registries
        } == {(r, "pending") for r in registries}
    finally:
        for name in DOWN:
            nodefaults.clear(lab.dir, name)

    # the registries back: the agents see them, and the alert resolves
    prom.wait_until("registries reached again", lambda: _down_everywhere(prom, [], registries))
    prom.wait_until("alert resolved", lambda: _alerts(prom, registries) == {})
