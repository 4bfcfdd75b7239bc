"""Prometheus metrics of the node agent and of the aggregator.

Every instance owns its own :class:`~prometheus_client.CollectorRegistry` (never the global one),
so many agents can live in one process (the benchmark hosts 200). Label values are bounded:

* ``registry`` is the registry host as written in the image reference (``docker.io``,
  ``quay.io``, ``host:5000``), normalised by :func:`registry_label`. After ``max_registries``
  distinct values, new ones are counted as ``other``; a value that is not a host[:port] becomes
  ``invalid``. It is never taken from an endpoint, so mirror or resolved IPs cannot leak in
  (a registry that users name by an IP literal, ``10.0.0.5:5000/app``, is labelled so).
* ``cause`` comes from the fixed :class:`~agent.models.Cause` vocabulary (``none`` on success,
  ``unknown`` for anything else). No error text, no addresses, no node label: the
  ServiceMonitor/PodMonitor adds ``node`` (or ``instance``) when Prometheus scrapes the agent.

The agent also exports its own overhead (anchors-connectivity §5.6, §7.5): event-loop lag from
:func:`monitor_event_loop_lag`, the process's CPU/memory and the cgroup's CPU throttling, so that
latencies it reports can be trusted or discounted.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from itertools import accumulate
from pathlib import Path
from typing import Final, Literal, Protocol, cast, get_args, runtime_checkable

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from agent import __version__
from agent.cluster.failures import AGENT_REFUSED, AGENT_UNREACHABLE, NODE_NOT_FOUND
from agent.models import Cause, EndpointReport, ManifestEvidence, ProbeReport, PullTestResult

__all__ = [
    "AGGREGATOR_AGENT_STATES",
    "AGGREGATOR_CAUSES",
    "AGGREGATOR_OUTCOMES",
    "LAG_BUCKETS",
    "PROBE_BUCKETS",
    "PULLTEST_BUCKETS",
    "AgentMetrics",
    "AggregatorMetrics",
    "CgroupCpuCollector",
    "LoopLagSink",
    "RequestOutcome",
    "cause_label",
    "monitor_event_loop_lag",
    "parse_ratelimit_remaining",
    "registry_label",
]

# 10 ms … 10 min: a resolve against a local mirror is tens of ms, a cold multi-GB pull minutes.
PULLTEST_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# One probe step: DNS/TCP in ms on a healthy node, up to the per-step timeouts (tens of seconds).
PROBE_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Event-loop overshoot: < 1 ms when idle; 100 ms and more means timings are not trustworthy.
LAG_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

RequestOutcome = Literal["fresh", "reused", "shared", "rejected"]
_REQUEST_OUTCOMES: Final = get_args(RequestOutcome)
_PROBE_KINDS: Final = ("dns", "tcp", "tls", "http", "token", "manifest")

#: The aggregator's per-node causes: the agent's vocabulary plus what only the aggregator sees.
AGGREGATOR_CAUSES: Final = frozenset(
    {c.value for c in Cause}
    | {"none", AGENT_UNREACHABLE, AGENT_REFUSED, NODE_NOT_FOUND}
)
#: States of ``pullcheck_aggregator_agents``: every agent discovery lists, and each by readiness.
AGGREGATOR_AGENT_STATES: Final = ("discovered", "ready", "unready", "unreachable", "unknown")
#: Outcomes of one aggregator API request; anything else is counted as ``other``.
AGGREGATOR_OUTCOMES: Final = frozenset(
    {
        "ok",  # every node answered (whatever the pull results)
        "partial",  # some agents were unreachable or timed out
        "error",  # the aggregator failed to answer
        "rejected",  # refused for another reason
        "unauthorized",
        "bad_request",
        "invalid_reference",
        "not_allowed",  # outside the registry allowlist
        "read_only",
        "not_found",
        "rate_limited",
        "timeout",
    }
)

OTHER: Final = "other"
INVALID: Final = "invalid"
_CAUSES: Final = frozenset(c.value for c in Cause)
_HOST = re.compile(
    r"(?:\[[0-9a-f:.%]+\]|[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?)*)"
    r"(?::[0-9]{1,5})?"
)
_ROUTE = re.compile(r"/?[A-Za-z0-9_][A-Za-z0-9_./{}-]{0,79}|/")
_LEADING_NUMBER = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(?:;|$)")


# --- label helpers ---------------------------------------------------------------------------


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
    if text == "index.docker.io":
        return "docker.io"
    return text


def cause_label(cause: Cause | str | None) -> str:
    """``none`` for no cause, the :class:`Cause` value, or ``unknown`` outside the vocabulary."""
    if cause is None or cause == "":
        return "none"
    value = cause.value if isinstance(cause, Cause) else str(cause)
    return value if value in _CAUSES else Cause.UNKNOWN.value


def parse_ratelimit_remaining(text: str) -> float | None:
    """The quota left from a ``RateLimit-Remaining`` header (``"76;w=21600"`` → 76.0), or None."""
    match = _LEADING_NUMBER.match(text)
    if match is None:
        return None
    value = float(match.group(1))
    return value if math.isfinite(value) else None


def _registry_of(result: PullTestResult) -> str:
    """The registry host of a pull test's image, as containerd names it."""
    from agent.reference import InvalidReference, parse  # local: keeps import of metrics light

    for text in (result.reference, result.image):
        if not text:
            continue
        try:
            return parse(text).registry_host
        except InvalidReference:
            continue
    return INVALID


class _CappedLabel:
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
    """CPU throttling of the agent's cgroup, read from ``cpu.stat`` at scrape time.

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


# --- compact metric storage -----------------------------------------------------------------


class _Family:
    """One metric family: its kind, labels and children (label values -> value or buckets).

    Counters and gauges hold ``[value]``; histograms ``[count per bucket..., +Inf count, sum]``
    (non-cumulative, made cumulative at scrape time). Lists of numbers, no lock or object per
    value: a histogram child costs a few hundred bytes instead of prometheus_client's ~4 KB.
    """

    __slots__ = ("buckets", "children", "doc", "kind", "labelnames", "name")

    def __init__(
        self,
        kind: Literal["counter", "gauge", "histogram"],
        name: str,
        doc: str,
        labelnames: tuple[str, ...],
        buckets: tuple[float, ...] = (),
    ) -> None:
        self.kind = kind
        self.name = name
        self.doc = doc
        self.labelnames = labelnames
        self.buckets = buckets
        self.children: dict[tuple[str, ...], list[float]] = {}


@lru_cache(maxsize=16)
def _bucket_bounds(buckets: tuple[float, ...]) -> tuple[str, ...]:
    """The ``le`` label values of a bucket layout, ``+Inf`` last (as the Go client writes them)."""
    return (*(_go_float(float(b)) for b in buckets), "+Inf")


_go_float = cast(Callable[[float], str], floatToGoString)  # as prometheus_client writes ``le``


class _Store(Collector):
    """The metric families of one instance, exposed through its registry at scrape time."""

    def __init__(self) -> None:
        self._families: list[_Family] = []
        self._lock = threading.Lock()

    def family(
        self,
        kind: Literal["counter", "gauge", "histogram"],
        name: str,
        doc: str,
        labelnames: Iterable[str] = (),
        buckets: Iterable[float] = (),
    ) -> _Family:
        family = _Family(kind, name, doc, tuple(labelnames), tuple(sorted(buckets)))
        self._families.append(family)
        if not family.labelnames:
            self._child(family, ())
        return family

    def _child(self, family: _Family, labels: tuple[str, ...]) -> list[float]:
        child = family.children.get(labels)
        if child is None:
            if len(labels) != len(family.labelnames):
                raise ValueError(f"{family.name}: expected labels {family.labelnames}")
            size = len(family.buckets) + 2 if family.kind == "histogram" else 1
            child = family.children[labels] = [0] * size
        return child

    def touch(self, family: _Family, *labels: str) -> None:
        """Create the child with value 0 so that it is exported before its first event."""
        with self._lock:
            self._child(family, labels)

    def inc(self, family: _Family, *labels: str, amount: float = 1) -> None:
        with self._lock:
            self._child(family, labels)[0] += amount

    def set(self, family: _Family, *labels: str, value: float) -> None:
        with self._lock:
            self._child(family, labels)[0] = value

    def observe(self, family: _Family, *labels: str, value: float) -> None:
        index = bisect_left(family.buckets, value)  # first bucket with le >= value
        with self._lock:
            child = self._child(family, labels)
            child[index] += 1
            child[-1] += value

    def get(self, family: _Family, *labels: str) -> float | None:
        """The value of a counter/gauge child (None when it does not exist)."""
        child = family.children.get(labels)
        return None if child is None else child[0]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snapshot = [(f, [(k, list(v)) for k, v in f.children.items()]) for f in self._families]
        for family, children in snapshot:
            labelnames = list(family.labelnames)
            metric: CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily
            if family.kind == "counter":
                metric = CounterMetricFamily(family.name, family.doc, labels=labelnames)
                for key, value in children:
                    metric.add_metric(list(key), value[0])
            elif family.kind == "gauge":
                metric = GaugeMetricFamily(family.name, family.doc, labels=labelnames)
                for key, value in children:
                    metric.add_metric(list(key), value[0])
            else:
                metric = HistogramMetricFamily(family.name, family.doc, labels=labelnames)
                bounds = _bucket_bounds(family.buckets)
                for key, value in children:
                    metric.add_metric(
                        list(key), list(zip(bounds, accumulate(value[:-1]), strict=True)), value[-1]
                    )
            yield metric


# --- shared base -----------------------------------------------------------------------------


@runtime_checkable
class LoopLagSink(Protocol):
    """Anything :func:`monitor_event_loop_lag` can feed."""

    def observe_loop_lag(self, seconds: float) -> None: ...


class _BaseMetrics:
    """Registry, build info, event-loop lag and process/cgroup self metrics."""

    def __init__(self, *, version: str, self_metrics: bool) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._store = store = _Store()
        self.registry.register(store)
        self.build_info = store.family(
            "gauge", "pullcheck_build_info", "Always 1; the pullcheck version.", ["version"]
        )
        store.set(self.build_info, version, value=1)
        self.event_loop_lag = store.family(
            "gauge",
            "pullcheck_event_loop_lag_seconds",
            "Latest event-loop lag: how late a timer of the asyncio loop fired.",
        )
        self.event_loop_lag_hist = store.family(
            "histogram",
            "pullcheck_event_loop_lag_distribution_seconds",
            "Distribution of the event-loop lag samples (one per monitor interval).",
            buckets=LAG_BUCKETS,
        )
        if self_metrics:
            ProcessCollector(registry=self.registry)
            self.registry.register(CgroupCpuCollector())

    def observe_loop_lag(self, seconds: float) -> None:
        """Record one event-loop lag sample (seconds late; negative values count as 0)."""
        lag = max(0.0, seconds)
        self._store.set(self.event_loop_lag, value=lag)
        self._store.observe(self.event_loop_lag_hist, value=lag)

    def value(self, family: _Family, *labels: str) -> float | None:
        """The current value of a counter or gauge child, None if it was never touched."""
        return self._store.get(family, *labels)

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition of this instance's registry and its content type.

        Without ``accept`` (the request's Accept header): the classic text format 0.0.4, which
        every Prometheus version scrapes. With one asking for OpenMetrics, OpenMetrics.
        """
        if not accept:
            return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


# --- agent -----------------------------------------------------------------------------------


class AgentMetrics(_BaseMetrics):
    """The node agent's metrics. ``node`` is kept for reference only — it is never a label.

    Feed it with :meth:`observe_pulltest` (every pull test answered, fresh or reused),
    :meth:`observe_probe_report` / :meth:`observe_endpoints` (connectivity probes),
    :meth:`set_runtime_up`, :meth:`track_pulltest` / :meth:`set_queue_depth` and
    :func:`monitor_event_loop_lag`. Serve :meth:`render` on ``/metrics``.
    """

    def __init__(
        self,
        node: str,
        max_registries: int = 50,
        *,
        version: str = __version__,
        self_metrics: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``self_metrics``: also export process and cgroup CPU metrics (turn off where many
        agents share one process: those values are per process, not per agent)."""
        super().__init__(version=version, self_metrics=self_metrics)
        self.node = node
        self._clock = clock
        self._registry_label = _CappedLabel(max_registries, reserved=(OTHER, INVALID))
        family = self._store.family
        pull_labels = ("registry", "mode", "result", "cause")
        self.pulltest_duration = family(
            "histogram",
            "pullcheck_pulltest_duration_seconds",
            "Duration of pull tests run by this agent (fresh runs only, not cache hits).",
            pull_labels,
            PULLTEST_BUCKETS,
        )
        self.pulltests = family(
            "counter",
            "pullcheck_pulltests_total",
            "Pull tests run by this agent (fresh runs only), by result and cause.",
            pull_labels,
        )
        self.pulltest_requests = family(
            "counter",
            "pullcheck_pulltest_requests_total",
            "Pull-test requests answered: fresh run, reused from the result cache, shared with a "
            "concurrent identical run, or rejected (allowlist, limits, read-only).",
            ["outcome"],
        )
        for outcome in _REQUEST_OUTCOMES:
            self._store.touch(self.pulltest_requests, outcome)
        self.probe_duration = family(
            "histogram",
            "pullcheck_probe_duration_seconds",
            "Duration of one connectivity probe step (dns, tcp, tls, http, token, manifest).",
            ["registry", "phase"],
            PROBE_BUCKETS,
        )
        self.probes = family(
            "counter",
            "pullcheck_probes_total",
            "Connectivity probe steps run, by step and result.",
            ["registry", "phase", "result"],
        )
        self.registry_up = family(
            "gauge",
            "pullcheck_registry_up",
            "1 if any endpoint of the registry passed the latest connectivity probe, else 0.",
            ["registry"],
        )
        self.registry_last_success = family(
            "gauge",
            "pullcheck_registry_last_success_timestamp_seconds",
            "Unix time of the latest connectivity probe in which the registry was reachable.",
            ["registry"],
        )
        self.registry_ratelimit_remaining = family(
            "gauge",
            "pullcheck_registry_ratelimit_remaining",
            "Pulls left in the registry's quota (RateLimit-Remaining of the latest manifest HEAD).",
            ["registry"],
        )
        self.runtime_up = family(
            "gauge",
            "pullcheck_runtime_up",
            "1 if the container runtime answered on its CRI socket at the latest check, else 0.",
        )
        self.pulltests_in_flight = family(
            "gauge", "pullcheck_pulltests_in_flight", "Pull tests running now."
        )
        self.pulltest_queue_depth = family(
            "gauge", "pullcheck_pulltest_queue_depth", "Pull tests waiting for a concurrency slot."
        )

    # --- labels ----------------------------------------------------------------------------

    def registry_label(self, host: str) -> str:
        """The ``registry`` label value for ``host``: normalised and capped."""
        return self._registry_label(registry_label(host))

    # --- pull tests ------------------------------------------------------------------------

    def observe_pulltest(
        self,
        result: PullTestResult,
        *,
        reused: bool,
        outcome: RequestOutcome | None = None,
    ) -> None:
        """Count one answered pull-test request.

        A fresh result (``reused=False``) counts as a pull in ``pullcheck_pulltests_total`` and
        the duration histogram, and its endpoint reports feed the connectivity metrics (as
        :meth:`observe_endpoints`; do not pass them again). A reused result — from the TTL cache
        (``outcome="reused"``, the default) or attached to a running identical test
        (``outcome="shared"``) — only counts in ``pullcheck_pulltest_requests_total``.
        """
        if outcome is None:
            outcome = "reused" if reused else "fresh"
        elif outcome == "rejected" or (outcome == "fresh") == reused:
            raise ValueError(f"outcome {outcome!r} contradicts reused={reused}")
        store = self._store
        store.inc(self.pulltest_requests, outcome)
        if reused:
            return
        registry = self.registry_label(_registry_of(result))
        labels = (
            registry,
            result.mode,
            "success" if result.success else "failure",
            cause_label(result.cause),
        )
        store.inc(self.pulltests, *labels)
        store.observe(self.pulltest_duration, *labels, value=max(0.0, result.duration_ms) / 1000)
        # a cancelled test keeps the chains it had so far; cut short, they say nothing of the
        # registry's health
        if result.endpoints and result.cause is not Cause.CANCELLED:
            self._observe_endpoints(registry, result.endpoints)

    def observe_request(self, outcome: RequestOutcome) -> None:
        """Count a request without a result to observe (``rejected``)."""
        if outcome not in _REQUEST_OUTCOMES:
            raise ValueError(f"unknown request outcome {outcome!r}")
        self._store.inc(self.pulltest_requests, outcome)

    @contextmanager
    def track_pulltest(self) -> Iterator[None]:
        """``with metrics.track_pulltest(): ...`` around the part that occupies a test slot."""
        self._store.inc(self.pulltests_in_flight)
        try:
            yield
        finally:
            self._store.inc(self.pulltests_in_flight, amount=-1)

    def set_queue_depth(self, depth: int) -> None:
        self._store.set(self.pulltest_queue_depth, value=max(0, depth))

    def set_runtime_up(self, up: bool) -> None:
        self._store.set(self.runtime_up, value=1 if up else 0)

    # --- connectivity ----------------------------------------------------------------------

    def observe_probe_report(self, report: ProbeReport) -> None:
        """A ``probe`` run: its endpoint reports under ``report.registry``."""
        host = report.registry
        if not host and report.reference:
            from agent.reference import InvalidReference, parse

            try:
                host = parse(report.reference).registry_host
            except InvalidReference:
                host = INVALID
        self.observe_endpoints(host or INVALID, report.endpoints)

    def observe_endpoints(self, registry: str, reports: list[EndpointReport]) -> None:
        """One connectivity probe of ``registry`` (as in the image reference): every endpoint's
        probe steps, registry up/down, last success and the rate-limit quota left."""
        self._observe_endpoints(self.registry_label(registry), reports)

    def _observe_endpoints(self, registry: str, reports: list[EndpointReport]) -> None:
        if not reports:
            return  # nothing was probed (cancelled): keep the previous state
        store = self._store
        for report in reports:
            for probe in report.probes:
                phase = probe.probe if probe.probe in _PROBE_KINDS else OTHER
                result = "success" if probe.success else "failure"
                store.inc(self.probes, registry, phase, result)
                store.observe(
                    self.probe_duration, registry, phase, value=max(0.0, probe.duration_ms) / 1000
                )
        up = any(report.success for report in reports)
        store.set(self.registry_up, registry, value=1 if up else 0)
        if up:
            store.set(self.registry_last_success, registry, value=self._clock())
        remaining = _ratelimit_remaining(reports)
        if remaining is not None:
            store.set(self.registry_ratelimit_remaining, registry, value=remaining)


def _ratelimit_remaining(reports: list[EndpointReport]) -> float | None:
    """The smallest quota left any endpoint reported (mirror and upstream may both count)."""
    values = [
        value
        for report in reports
        for probe in report.probes
        if isinstance(probe.evidence, ManifestEvidence) and probe.evidence.ratelimit_remaining
        for value in [parse_ratelimit_remaining(probe.evidence.ratelimit_remaining)]
        if value is not None
    ]
    return min(values) if values else None


# --- aggregator ------------------------------------------------------------------------------


class AggregatorMetrics(_BaseMetrics):
    """The aggregator's metrics: API requests, fan-out duration, agents seen, per-node causes.

    ``endpoint`` is a route name or template (``pulltest``, ``/v1/pulltest``), never the raw URL:
    the query is dropped, values that are not a path become ``invalid``, and after
    ``max_endpoints`` distinct ones ``other``.
    """

    def __init__(
        self,
        max_endpoints: int = 32,
        *,
        version: str = __version__,
        self_metrics: bool = True,
    ) -> None:
        super().__init__(version=version, self_metrics=self_metrics)
        self._endpoint_label = _CappedLabel(max_endpoints, reserved=(OTHER, INVALID))
        family = self._store.family
        self.requests = family(
            "counter",
            "pullcheck_aggregator_requests_total",
            "Aggregator API requests, by route and outcome.",
            ["endpoint", "outcome"],
        )
        self.fanout_duration = family(
            "histogram",
            "pullcheck_aggregator_fanout_duration_seconds",
            "Time from the start of a fan-out to the last agent's answer or the deadline.",
            ["endpoint"],
            PULLTEST_BUCKETS,
        )
        self.agents = family(
            "gauge",
            "pullcheck_aggregator_agents",
            "Agents discovery lists (state=discovered), and each by its latest readiness check: "
            "ready, unready (answers, runtime down), unreachable, unknown (not checked yet).",
            ["state"],
        )
        for state in AGGREGATOR_AGENT_STATES:
            self._store.touch(self.agents, state)
        self.leader = family(
            "gauge",
            "pullcheck_aggregator_leader",
            "1 while this replica leads the scheduled work (pre-pull jobs), else 0.",
        )
        self.node_results = family(
            "counter",
            "pullcheck_aggregator_node_results_total",
            "Per-node results collected by fan-outs, by cause (none = success).",
            ["cause"],
        )

        self._job_label = _CappedLabel(64, reserved=(OTHER,))
        self.prepull_ready = family(
            "gauge",
            "pullcheck_prepull_images_ready",
            "Node-image pairs of a pre-pull job that are present on their nodes.",
            ["job"],
        )
        self.prepull_total = family(
            "gauge",
            "pullcheck_prepull_images_total",
            "Node-image pairs a pre-pull job covers (matching nodes x images).",
            ["job"],
        )
        self.prepull_wave = family(
            "gauge",
            "pullcheck_prepull_wave",
            "Progress of a pre-pull job's current wave, by phase.",
            ["job", "phase"],
        )
        self.prepull_pulls = family(
            "counter",
            "pullcheck_prepull_pulls_total",
            "Finished pre-pulls (present, pulled or failed after the last try), by cause.",
            ["job", "result", "cause"],
        )

    def set_prepull(self, job: str, ready: int, total: int, wave: dict[str, int]) -> None:
        """A pre-pull job's progress: pairs ready of total, and its wave by phase."""
        label = self._job_label(job)
        self._store.set(self.prepull_ready, label, value=ready)
        self._store.set(self.prepull_total, label, value=total)
        for phase in ("pending", "pulling", "done", "failed"):
            self._store.set(self.prepull_wave, label, phase, value=wave.get(phase, 0))

    def observe_prepull_pull(self, job: str, result: str, cause: Cause | str | None) -> None:
        value = "none" if not cause else (cause.value if isinstance(cause, Cause) else str(cause))
        if value not in AGGREGATOR_CAUSES and value != "none":
            value = Cause.UNKNOWN.value
        outcome = result if result in ("success", "failure") else OTHER
        self._store.inc(self.prepull_pulls, self._job_label(job), outcome, value)

    def endpoint_label(self, endpoint: str) -> str:
        """The ``endpoint`` label value: a route name or path (query dropped), capped."""
        value = endpoint.split("?", 1)[0]
        if not _ROUTE.fullmatch(value):
            return INVALID
        return self._endpoint_label(value)

    def observe_request(self, endpoint: str, outcome: str) -> None:
        """One API request; ``outcome`` from :data:`AGGREGATOR_OUTCOMES`, else ``other``."""
        label = outcome if outcome in AGGREGATOR_OUTCOMES else OTHER
        self._store.inc(self.requests, self.endpoint_label(endpoint), label)

    def observe_fanout(self, endpoint: str, seconds: float) -> None:
        self._store.observe(
            self.fanout_duration, self.endpoint_label(endpoint), value=max(0.0, seconds)
        )

    def set_agents(self, counts: Mapping[str, int]) -> None:
        """Agents by state (:data:`AGGREGATOR_AGENT_STATES`); a state not given is 0."""
        unknown = sorted(set(counts) - set(AGGREGATOR_AGENT_STATES))
        if unknown:
            raise ValueError(f"unknown agent state(s) {unknown}")
        for state in AGGREGATOR_AGENT_STATES:
            self._store.set(self.agents, state, value=max(0, counts.get(state, 0)))

    def set_leader(self, leading: bool) -> None:
        self._store.set(self.leader, value=1 if leading else 0)

    def observe_node_result(self, cause: Cause | str | None) -> None:
        """One node's result in a fan-out: ``None`` for success, a :class:`Cause`, or an
        aggregator cause (``agent_unreachable``, ``agent_refused``, ``node_not_found``); anything
        else counts as ``unknown``."""
        if cause is None or cause == "":
            value = "none"
        else:
            value = cause.value if isinstance(cause, Cause) else str(cause)
            if value not in AGGREGATOR_CAUSES:
                value = Cause.UNKNOWN.value
        self._store.inc(self.node_results, value)


# --- event-loop lag --------------------------------------------------------------------------


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
    if interval <= 0:
        raise ValueError("interval must be > 0")
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
