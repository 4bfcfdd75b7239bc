"""The node agent's Prometheus metrics: pull tests, connectivity probes, runtime, queue.

Labels and their bounds are :mod:`agent.service.metrics`'s: ``registry`` as in the image
reference (normalised, capped at ``max_registries``), ``cause`` from the engine's vocabulary,
``phase`` one of the probe steps, ``outcome`` one of :data:`RequestOutcome`.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Final, Literal, get_args

from prometheus_client import Counter, Gauge, Histogram

from agent import __version__
from agent.models import Cause, EndpointReport, ProbeReport, PullTestResult, manifests
from agent.service.metrics import (
    INVALID,
    OTHER,
    PULLTEST_BUCKETS,
    CappedLabel,
    ServiceMetrics,
    cause_label,
    registry_label,
    registry_of,
)

__all__ = ["PROBE_BUCKETS", "AgentMetrics", "RequestOutcome", "parse_ratelimit_remaining"]

# One probe step: DNS/TCP in ms on a healthy node, up to the per-step timeouts (tens of seconds).
PROBE_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

RequestOutcome = Literal["fresh", "reused", "shared", "rejected"]
_REQUEST_OUTCOMES: Final = get_args(RequestOutcome)
_PROBE_KINDS: Final = frozenset({"dns", "tcp", "tls", "http", "token", "manifest"})
_LEADING_NUMBER = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(?:;|$)")


def parse_ratelimit_remaining(text: str) -> float | None:
    """The quota left from a ``RateLimit-Remaining`` header (``"76;w=21600"`` → 76.0), or None."""
    match = _LEADING_NUMBER.match(text)
    if match is None:
        return None
    value = float(match.group(1))
    return value if math.isfinite(value) else None


def _ratelimit_remaining(reports: list[EndpointReport]) -> float | None:
    """The smallest quota left any endpoint reported (mirror and upstream may both count)."""
    values = [
        value
        for evidence in manifests(reports)
        if evidence.ratelimit_remaining
        for value in [parse_ratelimit_remaining(evidence.ratelimit_remaining)]
        if value is not None
    ]
    return min(values) if values else None


class AgentMetrics(ServiceMetrics):
    """The node agent's metrics. ``node`` is kept for reference only — it is never a label.

    Feed it with :meth:`observe_pulltest` (every pull test answered, fresh or reused),
    :meth:`observe_probe_report` / :meth:`observe_endpoints` (connectivity probes),
    :meth:`set_runtime_up`, :meth:`track_pulltest` / :meth:`set_queue_depth` and
    :func:`~agent.service.metrics.monitor_event_loop_lag`. Serve :meth:`render` on ``/metrics``.
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
        super().__init__(version=version, self_metrics=self_metrics)
        self.node = node
        self._clock = clock
        self._registry_label = CappedLabel(max_registries, reserved=(OTHER, INVALID))
        registry = self.registry
        pull_labels = ("registry", "mode", "result", "cause")
        self.pulltest_duration = Histogram(
            "pullcheck_pulltest_duration_seconds",
            "Duration of pull tests run by this agent (fresh runs only, not cache hits).",
            pull_labels,
            buckets=PULLTEST_BUCKETS,
            registry=registry,
        )
        self.pulltests = Counter(
            "pullcheck_pulltests_total",
            "Pull tests run by this agent (fresh runs only), by result and cause.",
            pull_labels,
            registry=registry,
        )
        self.pulltest_requests = Counter(
            "pullcheck_pulltest_requests_total",
            "Pull-test requests answered: fresh run, reused from the result cache, shared with a "
            "concurrent identical run, or rejected (allowlist, limits, read-only).",
            ["outcome"],
            registry=registry,
        )
        for outcome in _REQUEST_OUTCOMES:
            self.pulltest_requests.labels(outcome)  # exported as 0 before the first request
        self.probe_duration = Histogram(
            "pullcheck_probe_duration_seconds",
            "Duration of one connectivity probe step (dns, tcp, tls, http, token, manifest).",
            ["registry", "phase"],
            buckets=PROBE_BUCKETS,
            registry=registry,
        )
        self.probes = Counter(
            "pullcheck_probes_total",
            "Connectivity probe steps run, by step and result.",
            ["registry", "phase", "result"],
            registry=registry,
        )
        self.registry_up = Gauge(
            "pullcheck_registry_up",
            "1 if any endpoint of the registry passed the latest connectivity probe, else 0.",
            ["registry"],
            registry=registry,
        )
        self.registry_last_success = Gauge(
            "pullcheck_registry_last_success_timestamp_seconds",
            "Unix time of the latest connectivity probe in which the registry was reachable.",
            ["registry"],
            registry=registry,
        )
        self.registry_ratelimit_remaining = Gauge(
            "pullcheck_registry_ratelimit_remaining",
            "Pulls left in the registry's quota (RateLimit-Remaining of the latest manifest HEAD).",
            ["registry"],
            registry=registry,
        )
        self.runtime_up = Gauge(
            "pullcheck_runtime_up",
            "1 if the container runtime answered on its CRI socket at the latest check, else 0.",
            registry=registry,
        )
        self.pulltests_in_flight = Gauge(
            "pullcheck_pulltests_in_flight", "Pull tests running now.", registry=registry
        )
        self.pulltest_queue_depth = Gauge(
            "pullcheck_pulltest_queue_depth",
            "Pull tests waiting for a concurrency slot.",
            registry=registry,
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
        self.pulltest_requests.labels(outcome).inc()
        if reused:
            return
        registry = self.registry_label(registry_of(result))
        labels = (
            registry,
            result.mode,
            "success" if result.success else "failure",
            cause_label(result.cause),
        )
        self.pulltests.labels(*labels).inc()
        self.pulltest_duration.labels(*labels).observe(max(0.0, result.duration_ms) / 1000)
        # a cancelled test keeps the chains it had so far; cut short, they say nothing of the
        # registry's health
        if result.endpoints and result.cause is not Cause.CANCELLED:
            self._observe_endpoints(registry, result.endpoints)

    def observe_request(self, outcome: RequestOutcome) -> None:
        """Count a request without a result to observe (``rejected``)."""
        if outcome not in _REQUEST_OUTCOMES:
            raise ValueError(f"unknown request outcome {outcome!r}")
        self.pulltest_requests.labels(outcome).inc()

    def track_pulltest(self) -> AbstractContextManager[None]:
        """``with metrics.track_pulltest(): ...`` around the part that occupies a test slot."""
        return self.pulltests_in_flight.track_inprogress()

    def set_queue_depth(self, depth: int) -> None:
        self.pulltest_queue_depth.set(max(0, depth))

    def set_runtime_up(self, up: bool) -> None:
        self.runtime_up.set(1 if up else 0)

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
        for report in reports:
            for probe in report.probes:
                phase = probe.probe if probe.probe in _PROBE_KINDS else OTHER
                result = "success" if probe.success else "failure"
                self.probes.labels(registry, phase, result).inc()
                self.probe_duration.labels(registry, phase).observe(
                    max(0.0, probe.duration_ms) / 1000
                )
        up = any(report.success for report in reports)
        self.registry_up.labels(registry).set(1 if up else 0)
        if up:
            self.registry_last_success.labels(registry).set(self._clock())
        remaining = _ratelimit_remaining(reports)
        if remaining is not None:
            self.registry_ratelimit_remaining.labels(registry).set(remaining)
