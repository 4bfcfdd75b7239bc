"""The aggregator's Prometheus metrics: API requests, fan-outs, agents, per-node causes, pre-pulls.

Labels are bounded: ``endpoint`` is a route name or template (``pulltest``, ``/v1/pulltest``),
never the raw URL (the query is dropped, values that are not a path become ``invalid``, and after
``max_endpoints`` distinct ones ``other``); ``outcome`` one of :data:`AGGREGATOR_OUTCOMES`;
``cause`` one of :data:`AGGREGATOR_CAUSES`; ``job`` capped at 64 distinct pre-pull jobs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from prometheus_client import Counter, Gauge, Histogram

from agent import __version__
from agent.cluster.models import AggregatorCause
from agent.models import Cause
from agent.service.metrics import (
    CAUSES,
    INVALID,
    OTHER,
    PULLTEST_BUCKETS,
    CappedLabel,
    ServiceMetrics,
    cause_label,
)

__all__ = [
    "AGGREGATOR_AGENT_STATES",
    "AGGREGATOR_CAUSES",
    "AGGREGATOR_OUTCOMES",
    "AggregatorMetrics",
]

#: The aggregator's per-node causes: the agent's vocabulary plus what only the aggregator sees.
AGGREGATOR_CAUSES: Final = CAUSES | {"none", *(cause.value for cause in AggregatorCause)}
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

_PREPULL_PHASES: Final = ("pending", "pulling", "done", "failed")
_MAX_JOBS: Final = 64
_ROUTE = re.compile(r"/?[A-Za-z0-9_][A-Za-z0-9_./{}-]{0,79}|/")


class AggregatorMetrics(ServiceMetrics):
    """The aggregator's metrics: API requests, fan-out duration, agents seen, per-node causes and
    pre-pull progress. Serve :meth:`render` on ``/metrics``."""

    def __init__(
        self,
        max_endpoints: int = 32,
        *,
        version: str = __version__,
        self_metrics: bool = True,
    ) -> None:
        super().__init__(version=version, self_metrics=self_metrics)
        self._endpoint_label = CappedLabel(max_endpoints, reserved=(OTHER, INVALID))
        self._job_label = CappedLabel(_MAX_JOBS, reserved=(OTHER,))
        registry = self.registry
        self.requests = Counter(
            "pullcheck_aggregator_requests_total",
            "Aggregator API requests, by route and outcome.",
            ["endpoint", "outcome"],
            registry=registry,
        )
        self.fanout_duration = Histogram(
            "pullcheck_aggregator_fanout_duration_seconds",
            "Time from the start of a fan-out to the last agent's answer or the deadline.",
            ["endpoint"],
            buckets=PULLTEST_BUCKETS,
            registry=registry,
        )
        self.agents = Gauge(
            "pullcheck_aggregator_agents",
            "Agents discovery lists (state=discovered), and each by its latest readiness check: "
            "ready, unready (answers, runtime down), unreachable, unknown (not checked yet).",
            ["state"],
            registry=registry,
        )
        for state in AGGREGATOR_AGENT_STATES:
            self.agents.labels(state)  # exported as 0 before the first readiness round
        self.leader = Gauge(
            "pullcheck_aggregator_leader",
            "1 while this replica leads the scheduled work (pre-pull jobs), else 0.",
            registry=registry,
        )
        self.node_results = Counter(
            "pullcheck_aggregator_node_results_total",
            "Per-node results collected by fan-outs, by cause (none = success).",
            ["cause"],
            registry=registry,
        )
        self.prepull_ready = Gauge(
            "pullcheck_prepull_images_ready",
            "Node-image pairs of a pre-pull job that are present on their nodes.",
            ["job"],
            registry=registry,
        )
        self.prepull_total = Gauge(
            "pullcheck_prepull_images_total",
            "Node-image pairs a pre-pull job covers (matching nodes x images).",
            ["job"],
            registry=registry,
        )
        self.prepull_wave = Gauge(
            "pullcheck_prepull_wave",
            "Progress of a pre-pull job's current wave, by phase.",
            ["job", "phase"],
            registry=registry,
        )
        self.prepull_pulls = Counter(
            "pullcheck_prepull_pulls_total",
            "Finished pre-pulls (present, pulled or failed after the last try), by cause.",
            ["job", "result", "cause"],
            registry=registry,
        )

    # --- API requests and fan-outs ---------------------------------------------------------

    def endpoint_label(self, endpoint: str) -> str:
        """The ``endpoint`` label value: a route name or path (query dropped), capped."""
        value = endpoint.split("?", 1)[0]
        if not _ROUTE.fullmatch(value):
            return INVALID
        return self._endpoint_label(value)

    def observe_request(self, endpoint: str, outcome: str) -> None:
        """One API request; ``outcome`` from :data:`AGGREGATOR_OUTCOMES`, else ``other``."""
        label = outcome if outcome in AGGREGATOR_OUTCOMES else OTHER
        self.requests.labels(self.endpoint_label(endpoint), label).inc()

    def observe_fanout(self, endpoint: str, seconds: float) -> None:
        self.fanout_duration.labels(self.endpoint_label(endpoint)).observe(max(0.0, seconds))

    def observe_node_result(self, cause: Cause | str | None) -> None:
        """One node's result in a fan-out: ``None`` for success, a :class:`Cause`, or an
        aggregator cause (``agent_unreachable``, ``agent_refused``, ``node_not_found``); anything
        else counts as ``unknown``."""
        self.node_results.labels(cause_label(cause, AGGREGATOR_CAUSES)).inc()

    # --- agents and leadership -------------------------------------------------------------

    def set_agents(self, counts: Mapping[str, int]) -> None:
        """Agents by state (:data:`AGGREGATOR_AGENT_STATES`); a state not given is 0."""
        unknown = sorted(set(counts) - set(AGGREGATOR_AGENT_STATES))
        if unknown:
            raise ValueError(f"unknown agent state(s) {unknown}")
        for state in AGGREGATOR_AGENT_STATES:
            self.agents.labels(state).set(max(0, counts.get(state, 0)))

    def set_leader(self, leading: bool) -> None:
        self.leader.set(1 if leading else 0)

    # --- pre-pull jobs ---------------------------------------------------------------------

    def set_prepull(self, job: str, ready: int, total: int, wave: dict[str, int]) -> None:
        """A pre-pull job's progress: pairs ready of total, and its wave by phase."""
        label = self._job_label(job)
        self.prepull_ready.labels(label).set(ready)
        self.prepull_total.labels(label).set(total)
        for phase in _PREPULL_PHASES:
            self.prepull_wave.labels(label, phase).set(wave.get(phase, 0))

    def observe_prepull_pull(self, job: str, result: str, cause: Cause | str | None) -> None:
        """One finished pre-pull: ``result`` ``success`` or ``failure`` (else ``other``)."""
        outcome = result if result in ("success", "failure") else OTHER
        cause_value = cause_label(cause, AGGREGATOR_CAUSES)
        self.prepull_pulls.labels(self._job_label(job), outcome, cause_value).inc()
