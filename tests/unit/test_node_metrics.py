"""The node agent's metrics: names, labels and values read back from the exposition."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from agent.models import (
    Cause,
    DnsEvidence,
    Endpoint,
    EndpointReport,
    ManifestEvidence,
    ProbeReport,
    ProbeResult,
    PullTestResult,
    TcpEvidence,
)
from agent.node.metrics import AgentMetrics, parse_ratelimit_remaining
from agent.service.metrics import CgroupCpuCollector
from tests.unit.metrics_support import IP_RE, label_values, samples, value

KINDS = ("dns", "tcp", "tls", "http", "token", "manifest")


# --- helpers ---------------------------------------------------------------------------------


def endpoint_report(
    host: str,
    *,
    ok: bool,
    role: str = "upstream",
    address: str = "10.20.30.40",
    remaining: str = "",
    failing: str = "tcp",
    cause: Cause = Cause.CONNECTION_REFUSED,
) -> EndpointReport:
    """The probe chain of one endpoint; when not ok it stops at ``failing`` with ``cause``."""
    endpoint = Endpoint(
        url=f"https://{host}",
        scheme="https",
        host=host,
        port=443,
        role=role,  # type: ignore[arg-type]
    )
    probes: list[ProbeResult] = []
    for i, kind in enumerate(KINDS):
        fails = not ok and kind == failing
        evidence: DnsEvidence | TcpEvidence | ManifestEvidence | None = None
        if kind == "dns":
            evidence = DnsEvidence(host=host, resolv_conf="/etc/resolv.conf", addresses=[address])
        elif kind == "tcp":
            evidence = TcpEvidence(address=address, port=443, family="ipv4")
        elif kind == "manifest":
            evidence = ManifestEvidence(
                url=f"https://{host}/v2/library/alpine/manifests/3.19",
                ratelimit_limit="100;w=21600" if remaining else "",
                ratelimit_remaining=remaining,
            )
        probes.append(
            ProbeResult(
                probe=kind,  # type: ignore[arg-type]
                target=f"{address}:443",
                success=not fails,
                duration_ms=10.0 * (i + 1),
                cause=cause if fails else None,
                error=f"dial tcp {address}:443: connect: connection refused" if fails else "",
                evidence=evidence,
            )
        )
        if fails:
            break
    return EndpointReport(
        endpoint=endpoint,
        success=ok,
        cause=None if ok else cause,
        summary="" if ok else f"TCP connect to {address}:443 refused",
        duration_ms=sum(p.duration_ms for p in probes),
        probes=probes,
    )


def pull_result(
    image: str = "alpine:3.19",
    reference: str = "docker.io/library/alpine:3.19",
    *,
    success: bool = True,
    cause: Cause | None = None,
    mode: str = "pull",
    duration_ms: float = 1500.0,
    endpoints: list[EndpointReport] | None = None,
) -> PullTestResult:
    return PullTestResult(
        pullcheck_version="0.1.0",
        node="node-a",
        image=image,
        reference=reference,
        mode=mode,  # type: ignore[arg-type]
        success=success,
        cause=cause,
        summary="" if success else "pull failed: dial tcp 10.20.30.40:443: connection refused",
        runtime_error="" if success else "failed to do request: Head https://10.20.30.40/v2/",
        started_at="2025-01-01T00:00:00Z",
        duration_ms=duration_ms,
        endpoints=endpoints or [],
    )


# --- pull tests ------------------------------------------------------------------------------


def test_fresh_pulltests_count_by_registry_mode_result_and_cause() -> None:
    m = AgentMetrics("node-a", self_metrics=False)
    m.observe_pulltest(pull_result(duration_ms=1500), reused=False)
    m.observe_pulltest(pull_result(duration_ms=500), reused=False)
    m.observe_pulltest(
        pull_result(
            "quay.io/org/app:1",
            "quay.io/org/app:1",
            success=False,
            cause=Cause.UNAUTHORIZED,
            mode="resolve",
            duration_ms=80,
        ),
        reused=False,
    )
    ok = {"registry": "docker.io", "mode": "pull", "result": "success", "cause": "none"}
    bad = {"registry": "quay.io", "mode": "resolve", "result": "failure", "cause": "unauthorized"}
    assert value(m, "pullcheck_pulltests_total", **ok) == 2
    assert value(m, "pullcheck_pulltests_total", **bad) == 1
    assert value(m, "pullcheck_pulltest_duration_seconds_count", **ok) == 2
    assert value(m, "pullcheck_pulltest_duration_seconds_sum", **ok) == pytest.approx(2.0)
    assert value(m, "pullcheck_pulltest_duration_seconds_bucket", le="1.0", **ok) == 1
    assert value(m, "pullcheck_pulltest_duration_seconds_bucket", le="2.5", **ok) == 2
    assert value(m, "pullcheck_pulltest_duration_seconds_bucket", le="0.1", **bad) == 1
    assert value(m, "pullcheck_pulltest_duration_seconds_bucket", le="0.05", **bad) == 0
    # buckets cover 10 ms … 10 min
    les = {s.labels["le"] for s in samples(m) if s.name.endswith("duration_seconds_bucket")}
    assert {"0.01", "600.0", "+Inf"} <= les
    assert value(m, "pullcheck_pulltest_requests_total", outcome="fresh") == 3


@pytest.mark.parametrize("cause", list(Cause))
def test_every_cause_is_its_own_pulltest_label(cause: Cause) -> None:
    # the label values are the vocabulary: a new cause (registry_error, connection_reset, ...)
    # gets its own series, not "unknown"
    m = AgentMetrics("node-a", self_metrics=False)
    m.observe_pulltest(pull_result(success=False, cause=cause), reused=False)
    labels = {"registry": "docker.io", "mode": "pull", "result": "failure", "cause": cause.value}
    assert value(m, "pullcheck_pulltests_total", **labels) == 1


def test_reused_and_shared_results_do_not_count_as_pulls() -> None:
    m = AgentMetrics("node-a", self_metrics=False)
    result = pull_result(endpoints=[endpoint_report("registry-1.docker.io", ok=True)])
    m.observe_pulltest(result, reused=False)
    m.observe_pulltest(result, reused=True)
    m.observe_pulltest(result, reused=True, outcome="shared")
    m.observe_pulltest(result, reused=True, outcome="shared")
    m.observe_request("rejected")
    ok = {"registry": "docker.io", "mode": "pull", "result": "success", "cause": "none"}
    assert value(m, "pullcheck_pulltests_total", **ok) == 1
    assert value(m, "pullcheck_pulltest_duration_seconds_count", **ok) == 1
    assert (
        value(m, "pullcheck_probes_total", registry="docker.io", phase="dns", result="success") == 1
    )
    for outcome, count in {"fresh": 1, "reused": 1, "shared": 2, "rejected": 1}.items():
        assert value(m, "pullcheck_pulltest_requests_total", outcome=outcome) == count


def test_request_outcomes_exist_before_first_request() -> None:
    m = AgentMetrics("node-a", self_metrics=False)
    assert label_values(m, "pullcheck_pulltest_requests_total", "outcome") == {
        "fresh",
        "reused",
        "shared",
        "rejected",
    }


@pytest.mark.parametrize(
    ("reused", "outcome"), [(False, "shared"), (True, "fresh"), (False, "rejected")]
)
def test_contradictory_outcome_is_refused(reused: bool, outcome: str) -> None:
    m = AgentMetrics("node-a", self_metrics=False)
    with pytest.raises(ValueError, match="contradicts"):
        m.observe_pulltest(pull_result(), reused=reused, outcome=outcome)  # type: ignore[arg-type]


def test_invalid_reference_counts_under_invalid_registry() -> None:
    m = AgentMetrics("node-a", self_metrics=False)
    bad = pull_result("UPPER/Case:tag", "", success=False, cause=Cause.INVALID_REFERENCE)
    m.observe_pulltest(bad, reused=False)
    labels = {"registry": "invalid", "mode": "pull", "result": "failure"}
    assert value(m, "pullcheck_pulltests_total", cause="invalid_reference", **labels) == 1


def test_in_flight_queue_runtime_and_build_info() -> None:
    m = AgentMetrics("node-a", self_metrics=False, version="9.9.9")
    assert value(m, "pullcheck_build_info", version="9.9.9") == 1
    assert value(m, "pullcheck_runtime_up") == 0
    m.set_runtime_up(True)
    m.set_queue_depth(3)
    with m.track_pulltest(), m.track_pulltest():
        assert value(m, "pullcheck_pulltests_in_flight") == 2
    assert value(m, "pullcheck_pulltests_in_flight") == 0
    with pytest.raises(RuntimeError), m.track_pulltest():
        raise RuntimeError
    assert value(m, "pullcheck_pulltests_in_flight") == 0
    assert value(m, "pullcheck_runtime_up") == 1
    assert value(m, "pullcheck_pulltest_queue_depth") == 3
    m.set_runtime_up(False)
    assert value(m, "pullcheck_runtime_up") == 0


# --- connectivity ----------------------------------------------------------------------------


def test_endpoint_reports_feed_probe_and_registry_metrics() -> None:
    m = AgentMetrics("node-a", self_metrics=False, clock=lambda: 1_700_000_000.0)
    reports = [
        endpoint_report("mirror.internal", ok=False, role="mirror", failing="tcp"),
        endpoint_report("registry-1.docker.io", ok=True, remaining="76;w=21600"),
    ]
    m.observe_endpoints("docker.io", reports)
    d = {"registry": "docker.io"}
    assert value(m, "pullcheck_probes_total", phase="dns", result="success", **d) == 2
    assert value(m, "pullcheck_probes_total", phase="tcp", result="failure", **d) == 1
    assert value(m, "pullcheck_probes_total", phase="tcp", result="success", **d) == 1
    assert value(m, "pullcheck_probes_total", phase="manifest", result="success", **d) == 1
    assert value(m, "pullcheck_probes_total", phase="manifest", result="failure", **d) is None
    assert label_values(m, "pullcheck_probe_duration_seconds_count", "phase") == set(KINDS)
    # the upstream's manifest probe took 60 ms
    assert value(m, "pullcheck_probe_duration_seconds_sum", phase="manifest", **d) == (
        pytest.approx(0.06)
    )
    assert value(m, "pullcheck_probe_duration_seconds_bucket", phase="dns", le="0.01", **d) == 2
    assert value(m, "pullcheck_registry_up", **d) == 1
    assert value(m, "pullcheck_registry_last_success_timestamp_seconds", **d) == 1_700_000_000
    assert value(m, "pullcheck_registry_ratelimit_remaining", **d) == 76


def test_registry_down_keeps_last_success_and_quota() -> None:
    now = [1000.0]
    m = AgentMetrics("node-a", self_metrics=False, clock=lambda: now[0])
    m.observe_endpoints("quay.io", [endpoint_report("quay.io", ok=True, remaining="12")])
    now[0] = 2000.0
    m.observe_endpoints("quay.io", [endpoint_report("quay.io", ok=False, failing="dns")])
    q = {"registry": "quay.io"}
    assert value(m, "pullcheck_registry_up", **q) == 0
    assert value(m, "pullcheck_registry_last_success_timestamp_seconds", **q) == 1000
    assert value(m, "pullcheck_registry_ratelimit_remaining", **q) == 12  # not present: unchanged
    m.observe_endpoints("quay.io", [])  # cancelled run: nothing probed, nothing changes
    assert value(m, "pullcheck_registry_up", **q) == 0


def test_ratelimit_gauge_only_when_present() -> None:
    m = AgentMetrics("node-a", self_metrics=False)
    m.observe_endpoints("ghcr.io", [endpoint_report("ghcr.io", ok=True)])
    assert value(m, "pullcheck_registry_ratelimit_remaining", registry="ghcr.io") is None
    m.observe_endpoints("ghcr.io", [endpoint_report("ghcr.io", ok=True, remaining="garbage")])
    assert value(m, "pullcheck_registry_ratelimit_remaining", registry="ghcr.io") is None
    two = [
        endpoint_report("mirror.internal", ok=True, role="mirror", remaining="900;w=3600"),
        endpoint_report("ghcr.io", ok=True, remaining="5;w=21600"),
    ]
    m.observe_endpoints("ghcr.io", two)  # the tighter quota wins
    assert value(m, "pullcheck_registry_ratelimit_remaining", registry="ghcr.io") == 5


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("76;w=21600", 76.0),
        ("100", 100.0),
        (" 0 ;w=60", 0.0),
        ("12.5;w=1", 12.5),
        ("", None),
        ("w=21600", None),
        ("-1;w=5", None),
        ("nan", None),
        ("1e400", None),
        ("10 apples", None),
    ],
)
def test_parse_ratelimit_remaining(header: str, expected: float | None) -> None:
    assert parse_ratelimit_remaining(header) == expected


def test_probe_report_uses_its_registry() -> None:
    m = AgentMetrics("node-a", self_metrics=False)
    report = ProbeReport(
        pullcheck_version="0.1.0",
        node="node-a",
        target="registry.example.com:5000/team/app:v1",
        reference="registry.example.com:5000/team/app:v1",
        success=True,
        started_at="2025-01-01T00:00:00Z",
        duration_ms=5,
        endpoints=[endpoint_report("registry.example.com", ok=True)],
    )
    m.observe_probe_report(report)
    assert value(m, "pullcheck_registry_up", registry="registry.example.com:5000") == 1


# --- bounded labels --------------------------------------------------------------------------


def test_registry_label_is_capped() -> None:
    m = AgentMetrics("node-a", max_registries=3, self_metrics=False)
    hosts = [f"r{i}.example.com" for i in range(6)]
    for host in hosts:
        m.observe_endpoints(host, [endpoint_report(host, ok=True)])
    m.observe_endpoints("not a host!", [endpoint_report("x.example.com", ok=True)])
    m.observe_endpoints(hosts[1], [endpoint_report(hosts[1], ok=False)])  # known: keeps its label
    assert label_values(m, "pullcheck_registry_up", "registry") == {*hosts[:3], "other", "invalid"}
    assert value(m, "pullcheck_registry_up", registry=hosts[1]) == 0
    assert value(m, "pullcheck_probes_total", registry="other", phase="dns", result="success") == 3
    for i in range(10):
        m.observe_pulltest(
            pull_result(f"new{i}.example.com/a:1", f"new{i}.example.com/a:1"), reused=False
        )
    assert label_values(m, "pullcheck_pulltests_total", "registry") == {"other"}


def test_no_ip_error_text_or_node_in_any_label() -> None:
    m = AgentMetrics("node-a", self_metrics=False)
    mirror_ip = "192.168.7.7"
    reports = [
        endpoint_report(mirror_ip, ok=False, role="mirror", address=mirror_ip),
        endpoint_report(
            "registry-1.docker.io",
            ok=False,
            address="2600:1f18::1",
            failing="tls",
            cause=Cause.TLS_ERROR,
        ),
    ]
    result = pull_result(success=False, cause=Cause.TLS_ERROR, endpoints=reports)
    m.observe_pulltest(result, reused=False)
    m.observe_endpoints("docker.io", reports)
    # a cause outside the vocabulary (models validate, so bypass validation) is "unknown"
    bogus = pull_result(success=False).model_copy(update={"cause": "dial 10.1.1.1: refused"})
    m.observe_pulltest(bogus, reused=False)
    m.observe_loop_lag(0.002)
    allowed = {
        "registry": {"docker.io"},
        "mode": {"pull", "resolve"},
        "result": {"success", "failure"},
        "cause": {c.value for c in Cause} | {"none"},
        "phase": set(KINDS),
        "outcome": {"fresh", "reused", "shared", "rejected"},
        "version": {"0.1.0"},
    }
    everything = samples(m)
    assert everything
    for s in everything:
        for key, val in s.labels.items():
            if key == "le":
                continue
            assert key in allowed, (s.name, key)
            assert val in allowed[key], (s.name, key, val)
            assert not IP_RE.search(val), (s.name, key, val)
            assert " " not in val
    label_names = {k for s in everything for k in s.labels}
    assert "node" not in label_names and "instance" not in label_names
    assert (
        value(
            m,
            "pullcheck_pulltests_total",
            registry="docker.io",
            mode="pull",
            result="failure",
            cause="unknown",
        )
        == 1
    )


# --- isolation, self metrics, memory ---------------------------------------------------------


def test_instances_are_isolated_from_each_other_and_the_global_registry() -> None:
    a = AgentMetrics("node-a", self_metrics=False)
    b = AgentMetrics("node-b", self_metrics=False)
    a.observe_pulltest(pull_result(), reused=False)
    ok = {"registry": "docker.io", "mode": "pull", "result": "success", "cause": "none"}
    assert value(a, "pullcheck_pulltests_total", **ok) == 1
    assert value(b, "pullcheck_pulltests_total", **ok) is None
    assert REGISTRY.get_sample_value("pullcheck_pulltests_total", ok) is None
    assert a.registry is not b.registry


def test_self_metrics_export_process_and_cgroup_throttling(tmp_path: Path) -> None:
    m = AgentMetrics("node-a")
    names = {s.name for s in samples(m)}
    if Path("/proc/self/stat").exists():
        assert "process_cpu_seconds_total" in names
    cpu_stat = tmp_path / "cpu.stat"
    cpu_stat.write_text("usage_usec 100\nnr_periods 50\nnr_throttled 7\nthrottled_usec 2500000\n")
    m = AgentMetrics("node-a", self_metrics=False)
    m.registry.register(CgroupCpuCollector(cpu_stat))
    assert value(m, "pullcheck_cpu_periods_total") == 50
    assert value(m, "pullcheck_cpu_throttled_periods_total") == 7
    assert value(m, "pullcheck_cpu_throttled_seconds_total") == 2.5
    v1 = tmp_path / "v1.stat"
    v1.write_text("nr_periods 4\nnr_throttled 1\nthrottled_time 3000000000\n")
    assert {s.name: s.value for f in CgroupCpuCollector(v1).collect() for s in f.samples}[
        "pullcheck_cpu_throttled_seconds_total"
    ] == 3.0
    assert list(CgroupCpuCollector(tmp_path / "missing").collect()) == []


def test_bytes_per_instance_stay_small() -> None:
    """200 agents in one process: an idle instance < 32 KB, a busy one (2 registries) < 128 KB.

    prometheus_client's own objects (a value with a lock per bucket) measured about 20 KB idle
    and 90 KB busy; the hand-written compact store it replaced took 7 and 17 KB.
    """
    reports = [endpoint_report("registry-1.docker.io", ok=True, remaining="76;w=21600")]
    fresh = pull_result(endpoints=reports)
    failed = pull_result(
        "quay.io/a/b:1", "quay.io/a/b:1", success=False, cause=Cause.UNAUTHORIZED, endpoints=reports
    )
    n = 50
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        agents = [AgentMetrics(f"node-{i}", self_metrics=False) for i in range(n)]
        idle = (tracemalloc.get_traced_memory()[0] - before) / n
        for m in agents:
            m.observe_pulltest(fresh, reused=False)
            m.observe_pulltest(failed, reused=False)
            m.observe_pulltest(fresh, reused=True)
            m.observe_loop_lag(0.001)
        busy = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    assert idle < 32_000, idle
    assert busy < 128_000, busy


# --- exposition ------------------------------------------------------------------------------

#: Every family of the agent (self metrics off): its type and label names. Alerts, dashboards
#: and the aggregator read these; a change here is a change of the public contract.
AGENT_FAMILIES = {
    "pullcheck_build_info": ("gauge", {"version"}),
    "pullcheck_event_loop_lag_seconds": ("gauge", set()),
    "pullcheck_event_loop_lag_distribution_seconds": ("histogram", set()),
    "pullcheck_pulltest_duration_seconds": ("histogram", {"registry", "mode", "result", "cause"}),
    "pullcheck_pulltests": ("counter", {"registry", "mode", "result", "cause"}),
    "pullcheck_pulltest_requests": ("counter", {"outcome"}),
    "pullcheck_probe_duration_seconds": ("histogram", {"registry", "phase"}),
    "pullcheck_probes": ("counter", {"registry", "phase", "result"}),
    "pullcheck_registry_up": ("gauge", {"registry"}),
    "pullcheck_registry_last_success_timestamp_seconds": ("gauge", {"registry"}),
    "pullcheck_registry_ratelimit_remaining": ("gauge", {"registry"}),
    "pullcheck_runtime_up": ("gauge", set()),
    "pullcheck_pulltests_in_flight": ("gauge", set()),
    "pullcheck_pulltest_queue_depth": ("gauge", set()),
}


def test_agent_families_keep_their_names_types_and_labels() -> None:
    m = AgentMetrics("node-a", self_metrics=False)
    reports = [endpoint_report("registry-1.docker.io", ok=True, remaining="76;w=21600")]
    m.observe_pulltest(pull_result(endpoints=reports), reused=False)
    payload, _ = m.render()
    found = {
        family.name: (family.type, {k for s in family.samples for k in s.labels} - {"le"})
        for family in text_string_to_metric_families(payload.decode())
    }
    assert found == AGENT_FAMILIES


def test_no_created_series_in_either_format() -> None:
    m = AgentMetrics("node-a", self_metrics=False)
    m.observe_pulltest(pull_result(endpoints=[endpoint_report("quay.io", ok=True)]), reused=False)
    text, _ = m.render()
    openmetrics, content_type = m.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert openmetrics.endswith(b"# EOF\n")
    for payload in (text, openmetrics):
        assert b"pullcheck_pulltests_total" in payload
        assert b"_created" not in payload
