"""The pull test of a pod's image on the pod's node with the pod's own pull secrets.

The aggregator reads the Secrets itself (:func:`agent.pods.secrets.pull_secrets`: the pod's
``imagePullSecrets``, then its ServiceAccount's, under kubelet's rules), so they never pass
through an operator's terminal. The keyring lives for one test: it is turned into the body of
the agent's ``POST /v1/pulltest`` (one Secret per credential in a ``List``, in kubelet's
matching order, so the agent tries them in the same order), sent only to an ``https://`` agent
unless ``aggregator.allow_plain_http_credentials`` (:class:`~agent.cluster.client.AgentClient`),
and dropped. Errors name what is wrong (no agent on the node, a refused read, a refused send),
never a secret.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from agent.cluster.client import AgentClient, CallFailure
from agent.cluster.discovery import AgentTarget
from agent.cluster.models import failed_call
from agent.cluster.pods.models import ContainerPullTest
from agent.credentials import Keyring
from agent.models import PullTestResult
from agent.node.models import PullTestBody
from agent.redaction import redact_text
from agent.reference import InvalidReference, parse

__all__ = ["NodeTester", "container_test", "keyring_body"]

_NODE_GRACE: Final = 5.0  # seconds a node may take beyond the test's own timeout
_ERROR_LIMIT: Final = 500

Targets = Callable[[set[str]], Awaitable[tuple[list[AgentTarget], list[str]]]]


def keyring_body(keyring: Keyring) -> dict[str, Any] | None:
    """The ``docker_config`` of an agent's ``POST /v1/pulltest`` holding ``keyring``'s
    credentials in its matching order (None: no credential). Built for one request."""
    items = []
    for number, (key, credential) in enumerate(keyring.items()):
        entry = {"username": credential.username, "password": credential.password}
        if credential.identity_token:
            entry["identitytoken"] = credential.identity_token
        config = json.dumps({"auths": {key: entry}})
        items.append(
            {
                "kind": "Secret",
                "apiVersion": "v1",
                "type": "kubernetes.io/dockerconfigjson",
                "metadata": {"name": _source_name(credential.source, number)},
                "stringData": {".dockerconfigjson": config},
            }
        )
    return {"kind": "List", "apiVersion": "v1", "items": items} if items else None


def _source_name(source: str, number: int) -> str:
    """A label for where a credential came from (the Secret's name as the reader gave it)."""
    cleaned = "".join(c if c.isalnum() or c in "-./[]:" else "-" for c in source)[:200]
    return cleaned or f"credential-{number}"


@dataclass(frozen=True)
class NodeTester:
    """Runs one pull test on the agent of a named node."""

    client: AgentClient
    targets: Targets
    label: Callable[[AgentTarget], str]
    mode: str  # "pull", or "resolve" when pullcheck is read-only
    timeout: float

    async def run(self, node: str, image: str, keyring: Keyring | None) -> PullTestResult | str:
        """The node's result, or one line saying why there is none."""
        try:
            parse(image)
        except InvalidReference as exc:
            return f"{image!r} is not a valid image reference: {exc.reason}"
        if not node:
            return "the pod is not scheduled to a node yet"
        found, missing = await self.targets({node})
        if missing or not found:
            return f"no pullcheck agent found on node {node} (does the agent DaemonSet run there?)"
        target = found[0]
        body = PullTestBody(
            image=image,
            mode="pull" if self.mode == "pull" else "resolve",
            timeout=self.timeout,
            docker_config=keyring_body(keyring) if keyring is not None else None,
        )
        answer = await self.client.pulltest(
            target.url, body, deadline=self.timeout + _NODE_GRACE, post=True
        )
        del body  # the credentials go no further than this request
        if isinstance(answer, CallFailure):
            entry = failed_call(self.label(target), target.url, answer)
            return redact_text(f"{entry.summary} — {entry.remedy}")[:_ERROR_LIMIT]
        return answer


def container_test(container: str, image: str, outcome: PullTestResult | str) -> ContainerPullTest:
    """One container's entry of a pod's tests: the result, or why there is none."""
    if isinstance(outcome, str):
        return ContainerPullTest(container=container, image=image, error=outcome)
    return ContainerPullTest(container=container, image=image, result=outcome)
