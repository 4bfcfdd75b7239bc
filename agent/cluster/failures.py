"""What the aggregator says about a node it could not get an answer from: cause, reason, remedy.

The aggregator's own causes, next to the engine's :class:`~agent.models.Cause` vocabulary:

``agent_unreachable``
    the node's agent did not answer (refused, timed out, reset) or something else answered
    (not a JSON object);
``agent_refused``
    the agent answered with an error status (401, 403, 413, 429, 507, …): ``status`` holds it and
    ``error`` the agent's error kind (``unauthorized``, ``not_allowed``, ``queue_full``, …);
``node_not_found``
    a node that was asked for by name (``nodes=a,b``) is not among the agents discovery knows.

Every failure is one node entry ``{node, agent, success: false, cause, summary, remedy, status,
error}``: ``summary`` is the reason in one line, ``remedy`` what to check. The pre-pull
coordinator reports the same failures for its pulls (:func:`outcome_fields`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from agent.models import Cause

__all__ = [
    "AGENT_REFUSED",
    "AGENT_UNREACHABLE",
    "NODE_NOT_FOUND",
    "NodeFailure",
    "not_found",
    "not_ready",
    "outcome_fields",
    "refused",
    "unreachable",
]

AGENT_UNREACHABLE: Final = "agent_unreachable"
AGENT_REFUSED: Final = "agent_refused"
NODE_NOT_FOUND: Final = "node_not_found"

_MESSAGE_LIMIT = 300  # characters of the agent's error message kept in a summary

_AGENT_POD = (
    "kubectl get pods -A -l app.kubernetes.io/component=agent -o wide "
    "--field-selector spec.nodeName={node}"
)

# the agent's error kind → what to check (agent/service/{agent_app,common}.py raise these)
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
}
_REFUSED_BY_STATUS: Final = {
    401: _REFUSED_BY_KIND["unauthorized"],
    403: "the agent's allowlist (allow) or read_only refuses this test: share one config",
    413: "the image is over the agent's limits.max_image_size",
    429: "the agent is busy or rate-limits the aggregator: retry later or raise its limits",
    507: "the node's image filesystem has less free space than limits.min_free_space",
}


@dataclass(frozen=True)
class NodeFailure:
    """One node the aggregator has no result for, and why."""

    node: str
    agent: str  # the agent's base URL ("" when there is none)
    cause: str
    summary: str
    remedy: str
    status: int | None = None  # the agent's HTTP status, when it answered
    error: str | None = None  # the agent's error kind, when it refused

    def entry(self) -> dict[str, Any]:
        """The node entry of a fan-out answer."""
        return {
            "node": self.node,
            "agent": self.agent,
            "success": False,
            "cause": self.cause,
            "summary": self.summary,
            "remedy": self.remedy,
            "status": self.status,
            "error": self.error,
        }


def unreachable(
    node: str, agent: str, reason: str, *, status: int | None = None, not_an_agent: bool = False
) -> NodeFailure:
    """No usable answer from ``agent``: ``reason`` says what happened (``not_an_agent``: something
    answered, but not with a JSON object)."""
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
    return NodeFailure(node, agent, AGENT_UNREACHABLE, reason, remedy, status=status)


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
    summary = f"the agent answered HTTP {status} {error}" + (f": {text}" if text else "")
    return NodeFailure(node, agent, AGENT_REFUSED, summary, remedy, status=status, error=error)


def not_ready(node: str, agent: str, reason: str) -> NodeFailure:
    """The agent answers but is not ready: its node's container runtime does not (``reason``)."""
    summary = "the agent is up but not ready" + (f": {reason}" if reason else "")
    remedy = _REFUSED_BY_KIND["runtime_unavailable"]
    cause = Cause.RUNTIME_UNAVAILABLE.value
    return NodeFailure(node, agent, cause, summary[:_MESSAGE_LIMIT], remedy)


def not_found(node: str, known: int, discovery_mode: str) -> NodeFailure:
    """``node`` was asked for by name; discovery (``discovery_mode``) knows ``known`` others."""
    summary = f"discovery ({discovery_mode}) knows no agent on node {node!r} ({known} agents found)"
    remedy = (
        f"check the node name (kubectl get nodes), that a pullcheck agent runs on it "
        f"({_AGENT_POD.format(node=node)}; DaemonSet nodeSelector and tolerations) and that "
        "discovery lists it (GET /v1/agents)"
    )
    return NodeFailure(node, "", NODE_NOT_FOUND, summary, remedy)


def outcome_fields(failure: NodeFailure) -> dict[str, Any]:
    """``cause``, ``summary`` and ``remedy`` of a failure, for a pre-pull outcome."""
    return {"cause": failure.cause, "summary": failure.summary, "remedy": failure.remedy}
