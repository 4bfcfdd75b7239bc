"""The aggregator's metrics: names, labels and values read back from the exposition."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.cluster.metrics import AGGREGATOR_CAUSES, AggregatorMetrics
from agent.models import Cause
from tests.unit.metrics_support import IP_RE, samples, value


def test_aggregator_metrics() -> None:
    m = AggregatorMetrics(max_endpoints=2, self_metrics=False)
    m.observe_request("/v1/pulltest?image=docker.io/library/alpine:3.19", "ok")
    m.observe_request("/v1/pulltest", "partial")
    m.observe_request("/v1/probe", "dial tcp 10.0.0.1:9000: refused")
    m.observe_request("/v1/nodes", "ok")  # third route: over the cap
    m.observe_request("http://10.0.0.1:8080/x", "ok")
    m.observe_request("pulltest", "bad_request")  # a route name is fine too (over the cap here)
    m.observe_fanout("/v1/pulltest", 2.0)
    m.set_agents({"discovered": 9, "ready": 7, "unreachable": 2})
    for cause in (None, None, "agent_unreachable", Cause.TIMEOUT, "agent_refused", "weird text"):
        m.observe_node_result(cause)
    assert (
        value(m, "pullcheck_aggregator_requests_total", endpoint="/v1/pulltest", outcome="ok") == 1
    )
    assert (
        value(m, "pullcheck_aggregator_requests_total", endpoint="/v1/pulltest", outcome="partial")
        == 1
    )
    assert (
        value(m, "pullcheck_aggregator_requests_total", endpoint="/v1/probe", outcome="other") == 1
    )
    assert value(m, "pullcheck_aggregator_requests_total", endpoint="other", outcome="ok") == 1
    assert (
        value(m, "pullcheck_aggregator_requests_total", endpoint="other", outcome="bad_request")
        == 1
    )
    assert m.endpoint_label("connectivity") == "other"
    assert AggregatorMetrics(self_metrics=False).endpoint_label("connectivity") == "connectivity"
    assert value(m, "pullcheck_aggregator_requests_total", endpoint="invalid", outcome="ok") == 1
    assert (
        value(m, "pullcheck_aggregator_fanout_duration_seconds_count", endpoint="/v1/pulltest") == 1
    )
    assert value(m, "pullcheck_aggregator_agents", state="discovered") == 9
    assert value(m, "pullcheck_aggregator_agents", state="ready") == 7
    assert value(m, "pullcheck_aggregator_agents", state="unreachable") == 2
    assert value(m, "pullcheck_aggregator_agents", state="unready") == 0
    with pytest.raises(ValueError, match="reachable"):
        m.set_agents({"reachable": 1})
    m.set_leader(True)
    assert value(m, "pullcheck_aggregator_leader") == 1
    causes = {
        s.labels["cause"]: s.value
        for s in samples(m)
        if s.name == "pullcheck_aggregator_node_results_total"
    }
    assert causes == {
        "none": 2,
        "agent_unreachable": 1,
        "timeout": 1,
        "agent_refused": 1,
        "unknown": 1,
    }
    assert set(causes) <= AGGREGATOR_CAUSES
    for s in samples(m):
        assert not any(IP_RE.search(v) for k, v in s.labels.items() if k != "le"), s


def test_prepull_progress_and_pulls_by_job_result_and_cause() -> None:
    m = AggregatorMetrics(self_metrics=False)
    m.set_prepull("warm", 3, 8, {"pending": 4, "pulling": 1, "done": 3, "elsewhere": 9})
    assert value(m, "pullcheck_prepull_images_ready", job="warm") == 3
    assert value(m, "pullcheck_prepull_images_total", job="warm") == 8
    wave = {s.labels["phase"]: s.value for s in samples(m) if s.name == "pullcheck_prepull_wave"}
    assert wave == {"pending": 4, "pulling": 1, "done": 3, "failed": 0}
    pulls = [
        ("success", None),
        ("failure", Cause.CONNECTION_REFUSED),
        ("failure", "agent_unreachable"),
        ("failure", "dial tcp 10.0.0.1:443: refused"),
        ("maybe", ""),
    ]
    for result, cause in pulls:
        m.observe_prepull_pull("warm", result, cause)
    counted = {
        (s.labels["result"], s.labels["cause"]): s.value
        for s in samples(m)
        if s.name == "pullcheck_prepull_pulls_total"
    }
    assert counted == {
        ("success", "none"): 1,
        ("failure", "connection_refused"): 1,
        ("failure", "agent_unreachable"): 1,
        ("failure", "unknown"): 1,
        ("other", "none"): 1,
    }


def test_prepull_job_label_is_capped_at_64() -> None:
    m = AggregatorMetrics(self_metrics=False)
    for i in range(70):
        m.observe_prepull_pull(f"job-{i:02d}", "success", None)
    jobs = {s.labels["job"] for s in samples(m) if s.name == "pullcheck_prepull_pulls_total"}
    assert len(jobs) == 65 and "other" in jobs and "job-63" in jobs and "job-64" not in jobs
    assert (
        value(m, "pullcheck_prepull_pulls_total", job="other", result="success", cause="none") == 6
    )


@pytest.mark.parametrize(
    ("cause", "label"),
    [
        (None, "none"),
        ("", "none"),
        ("none", "none"),
        (Cause.TIMEOUT, "timeout"),
        (Cause.REGISTRY_ERROR, "registry_error"),
        ("connection_reset", "connection_reset"),
        ("node_not_found", "node_not_found"),
        ("agent_refused", "agent_refused"),
        ("connect: connection refused", "unknown"),
    ],
)
def test_node_results_and_prepull_pulls_name_causes_alike(
    cause: Cause | str | None, label: str
) -> None:
    m = AggregatorMetrics(self_metrics=False)
    m.observe_node_result(cause)
    m.observe_prepull_pull("job", "failure", cause)
    assert value(m, "pullcheck_aggregator_node_results_total", cause=label) == 1
    assert value(m, "pullcheck_prepull_pulls_total", job="job", result="failure", cause=label) == 1


#: Every family of the aggregator (self metrics off): its type and label names.
AGGREGATOR_FAMILIES = {
    "pullcheck_build_info": ("gauge", {"version"}),
    "pullcheck_event_loop_lag_seconds": ("gauge", set()),
    "pullcheck_event_loop_lag_distribution_seconds": ("histogram", set()),
    "pullcheck_aggregator_requests": ("counter", {"endpoint", "outcome"}),
    "pullcheck_aggregator_fanout_duration_seconds": ("histogram", {"endpoint"}),
    "pullcheck_aggregator_agents": ("gauge", {"state"}),
    "pullcheck_aggregator_leader": ("gauge", set()),
    "pullcheck_aggregator_node_results": ("counter", {"cause"}),
    "pullcheck_prepull_images_ready": ("gauge", {"job"}),
    "pullcheck_prepull_images_total": ("gauge", {"job"}),
    "pullcheck_prepull_wave": ("gauge", {"job", "phase"}),
    "pullcheck_prepull_pulls": ("counter", {"job", "result", "cause"}),
}


def test_aggregator_families_keep_their_names_types_and_labels() -> None:
    m = AggregatorMetrics(self_metrics=False)
    m.observe_request("pulltest", "ok")
    m.observe_fanout("pulltest", 0.5)
    m.observe_node_result(None)
    m.set_prepull("warm", 1, 2, {})
    m.observe_prepull_pull("warm", "success", None)
    payload, _ = m.render()
    found = {
        family.name: (family.type, {k for s in family.samples for k in s.labels} - {"le"})
        for family in text_string_to_metric_families(payload.decode())
    }
    assert found == AGGREGATOR_FAMILIES
    assert "_created" not in payload.decode()


def test_aggregator_exports_process_metrics_unless_told_not_to() -> None:
    assert value(AggregatorMetrics(), "process_cpu_seconds_total") is not None
    assert value(AggregatorMetrics(self_metrics=False), "process_cpu_seconds_total") is None
