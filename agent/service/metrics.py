"""What the metrics of both long-running processes share, on prometheus_client.

Every instance (:class:`ServiceMetrics`; the node agent's :class:`~agent.node.metrics.AgentMetrics`
and the aggregator's :class:`~agent.cluster.metrics.AggregatorMetrics`) owns its own
:class:`~prometheus_client.CollectorRegistry`, never the global one, so several agents can live in
one process (the aggregator benchmark hosts 200). Label values are bounded:

* ``registry`` is the registry host as written in the image reference (``docker.io``,
  ``quay.io``, ``host:5000``), normalised by :func:`registry_label`; a value that is not a
  host[:port] becomes ``invalid``. It is never taken from an endpoint, so mirror or resolved IPs
  cannot leak in (a registry that users name by an IP literal, ``10.0.0.5:5000/app``, is
  labelled so). A :class:`CappedLabel` caps the distinct values (``other`` past the cap).
* ``cause`` comes from a fixed vocabulary (:func:`cause_label`): ``none`` on success,
  ``unknown`` for anything else. No error text, no addresses, no node label: the
  ServiceMonitor/PodMonitor adds ``node`` (or ``instance``) when Prometheus scrapes the agent.

Both processes also export their own overhead (anchors-connectivity §5.6, §7.5): event-loop lag
from :func:`monitor_event_loop_lag`, the process's CPU/memory and the cgroup's CPU throttling, so
that latencies they report can be trusted or discounted.

Kept here because no library has them: the capped label (bounded cardinality with an overflow
value), the cgroup ``cpu.stat`` collector and the event-loop lag monitor.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
from prometheus_client.registry import Collector

from agent import dockerhub
from agent.models import Cause, PullTestResult

__all__ = [
    "CAUSES",
    "INVALID",
    "LAG_BUCKETS",
    "OTHER",
    "PULLTEST_BUCKETS",
    "CappedLabel",
    "CgroupCpuCollector",
    "LoopLagSink",
    "ServiceMetrics",
    "cause_label",
    "monitor_event_loop_lag",
    "registry_label",
    "registry_of",
]

# No ``*_created`` series (the exposition had none before prometheus_client's own metrics): the
# switch is process-wide in prometheus_client, there is no per-registry one.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client

# 10 ms … 10 min: a resolve against a local mirror is tens of ms, a cold multi-GB pull minutes.
PULLTEST_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# Event-loop overshoot: < 1 ms when idle; 100 ms and more means timings are not trustworthy.
LAG_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

OTHER: Final = "other"
INVALID: Final = "invalid"
#: The engine's cause vocabulary: what :func:`cause_label` keeps by default.
CAUSES: Final = frozenset(c.value for c in Cause)

_HOST = re.compile(
    r"(?:\[[0-9a-f:.%]+\]|[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?)*)"
    r"(?::[0-9]{1,5})?"
)


# --- label values ----------------------------------------------------------------------------


def registry_label(host: str) -> str:
    """Normalise a registry host for the ``registry`` label (before the cardinality cap).

    ``https://Quay.IO/v2/`` → ``quay.io``; ``index.docker.io`` → ``docker.io``. Anything that is
    not ``host[:port]`` — credentials (``user:pass@``), spaces, error text — becomes ``invalid``.
    """
    text = host.strip().lower()
    _scheme, sep, rest = text.partition("://")
    if sep:
        text = rest
    text = text.split("/", 1)[0]
    if not text or len(text) > 255 or "@" in text or not _HOST.fullmatch(text):
        return INVALID
    return dockerhub.canonical(text)


def registry_of(result: PullTestResult) -> str:
    """The registry host of a pull test's image, as containerd names it (``invalid`` when
    neither the reference nor the image parses): the metrics' and the logs' ``registry``."""
    from agent.reference import InvalidReference, parse  # local: keeps import of metrics light

    for text in (result.reference, result.image):
        if not text:
            continue
        try:
            return parse(text).registry_host
        except InvalidReference:
            continue
    return INVALID


def cause_label(cause: Cause | str | None, vocabulary: Collection[str] = CAUSES) -> str:
    """The ``cause`` label: ``none`` for no cause, the value when ``vocabulary`` has it (the
    engine's causes by default; the aggregator adds its own), else ``unknown``."""
    if cause is None or cause == "":
        return "none"
    value = cause.value if isinstance(cause, Cause) else str(cause)
    return value if value in vocabulary else Cause.UNKNOWN.value


class CappedLabel:
    """Distinct values of one label, capped: the first ``limit`` pass, later ones map to ``other``.

    ``reserved`` values pass always and do not count. Thread-safe (scrapes may run elsewhere).
    """

    __slots__ = ("_limit", "_lock", "_reserved", "_seen")

    def __init__(self, limit: int, reserved: Iterable[str] = ()) -> None:
        if limit < 0:
            raise ValueError("the label cap must be >= 0")
        self._limit = limit
        self._reserved = frozenset(reserved)
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._reserved or value in self._seen:
            return value
        with self._lock:
            if len(self._seen) >= self._limit:
                return OTHER
            self._seen.add(value)
        return value

    def __len__(self) -> int:
        return len(self._seen)


# --- self metrics: cgroup CPU throttling -----------------------------------------------------

_CPU_STAT_PATHS: Final = (
    Path("/sys/fs/cgroup/cpu.stat"),  # cgroup v2 (container's own with cgroupns)
    Path("/sys/fs/cgroup/cpu,cpuacct/cpu.stat"),  # cgroup v1
    Path("/sys/fs/cgroup/cpu/cpu.stat"),
)


class CgroupCpuCollector(Collector):
    """CPU throttling of the process's cgroup, read from ``cpu.stat`` at scrape time.

    Exports ``pullcheck_cpu_periods_total``, ``pullcheck_cpu_throttled_periods_total`` and
    ``pullcheck_cpu_throttled_seconds_total``. Nothing is exported when no ``cpu.stat`` with
    throttling fields exists (no CPU controller, or not Linux). Goldpinger's "slow network" was
    CPU throttling (anchors-connectivity §5.6): alert on the throttled share before on latency.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._paths = (path,) if path is not None else _CPU_STAT_PATHS

    def collect(self) -> Iterator[CounterMetricFamily]:
        stats = self._read()
        if not stats or "nr_periods" not in stats:
            return
        periods = CounterMetricFamily(
            "pullcheck_cpu_periods", "CFS enforcement periods elapsed in the agent's cgroup."
        )
        periods.add_metric([], stats["nr_periods"])
        throttled = CounterMetricFamily(
            "pullcheck_cpu_throttled_periods",
            "CFS periods in which the agent's cgroup was throttled.",
        )
        throttled.add_metric([], stats.get("nr_throttled", 0))
        seconds = CounterMetricFamily(
            "pullcheck_cpu_throttled_seconds", "Total time the agent's cgroup was throttled."
        )
        if "throttled_usec" in stats:  # v2
            seconds.add_metric([], stats["throttled_usec"] / 1e6)
        else:  # v1: nanoseconds
            seconds.add_metric([], stats.get("throttled_time", 0) / 1e9)
        yield periods
        yield throttled
        yield seconds

    def _read(self) -> dict[str, int]:
        for path in self._paths:
            try:
                text = path.read_text()
            except OSError:
                continue
            stats: dict[str, int] = {}
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                if value.strip().isdigit():
                    stats[key] = int(value)
            return stats
        return {}


# --- the base of both processes' metrics -----------------------------------------------------


class ServiceMetrics:
    """One process's registry with build info, event-loop lag and process/cgroup self metrics.

    Subclasses add their metrics to :attr:`registry` (``Counter(..., registry=self.registry)``).
    """

    def __init__(self, *, version: str, self_metrics: bool) -> None:
        """``self_metrics``: also export process and cgroup CPU metrics (turn off where several
        instances share one process: those values are per process, not per instance)."""
        self.registry = registry = CollectorRegistry(auto_describe=False)
        self.build_info = Gauge(
            "pullcheck_build_info",
            "Always 1; the pullcheck version.",
            ["version"],
            registry=registry,
        )
        self.build_info.labels(version).set(1)
        self.event_loop_lag = Gauge(
            "pullcheck_event_loop_lag_seconds",
            "Latest event-loop lag: how late a timer of the asyncio loop fired.",
            registry=registry,
        )
        self.event_loop_lag_hist = Histogram(
            "pullcheck_event_loop_lag_distribution_seconds",
            "Distribution of the event-loop lag samples (one per monitor interval).",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        if self_metrics:
            ProcessCollector(registry=registry)
            registry.register(CgroupCpuCollector())

    def observe_loop_lag(self, seconds: float) -> None:
        """Record one event-loop lag sample (seconds late; negative values count as 0)."""
        lag = max(0.0, seconds)
        self.event_loop_lag.set(lag)
        self.event_loop_lag_hist.observe(lag)

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition of this instance's registry and its content type.

        Without ``accept`` (the request's Accept header): the classic text format 0.0.4, which
        every Prometheus version scrapes (prometheus_client's ``CONTENT_TYPE_LATEST`` names
        1.0.0 since 0.22). With one asking for OpenMetrics, OpenMetrics.
        """
        if not accept:
            return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


# --- event-loop lag --------------------------------------------------------------------------


@runtime_checkable
class LoopLagSink(Protocol):
    """Anything :func:`monitor_event_loop_lag` can feed."""

    def observe_loop_lag(self, seconds: float) -> None: ...


async def monitor_event_loop_lag(
    metrics: LoopLagSink | Iterable[LoopLagSink],
    interval: float = 0.5,
    stop: asyncio.Event | None = None,
) -> None:
    """Sleep ``interval`` seconds in a loop and record how late each wake-up was.

    The overshoot, measured on the monotonic clock, is the time the loop was busy with other
    callbacks (or the process was descheduled/throttled). Runs until ``stop`` is set or the task
    is cancelled. Several agents sharing one loop can share one monitor: pass them all.
    """
    if not math.isfinite(interval) or interval <= 0:
        raise ValueError(f"interval must be a finite number of seconds > 0, not {interval!r}")
    sinks = [metrics] if isinstance(metrics, LoopLagSink) else list(metrics)
    while stop is None or not stop.is_set():
        start = time.monotonic()
        if stop is None:
            await asyncio.sleep(interval)
        else:
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                pass
            else:
                return
        lag = max(0.0, time.monotonic() - start - interval)
        for sink in sinks:
            sink.observe_loop_lag(lag)
