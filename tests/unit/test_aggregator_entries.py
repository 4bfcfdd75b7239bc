"""The aggregator's node entries for nodes without a result: causes, reasons, remedies, counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cluster.app import AggregatorState
from agent.cluster.metrics import AggregatorMetrics
from agent.cluster.models import (
    AggregatorCause,
    NodeResult,
    not_found,
    not_ready,
    refused,
    unreachable,
)
from agent.cluster.summary import connectivity_matrix, summarize
from agent.service.config import AggregatorSection, DiscoverySection, Settings
from tests.unit.agent_replay import recorded

FIELDS = ["node", "agent", "success", "cause", "summary", "remedy", "status", "error"]


def test_every_failure_entry_has_the_same_fields() -> None:
    failures = [
        unreachable("node-1", "http://10.0.0.1:8479", "ConnectError: refused"),
        refused("node-2", "http://10.0.0.2:8479", 429, "queue_full", "busy"),
        not_found("node-9", 3, "static"),
        not_ready("node-4", "http://10.0.0.4:8479", "unix:///run/x.sock: no such file"),
    ]
    entries = [failure.model_dump(mode="json") for failure in failures]
    for entry in entries:
        assert list(entry) == FIELDS
        assert entry["success"] is False and entry["summary"] and entry["remedy"]
    assert [e["cause"] for e in entries] == [
        "agent_unreachable",
        "agent_refused",
        "node_not_found",
        "runtime_unavailable",
    ]


def test_not_found_names_the_node_and_what_to_check() -> None:
    entry = not_found("node-9", 3, "static").model_dump(mode="json")
    assert entry["node"] == "node-9" and entry["agent"] == "" and entry["status"] is None
    assert "node-9" in entry["summary"] and "3 agents" in entry["summary"]
    assert "kubectl get nodes" in entry["remedy"] and "spec.nodeName=node-9" in entry["remedy"]


@pytest.mark.parametrize(
    ("status", "kind", "remedy"),
    [
        (401, "unauthorized", "same token"),
        (403, "not_allowed", "allowlist (allow)"),
        (403, "read_only", "read_only: true"),
        (429, "queue_full", "limits.pull_concurrency"),
        (429, "rate_limited", "limits.rate_limit_per_minute"),
        (400, "bad_request", "limits.max_timeout"),
        (507, "something_new", "limits.min_free_space"),  # an unknown kind: by status
        (503, "runtime_unavailable", "containerd"),
        (500, "internal", "see its logs"),
    ],
)
def test_refused_carries_the_status_kind_and_a_remedy(status: int, kind: str, remedy: str) -> None:
    entry = refused("node-2", "http://10.0.0.2:8479", status, kind, "a\n message").model_dump()
    assert entry["cause"] == "agent_refused"
    assert entry["status"] == status and entry["error"] == kind
    assert entry["summary"] == f"the agent answered HTTP {status} {kind}: a message"
    assert remedy in entry["remedy"]


def test_refused_message_is_bounded() -> None:
    entry = refused("n", "http://a:1", 400, "bad_request", "x" * 10_000)
    assert len(entry.summary) < 400


def test_unreachable_remedy_points_at_the_agent_pod_or_at_the_port() -> None:
    down = unreachable("node-1", "http://10.0.0.1:8479", "no answer within 6 s")
    assert down.summary == "no answer within 6 s" and down.status is None
    assert "spec.nodeName=node-1" in down.remedy and "http://10.0.0.1:8479" in down.remedy
    other = unreachable("node-1", "http://10.0.0.1:8479", "HTTP 200", status=200, not_an_agent=True)
    assert other.status == 200 and "something other than a pullcheck agent" in other.remedy


def test_summary_counts_a_missing_node_as_failed() -> None:
    _status, answer = recorded("pulltest-good-pull")
    ok = NodeResult.model_validate({**answer, "agent": "http://10.0.0.1:8479"})
    summary = summarize([ok, not_found("node-9", 1, "static")])
    assert (summary.nodes, summary.ok, summary.failed) == (2, 1, 1)
    assert summary.by_cause == {"node_not_found": ["node-9"]}


def test_node_not_found_is_an_aggregator_cause_in_the_metrics() -> None:
    metrics = AggregatorMetrics(self_metrics=False)
    metrics.observe_node_result(AggregatorCause.NODE_NOT_FOUND)
    text = metrics.render()[0].decode()
    assert 'pullcheck_aggregator_node_results_total{cause="node_not_found"} 1.0' in text


def test_matrix_rows_of_unreachable_nodes_carry_cause_and_remedy() -> None:
    entry = unreachable("node-1", "http://10.0.0.1:8479", "refused")
    matrix = connectivity_matrix([entry]).model_dump(mode="json")
    (row,) = matrix["rows"]
    assert row["reachable"] is False and row["cause"] == "agent_unreachable"
    assert row["summary"] == "refused" and "spec.nodeName=node-1" in row["remedy"]
    assert matrix["summary"]["unreachable"] == ["node-1"]


async def test_targets_lists_requested_nodes_discovery_does_not_know(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    (tmp_path / "token").write_text("t\n")
    discovery = DiscoverySection(mode="static", agents=["node-1=127.0.0.1:1", "node-2=127.0.0.1:2"])
    settings = Settings(
        token_file=str(tmp_path / "token"), aggregator=AggregatorSection(discovery=discovery)
    )
    state = AggregatorState(settings)
    try:
        chosen, missing = await state.targets({"node-1", "node-9", "node-0"})
        assert [t.node for t in chosen] == ["node-1"] and missing == ["node-0", "node-9"]
        chosen, missing = await state.targets(None)
        assert [t.node for t in chosen] == ["node-1", "node-2"] and missing == []
    finally:
        await state.close()
