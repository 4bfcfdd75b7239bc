"""The automatic pod diagnosis' metrics, on the aggregator's registry.

Labels are bounded and never name a pod, a namespace or a node: ``cause`` from the engine's
vocabulary plus ``error`` (pullcheck could not test: no agent on the node, unreadable secrets)
(:func:`~agent.service.metrics.cause_label`); ``registry`` the image's registry host
(:func:`~agent.service.metrics.registry_label`), the first ``max_registries`` distinct ones
named and the rest ``other``; ``outcome`` of a test ``fresh``, ``reused``, ``shared``,
``skipped`` (the rate limit's queue was full).
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge

from agent.service.metrics import CAUSES, INVALID, OTHER, CappedLabel, cause_label, registry_label

__all__ = ["DIAGNOSIS_CAUSES", "PodMetrics"]

#: causes a verdict may carry: the engine's, and ``error`` when no test could run
DIAGNOSIS_CAUSES: Final = CAUSES | {"error"}
_OUTCOMES: Final = frozenset({"fresh", "reused", "shared", "skipped"})
_WATCH_RESTARTS: Final = frozenset({"relist", "expired", "error", "end"})


class PodMetrics:
    def __init__(self, registry: CollectorRegistry, *, max_registries: int = 20) -> None:
        self._registry_label = CappedLabel(max_registries, reserved=(OTHER, INVALID))
        self.verdicts = Counter(
            "pullcheck_pod_diagnoses_total",
            "Verdicts of the automatic diagnosis of pods failing to pull, by cause and registry.",
            ["cause", "registry"],
            registry=registry,
        )
        self.failing = Gauge(
            "pullcheck_pod_failing_containers",
            "Containers currently waiting on an image pull that the diagnosis tracks, by cause "
            "(pending: not tested yet).",
            ["cause"],
            registry=registry,
        )
        self.tests = Counter(
            "pullcheck_pod_tests_total",
            "Pull tests asked for failing containers: fresh (run), reused or shared (one test per "
            "image x node x pull secrets), skipped (queue full).",
            ["outcome"],
            registry=registry,
        )
        self.watch_restarts = Counter(
            "pullcheck_pod_watch_restarts_total",
            "Watch restarts: relist (after 410 Gone or at start), expired, error, end.",
            ["reason"],
            registry=registry,
        )
        self.events = Counter(
            "pullcheck_pod_events_total",
            "Kubernetes Events written on pods: created, counted (a repeat), failed.",
            ["result"],
            registry=registry,
        )

    def registry(self, host: str) -> str:
        return self._registry_label(registry_label(host))

    def observe_verdict(self, cause: str | None, host: str) -> None:
        label = cause_label(cause, DIAGNOSIS_CAUSES)
        self.verdicts.labels(label, self.registry(host)).inc()

    def observe_test(self, outcome: str) -> None:
        self.tests.labels(outcome if outcome in _OUTCOMES else OTHER).inc()

    def observe_restart(self, reason: str) -> None:
        self.watch_restarts.labels(reason if reason in _WATCH_RESTARTS else OTHER).inc()

    def observe_event(self, result: str) -> None:
        self.events.labels(result if result in ("created", "counted", "failed") else OTHER).inc()

    def set_failing(self, by_cause: dict[str, int]) -> None:
        self.failing.clear()
        for cause, count in by_cause.items():
            label = "pending" if cause == "pending" else cause_label(cause, DIAGNOSIS_CAUSES)
            self.failing.labels(label).set(count)
