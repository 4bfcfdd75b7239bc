"""What both processes' metrics share: label normalisers, the cap, self metrics, loop lag."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agent.models import Cause, PullTestResult
from agent.service.metrics import (
    CappedLabel,
    CgroupCpuCollector,
    ServiceMetrics,
    cause_label,
    monitor_event_loop_lag,
    registry_label,
    registry_of,
)
from tests.unit.metrics_support import samples, value


def base(version: str = "0.1.0") -> ServiceMetrics:
    return ServiceMetrics(version=version, self_metrics=False)


# --- label values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "label"),
    [
        ("docker.io", "docker.io"),
        ("index.docker.io", "docker.io"),
        ("https://Quay.IO/v2/", "quay.io"),
        ("host:5000", "host:5000"),
        ("[::1]:5000", "[::1]:5000"),
        ("bob:hunter2@registry.example.com", "invalid"),
        ("https://bob:hunter2@registry.example.com", "invalid"),
        ("dial tcp: lookup quay.io: no such host", "invalid"),
        ("", "invalid"),
    ],
)
def test_registry_label_normalisation(host: str, label: str) -> None:
    assert registry_label(host) == label


@pytest.mark.parametrize(
    ("cause", "label"),
    [
        (None, "none"),
        (Cause.TIMEOUT, "timeout"),
        ("rate_limited", "rate_limited"),
        (Cause.REGISTRY_ERROR, "registry_error"),
        ("connection_reset", "connection_reset"),
        (Cause.IMAGE_NEVER_PULL, "image_never_pull"),
        ("connect: connection refused", "unknown"),
    ],
)
def test_cause_label(cause: Cause | str | None, label: str) -> None:
    assert cause_label(cause) == label


# --- event-loop lag --------------------------------------------------------------------------


class _Recorder:
    def __init__(self) -> None:
        self.samples: list[float] = []

    def observe_loop_lag(self, seconds: float) -> None:
        self.samples.append(seconds)


async def test_loop_lag_monitor_records_a_blocked_loop() -> None:
    interval, block = 0.01, 0.3
    m = base()
    recorder = _Recorder()
    stop = asyncio.Event()
    monitor = asyncio.create_task(monitor_event_loop_lag([m, recorder], interval, stop))
    await asyncio.sleep(0.1)
    idle = list(recorder.samples)

    async def blocker() -> None:
        time.sleep(block)

    await asyncio.create_task(blocker())
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(monitor, 1)

    assert idle and max(idle) < block / 2
    # The block began at some point of a sleep of ``interval``: the timer fired at least
    # ``block - interval`` late.
    assert max(recorder.samples) >= block - interval
    hist = {
        s.labels.get("le"): s.value
        for s in samples(m)
        if s.name == "pullcheck_event_loop_lag_distribution_seconds_bucket"
    }
    assert hist["0.25"] < hist["+Inf"] == len(recorder.samples)
    assert value(m, "pullcheck_event_loop_lag_distribution_seconds_sum") == pytest.approx(
        sum(recorder.samples)
    )
    assert value(m, "pullcheck_event_loop_lag_seconds") == recorder.samples[-1]


async def test_loop_lag_monitor_stops_promptly_and_cancels() -> None:
    m = base()
    stop = asyncio.Event()
    task = asyncio.create_task(monitor_event_loop_lag(m, 30, stop))
    await asyncio.sleep(0)
    stop.set()
    await asyncio.wait_for(task, 1)  # does not wait out the 30 s interval

    task = asyncio.create_task(monitor_event_loop_lag(m, 30))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ValueError):
        await monitor_event_loop_lag(m, 0)


def test_negative_lag_counts_as_zero() -> None:
    m = base()
    m.observe_loop_lag(-0.5)
    assert value(m, "pullcheck_event_loop_lag_seconds") == 0


# --- the shared base -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cause", "vocabulary", "label"),
    [
        ("agent_unreachable", {"agent_unreachable"}, "agent_unreachable"),
        ("agent_unreachable", None, "unknown"),
        (Cause.TIMEOUT, {"agent_unreachable"}, "unknown"),
        (None, set(), "none"),
    ],
)
def test_cause_label_takes_a_vocabulary(
    cause: Cause | str | None, vocabulary: set[str] | None, label: str
) -> None:
    assert (cause_label(cause) if vocabulary is None else cause_label(cause, vocabulary)) == label


def test_capped_label_keeps_the_first_values_and_reserved_ones() -> None:
    cap = CappedLabel(2, reserved=("invalid",))
    assert [cap(v) for v in ("a", "b", "c", "a", "invalid", "d")] == [
        "a",
        "b",
        "other",
        "a",
        "invalid",
        "other",
    ]
    assert len(cap) == 2
    with pytest.raises(ValueError, match=">= 0"):
        CappedLabel(-1)


def test_base_exports_build_info_and_loop_lag_only() -> None:
    m = base("1.2.3")
    m.observe_loop_lag(0.02)
    assert value(m, "pullcheck_build_info", version="1.2.3") == 1
    assert value(m, "pullcheck_event_loop_lag_seconds") == pytest.approx(0.02)
    assert value(m, "pullcheck_event_loop_lag_distribution_seconds_bucket", le="0.025") == 1
    assert value(m, "pullcheck_event_loop_lag_distribution_seconds_bucket", le="0.01") == 0
    assert {s.name for s in samples(m)} == {
        "pullcheck_build_info",
        "pullcheck_event_loop_lag_seconds",
        "pullcheck_event_loop_lag_distribution_seconds_bucket",
        "pullcheck_event_loop_lag_distribution_seconds_count",
        "pullcheck_event_loop_lag_distribution_seconds_sum",
    }


def test_self_metrics_add_process_and_cgroup_collectors(tmp_path: Path) -> None:
    m = ServiceMetrics(version="0.1.0", self_metrics=True)
    names = {s.name for s in samples(m)}
    assert "process_resident_memory_bytes" in names
    assert not any(name.endswith("_created") for name in names)
    cpu_stat = tmp_path / "cpu.stat"
    cpu_stat.write_text("nr_periods 1\nnr_throttled 0\n")  # no throttled time: exported as 0
    assert {s.name: s.value for f in CgroupCpuCollector(cpu_stat).collect() for s in f.samples}[
        "pullcheck_cpu_throttled_seconds_total"
    ] == 0
    cpu_stat.write_text("usage_usec 5\n")  # no CPU controller fields: nothing
    assert list(CgroupCpuCollector(cpu_stat).collect()) == []


def test_registry_of_a_result_takes_the_reference_then_the_image() -> None:
    def result(image: str, reference: str) -> PullTestResult:
        return PullTestResult(
            pullcheck_version="0.1.0",
            node="node-a",
            image=image,
            reference=reference,
            mode="resolve",
            success=True,
            started_at="2025-01-01T00:00:00Z",
            duration_ms=1.0,
        )

    assert registry_of(result("alpine", "docker.io/library/alpine:latest")) == "docker.io"
    assert registry_of(result("host:5000/app:1", "")) == "host:5000"
    assert registry_of(result("UPPER/Case", "")) == "invalid"


@pytest.mark.parametrize("interval", [float("nan"), float("inf"), -1.0, 0.0])
async def test_loop_lag_monitor_refuses_a_bad_interval(interval: float) -> None:
    with pytest.raises(ValueError, match="interval"):
        await monitor_event_loop_lag(base(), interval)
