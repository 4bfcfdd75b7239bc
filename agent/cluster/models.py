"""What the aggregator answers, and its own causes for nodes it has no result from.

The JSON of these models is the aggregator's public interface (the CLI and scripts read it):
fields are only ever added, never renamed, and which fields appear does not depend on their
values except where a field says so (``reason`` of an agent, ``forwarded_by``).

The aggregator's own causes (:class:`AggregatorCause`), next to the engine's
:class:`~agent.models.Cause` vocabulary:

``agent_unreachable``
    the node's agent did not answer (refused, timed out, reset) or something else answered
    (not a pullcheck agent's answer);
``agent_refused``
    the agent answered with an error status (401, 403, 413, 429, 507, …): ``status`` holds it and
    ``error`` the agent's error kind (``unauthorized``, ``not_allowed``, ``queue_full``, …);
``node_not_found``
    a node that was asked for by name (``nodes=a,b``) is not among the agents discovery knows.

Every such node is one :class:`NodeFailure` ``{node, agent, success: false, cause, summary,
remedy, status, error}``: ``summary`` is the reason in one line, ``remedy`` what to check. The
pre-pull coordinator reports the same failures for its pulls (:meth:`NodeFailure.outcome`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from agent.cluster.client import PLAIN_HTTP_CREDENTIALS, CallFailure, FailureKind
from agent.cluster.prepull.models import JobStatus
from agent.models import Cause, PullTestResult
from agent.node.models import ConnectivityAnswer, PullOutcome
from agent.service.errors import ErrorAnswer

__all__ = [
    "AgentEntry",
    "AgentList",
    "AgentState",
    "AggregatorCause",
    "AggregatorHealth",
    "AggregatorReady",
    "ConnectivityEntry",
    "ConnectivityMatrix",
    "ForwardedError",
    "JobDetail",
    "JobList",
    "JobStarted",
    "LeaderDetail",
    "MatrixCell",
    "MatrixColumn",
    "MatrixSummary",
    "NodeConnectivity",
    "NodeEntry",
    "NodeFailure",
    "NodeResult",
    "PullTestAnswer",
    "ReachableRow",
    "StreamLine",
    "Summary",
    "SummaryLine",
    "UnreachableRow",
    "failed_call",
    "not_found",
    "not_ready",
    "refused",
    "unreachable",
]


class AggregatorCause(StrEnum):
    """Why the aggregator has no result from a node (see the module doc)."""

    AGENT_UNREACHABLE = "agent_unreachable"
    AGENT_REFUSED = "agent_refused"
    NODE_NOT_FOUND = "node_not_found"


def _omitted_when_empty(value: object) -> bool:
    return not value


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# --- node entries -------------------------------------------------------------------------------


class NodeFailure(_Answer):
    """One node the aggregator has no result for, and why."""

    model_config = ConfigDict(frozen=True)

    node: str
    agent: str  # the agent's base URL ("" when there is none)
    success: Literal[False] = False
    cause: AggregatorCause | Cause
    summary: str
    remedy: str
    status: int | None = None  # the agent's HTTP status, when it answered
    error: str | None = None  # the agent's error kind, when it refused

    def outcome(self) -> PullOutcome:
        """This failure as the outcome of a pre-pull."""
        return PullOutcome(ok=False, cause=self.cause, summary=self.summary, remedy=self.remedy)


class NodeResult(PullTestResult):
    """A node's pull test result as its agent answered it, plus the agent's URL."""

    agent: str


def _entry_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "result" if "pullcheck_version" in value else "failure"
    return "result" if isinstance(value, PullTestResult) else "failure"


#: one node of a fan-out: the agent's result, or why there is none
NodeEntry = Annotated[
    Annotated[NodeResult, Tag("result")] | Annotated[NodeFailure, Tag("failure")],
    Discriminator(_entry_kind),
]


class NodeConnectivity(ConnectivityAnswer):
    """A node's connectivity probes as its agent answered them, plus the agent's URL."""

    agent: str


ConnectivityEntry = NodeConnectivity | NodeFailure


# --- GET|POST /v1/pulltest ----------------------------------------------------------------------


class Summary(_Answer):
    """Over every node entry: how many, how many can pull, which failed why, which digests."""

    nodes: int
    ok: int
    failed: int
    by_cause: dict[str, list[str]]  # cause → node names (sorted), causes sorted
    digests: dict[str, list[str]]  # digest → node names (sorted)
    digest_drift: bool  # the tag resolved to more than one digest
    duration_ms: float


class PullTestAnswer(_Answer):
    """``GET|POST /v1/pulltest``: the summary and one entry per node, sorted by node."""

    image: str
    mode: Literal["pull", "resolve"] | None  # as asked (None: the agents' default)
    summary: Summary
    nodes: list[NodeEntry]


class SummaryLine(_Answer):
    """The last line of ``?stream=ndjson`` (every line before it is one node entry)."""

    summary: Summary


def _line_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "summary" if "summary" in value and "node" not in value else "node"
    return "summary" if isinstance(value, SummaryLine) else "node"


#: one line of ``?stream=ndjson``: a node's entry, or (last) the summary
StreamLine = Annotated[
    Annotated[NodeEntry, Tag("node")] | Annotated[SummaryLine, Tag("summary")],
    Discriminator(_line_kind),
]


# --- GET /v1/connectivity -----------------------------------------------------------------------


class MatrixColumn(_Answer):
    registry: str
    url: str
    role: str


class MatrixCell(_Answer):
    success: bool
    cause: Cause | None
    summary: str


class ReachableRow(_Answer):
    node: str
    reachable: Literal[True] = True
    cells: dict[str, MatrixCell]  # column url → what the node's probes found


class UnreachableRow(_Answer):
    node: str
    reachable: Literal[False] = False
    cause: AggregatorCause | Cause
    summary: str
    remedy: str
    status: int | None


class MatrixSummary(_Answer):
    nodes: int
    unreachable: list[str]
    failing: dict[str, list[str]]  # column url → nodes whose probes of it failed


class ConnectivityMatrix(_Answer):
    """``GET /v1/connectivity``: rows = nodes, columns = registry endpoints (runtime order)."""

    columns: list[MatrixColumn]
    rows: list[Annotated[ReachableRow | UnreachableRow, Field(discriminator="reachable")]]
    summary: MatrixSummary


# --- agents, readiness, leadership --------------------------------------------------------------


class AgentState(StrEnum):
    """An agent's readiness as the aggregator last saw it (:mod:`agent.cluster.readiness`)."""

    UNKNOWN = "unknown"  # not asked yet
    READY = "ready"  # /readyz answered 200 {"ready": true}: the runtime answers over CRI
    UNREADY = "unready"  # it answered {"ready": false}: the runtime is down
    UNREACHABLE = "unreachable"  # no answer, or not a pullcheck agent's answer


class AgentEntry(_Answer):
    node: str
    url: str
    state: AgentState
    reason: str = Field(default="", exclude_if=_omitted_when_empty)  # why it is not ready


class AgentList(_Answer):
    """``GET /v1/agents``: the agents discovery currently knows, with their readiness."""

    agents: list[AgentEntry]
    last_error: str | None


class LeaderDetail(_Answer):
    """Which replica leads the scheduled work, as this one knows it."""

    mode: Literal["lease", "always"]
    identity: str
    leading: bool
    leader: str | None
    leader_url: str | None
    error: str | None


class AggregatorHealth(_Answer):
    """``GET /healthz``: the process is alive."""

    status: Literal["ok"] = "ok"


class AggregatorReady(_Answer):
    """``GET /readyz``: ready (200) once discovery has found an agent, else 503."""

    ready: bool
    agents: int
    error: str | None
    leader: LeaderDetail


# --- pre-pull jobs (answered by the leader, possibly forwarded) ---------------------------------


class JobList(_Answer):
    """``GET /v1/prepull/jobs``: every job with its schedule and progress (``nodes`` empty)."""

    jobs: list[JobStatus]
    jobs_file: str
    version: int  # accepted changes of the job file
    error: str | None  # why the job file on disk was rejected (the previous jobs run)
    leader: str  # the replica that answered: the leader
    forwarded_by: str = Field(default="", exclude_if=_omitted_when_empty)  # see the module doc


class JobDetail(JobStatus):
    """``GET /v1/prepull/jobs/{name}``: one job, per node and image."""

    leader: str
    forwarded_by: str = Field(default="", exclude_if=_omitted_when_empty)


class JobStarted(_Answer):
    """``POST /v1/prepull/jobs/{name}/run`` (202)."""

    job: str
    started: Literal[True] = True
    leader: str
    forwarded_by: str = Field(default="", exclude_if=_omitted_when_empty)


class ForwardedError(ErrorAnswer):
    """An error of the job routes; one the leader answered to a forwarded request names the
    leader and the replica that forwarded it."""

    leader: str = Field(default="", exclude_if=_omitted_when_empty)
    forwarded_by: str = Field(default="", exclude_if=_omitted_when_empty)


# --- the failures -------------------------------------------------------------------------------

_MESSAGE_LIMIT = 300  # characters of the agent's error message kept in a summary

_AGENT_POD = (
    "kubectl get pods -A -l app.kubernetes.io/component=agent -o wide "
    "--field-selector spec.nodeName={node}"
)

# the agent's error kind → what to check (agent/node/app.py and agent/service/http.py raise them)
_REFUSED_BY_KIND: Final = {
    "unauthorized": (
        "the agent refused the aggregator's bearer token: aggregator and agents must mount the "
        "same token (Secret pullcheck-token, token_file); after a rotation both re-read it"
    ),
    "not_allowed": (
        "the agent's allowlist (allow) refuses this image: aggregator and agents should read "
        "the same config (ConfigMap pullcheck-config)"
    ),
    "read_only": (
        "the agent is read-only (read_only: true): use mode=resolve, or give aggregator and "
        "agents the same config"
    ),
    "queue_full": (
        "the node is busy with other pull tests (limits.pull_concurrency, limits.pull_queue): "
        "retry later or raise the limits"
    ),
    "rate_limited": (
        "the agent's per-client rate limit refused the aggregator "
        "(limits.rate_limit_per_minute, rate_limit_burst): retry later or raise the limits"
    ),
    "bad_request": (
        "the agent rejected the request (e.g. a timeout over its limits.max_timeout): "
        "aggregator and agents should run the same version with the same config"
    ),
    "invalid_reference": "fix the image reference",
    "invalid_credentials": "fix the credentials sent with the test (creds, auth, docker_config)",
    "body_too_large": "the request is over the agent's limits.max_body_bytes",
    "runtime_unavailable": (
        "the node's container runtime does not answer over CRI: check containerd on the node "
        "(systemctl status containerd) and the agent's runtime_endpoint"
    ),
    PLAIN_HTTP_CREDENTIALS: (
        "serve the agents over HTTPS (agent.tls_cert_file/tls_key_file, "
        "aggregator.agent_tls, discovery.agent_scheme: https; components/agent-tls), or accept "
        "credentials in clear text on the cluster network: "
        "aggregator.allow_plain_http_credentials: true"
    ),
}
_REFUSED_BY_STATUS: Final = {
    401: _REFUSED_BY_KIND["unauthorized"],
    403: "the agent's allowlist (allow) or read_only refuses this test: share one config",
    413: "the image is over the agent's limits.max_image_size",
    429: "the agent is busy or rate-limits the aggregator: retry later or raise its limits",
    507: "the node's image filesystem has less free space than limits.min_free_space",
}


def unreachable(
    node: str, agent: str, reason: str, *, status: int | None = None, not_an_agent: bool = False
) -> NodeFailure:
    """No usable answer from ``agent``: ``reason`` says what happened (``not_an_agent``: something
    answered, but not as a pullcheck agent does)."""
    if not_an_agent:
        remedy = (
            f"something other than a pullcheck agent answers at {agent}: check the agent port "
            "(discovery.agent_port, agent.listen) and what else listens there on the node"
        )
    else:
        remedy = (
            f"check the pullcheck agent pod on node {node} ({_AGENT_POD.format(node=node)}): "
            f"is it running and ready, what do its logs say; and that the aggregator can reach "
            f"{agent} (NetworkPolicy, node firewall, security groups)"
        )
    return NodeFailure(
        node=node,
        agent=agent,
        cause=AggregatorCause.AGENT_UNREACHABLE,
        summary=reason,
        remedy=remedy,
        status=status,
    )


def refused(node: str, agent: str, status: int, error: str, message: str) -> NodeFailure:
    """The agent answered ``status`` with ``{"error": error, "message": message}``."""
    text = " ".join(message.split())[:_MESSAGE_LIMIT]
    remedy = _REFUSED_BY_KIND.get(error) or _REFUSED_BY_STATUS.get(status)
    if remedy is None:
        remedy = (
            f"the agent on node {node} failed: see its logs ({_AGENT_POD.format(node=node)})"
            if status >= 500
            else f"the agent on node {node} refused the request: see the message"
        )
    return NodeFailure(
        node=node,
        agent=agent,
        cause=AggregatorCause.AGENT_REFUSED,
        summary=f"the agent answered HTTP {status} {error}" + (f": {text}" if text else ""),
        remedy=remedy,
        status=status,
        error=error,
    )


def failed_call(node: str, agent: str, failure: CallFailure) -> NodeFailure:
    """The node entry for a call to ``agent`` that got no usable answer."""
    if failure.kind is FailureKind.REFUSED and failure.status is None:  # by the aggregator
        return NodeFailure(
            node=node,
            agent=agent,
            cause=AggregatorCause.AGENT_REFUSED,
            summary=f"node {node}: {failure.message}"[:_MESSAGE_LIMIT],
            remedy=_REFUSED_BY_KIND.get(failure.error or "", "see the message"),
            error=failure.error,
        )
    if failure.kind is FailureKind.REFUSED and failure.status is not None:
        return refused(node, agent, failure.status, failure.error or "", failure.message)
    garbage = failure.kind is FailureKind.GARBAGE
    return unreachable(node, agent, failure.message, status=failure.status, not_an_agent=garbage)


def not_ready(node: str, agent: str, reason: str) -> NodeFailure:
    """The agent answers but is not ready: its node's container runtime does not (``reason``)."""
    summary = "the agent is up but not ready" + (f": {reason}" if reason else "")
    return NodeFailure(
        node=node,
        agent=agent,
        cause=Cause.RUNTIME_UNAVAILABLE,
        summary=summary[:_MESSAGE_LIMIT],
        remedy=_REFUSED_BY_KIND["runtime_unavailable"],
    )


def not_found(node: str, known: int, discovery_mode: str) -> NodeFailure:
    """``node`` was asked for by name; discovery (``discovery_mode``) knows ``known`` others."""
    summary = f"discovery ({discovery_mode}) knows no agent on node {node!r} ({known} agents found)"
    remedy = (
        f"check the node name (kubectl get nodes), that a pullcheck agent runs on it "
        f"({_AGENT_POD.format(node=node)}; DaemonSet nodeSelector and tolerations) and that "
        "discovery lists it (GET /v1/agents)"
    )
    return NodeFailure(
        node=node, agent="", cause=AggregatorCause.NODE_NOT_FOUND, summary=summary, remedy=remedy
    )
