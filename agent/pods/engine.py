"""A pod's image-pull failures, container by container: gather from the API, then judge.

:func:`gather` reads as the caller: the pod (a failure here ends the diagnosis), then — only
when a container waits on its image — the pod's Events and its pull secrets; a read that is
refused becomes a note naming the missing permission and the rest goes on. :func:`judge` is
pure: it sets each waiting container's message (explained offline), its failure history, its
pull secrets, its ``imagePullPolicy`` against the node's images and, when an aggregator ran one,
the pull test on the pod's node, and names one verdict per container, the most direct evidence
first: the pull test, then a pull secret that cannot work for the image, then a policy trap,
then kubelet's own message.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lightkube.resources.core_v1 import Event, Pod

from agent.cluster.pods.models import ContainerPullTest
from agent.cri.types import ImageInfo
from agent.kube.client import KubeApiError, KubeReader
from agent.pods import events as pod_events
from agent.pods.explain_text import explain_message
from agent.pods.models import (
    ContainerReport,
    Explained,
    History,
    ImageSecretsReport,
    PodReport,
    PolicyReport,
    SecretReport,
)
from agent.pods.policy import PolicyFinding, check_policy
from agent.pods.secrets import ImageSecrets, SecretsCheck, pull_secrets
from agent.pods.waiting import Waiting, waiting_on_pull
from agent.redaction import redact_text

__all__ = ["PodFacts", "facts_of", "gather", "judge"]

# causes a pull secret that cannot work would explain
_AUTH_CAUSES = frozenset({"unauthorized", "forbidden", "repository_not_found", "unknown"})
_NOT_PULLED = frozenset({"InvalidImageName", "ErrImageNeverPull"})


@dataclass(frozen=True)
class PodFacts:
    """What the API says about one pod, read as the caller."""

    pod: Pod
    waiting: list[Waiting]
    events: list[Event]
    secrets: SecretsCheck | None
    notes: list[str]

    @property
    def namespace(self) -> str:
        return (self.pod.metadata.namespace if self.pod.metadata else None) or ""

    @property
    def name(self) -> str:
        return (self.pod.metadata.name if self.pod.metadata else None) or ""

    @property
    def node(self) -> str:
        return (self.pod.spec.nodeName if self.pod.spec else None) or ""


async def gather(reader: KubeReader, namespace: str, name: str) -> PodFacts:
    """The pod, and for a pod waiting on an image its Events and pull secrets."""
    return await facts_of(reader, await reader.get_pod(namespace, name))


async def facts_of(reader: KubeReader, pod: Pod, *, detailed: bool = True) -> PodFacts:
    """For a pod already read: its Events and pull secrets when a container waits on an image
    (``detailed`` False: kubelet's messages only, no further reads)."""
    waiting = waiting_on_pull(pod.to_dict())
    if not waiting or not detailed:
        return PodFacts(pod, waiting, [], None, [])
    notes: list[str] = []
    found: list[Event] = []
    try:
        found = await reader.pod_events(pod)
    except KubeApiError as exc:
        notes.append(f"failure counts not read: {exc}")
    secrets = await pull_secrets(pod, reader)
    notes.extend(secrets.notes)
    return PodFacts(pod, waiting, found, secrets, notes)


def _last_pull_error(events: list[Event], waiting: Waiting) -> str:
    """The newest ``Failed to pull image`` text for this container (the back-off hides it)."""
    path = waiting.field_path
    failed = [
        e
        for e in events
        if e.involvedObject.fieldPath == path
        and e.reason == "Failed"
        and (e.message or "").startswith("Failed to pull image")
    ]
    failed.sort(
        key=lambda e: e.lastTimestamp or e.firstTimestamp or dt.datetime.min.replace(tzinfo=dt.UTC)
    )
    return failed[-1].message or "" if failed else ""


def _explained(waiting: Waiting, events: list[Event]) -> Explained | None:
    text = waiting.message
    if waiting.reason == "ImagePullBackOff" and "ErrImagePull:" not in text:
        text = _last_pull_error(events, waiting) or text
    finding = explain_message(f"{waiting.reason}: {text}" if text else waiting.reason)
    if finding is None:
        return None
    return Explained(
        cause=str(finding.cause),
        summary=finding.summary,
        remedy=finding.remedy,
        fragment=finding.fragment,
    )


def _history(events: list[Event], waiting: Waiting) -> History:
    seen = pod_events.history(events, waiting.container, waiting.init)
    span = None
    if seen.first_seen and seen.last_seen:
        span = max((seen.last_seen - seen.first_seen).total_seconds(), 0.0)
    return History(
        failures=seen.failures,
        first_seen=seen.first_seen,
        last_seen=seen.last_seen,
        failing_for_s=span,
        from_backoffs=seen.from_backoffs,
    )


def _secret_verdict(secrets: SecretsCheck, image: ImageSecrets) -> tuple[str, str] | None:
    """Summary and remedy when the pod's pull secrets cannot work for the image."""
    broken = [s for s in secrets.problems if s.status in ("missing", "wrong_type", "undecodable")]
    if image.status == "no_match":
        names = ", ".join(secrets.usable) or "(a pull secret)"
        return (
            f"no entry of the pod's pull secrets matches {image.registry}: {image.detail}",
            f"{image.fix} in Secret {names} in namespace {secrets.namespace}",
        )
    if image.status == "no_secrets" and broken:
        first = broken[0]
        return (f'pull secret "{first.name}": {first.detail}', "fix the pull secret named above")
    return None


def _verdict(
    waiting: Waiting,
    node: str,
    explained: Explained | None,
    secrets: SecretsCheck | None,
    image: ImageSecrets | None,
    policy: list[PolicyFinding],
    test: ContainerPullTest | None,
) -> tuple[str, str, str]:
    result = test.result if test is not None else None
    if waiting.reason in _NOT_PULLED:  # kubelet does not pull: a pull test is evidence only
        cause, summary, remedy = _not_pulled_verdict(waiting, explained, policy)
        if result is not None and result.success:
            remedy += f" (a pull test on {node} works, so allowing pulls would fix it)"
        return cause, summary, remedy
    if result is not None:
        if result.success:
            return (
                "ok",
                f"a pull test on {node} with the pod's pull secrets worked now: {result.summary}",
                "kubelet's next retry should work; if not, compare the node's credentials",
            )
        return str(result.cause or "unknown"), result.summary, result.remedy
    kinds = {p.kind: p for p in policy}
    cause = explained.cause if explained else "unknown"
    if secrets is not None and image is not None and cause in _AUTH_CAUSES:
        found = _secret_verdict(secrets, image)
        if found is not None:
            return "unauthorized" if cause == "unknown" else cause, *found
    summary = explained.summary if explained else f"{waiting.reason}: {waiting.message}"
    remedy = explained.remedy if explained else "see kubelet's message above"
    if "always_with_local_image" in kinds:
        trap = kinds["always_with_local_image"]
        summary, remedy = f"{summary} ({trap.summary})", f"{trap.remedy}; or {remedy}"
    elif "tag_absent_other_tags" in kinds and cause in ("manifest_not_found", "image_never_pull"):
        trap = kinds["tag_absent_other_tags"]
        summary, remedy = f"{summary} ({trap.summary})", trap.remedy
    return cause, summary, remedy


def _not_pulled_verdict(
    waiting: Waiting, explained: Explained | None, policy: list[PolicyFinding]
) -> tuple[str, str, str]:
    never = next((p for p in policy if p.kind == "never_absent"), None)
    if never is not None:
        return "image_never_pull", never.summary, never.remedy
    if explained is not None:
        return explained.cause, explained.summary, explained.remedy
    cause = "image_never_pull" if waiting.reason == "ErrImageNeverPull" else "invalid_reference"
    return cause, f"{waiting.reason}: {waiting.message}", "see kubelet's message above"


def _image_secrets(image: ImageSecrets) -> ImageSecretsReport:
    return ImageSecretsReport(
        registry=image.registry,
        status=image.status,
        matched=list(image.matched),
        detail=image.detail,
        fix=image.fix,
    )


def _secrets_for(waiting: Waiting, secrets: SecretsCheck | None) -> ImageSecrets:
    if waiting.reason in _NOT_PULLED:
        why = "the name does not parse" if waiting.reason == "InvalidImageName" else "policy Never"
        detail = f"not used: kubelet does not pull ({why})"
        return ImageSecrets(waiting.image, "", "not_pulled", (), detail, "")
    if secrets is None:
        return ImageSecrets(waiting.image, "", "no_secrets", (), "pull secrets not read", "")
    return secrets.for_image(waiting.image)


def judge(
    facts: PodFacts,
    *,
    images: Mapping[str, Sequence[ImageInfo]] | None = None,
    tests: Mapping[str, ContainerPullTest] | None = None,
    test_error: str = "",
    aggregator: str | None = None,
    extra_notes: Sequence[str] = (),
) -> PodReport:
    """The report for ``facts``; ``images``: node → images (None: no aggregator); ``tests``:
    container → the aggregator's pull test on the pod's node."""
    node = facts.node
    containers = []
    for waiting in facts.waiting:
        explained = _explained(waiting, facts.events)
        secrets = facts.secrets
        image = _secrets_for(waiting, secrets)
        policy = check_policy(waiting, node, images) if node else []
        test = (tests or {}).get(waiting.container)
        cause, summary, remedy = _verdict(waiting, node, explained, secrets, image, policy, test)
        error = test.error if test is not None else test_error
        containers.append(
            ContainerReport(
                container=waiting.container,
                init=waiting.init,
                image=waiting.image,
                image_pull_policy=waiting.policy,
                reason=waiting.reason,
                message=redact_text(waiting.message),
                cause=cause,
                summary=summary,
                remedy=remedy,
                history=_history(facts.events, waiting),
                explanation=explained,
                policy=[
                    PolicyReport(
                        kind=p.kind,
                        summary=p.summary,
                        remedy=p.remedy,
                        nodes=list(p.nodes),
                        tags=list(p.tags),
                    )
                    for p in policy
                ],
                pull_secrets=_image_secrets(image),
                pull_test=test.result if test is not None else None,
                pull_test_error=error,
            )
        )
    checked = facts.secrets.secrets if facts.secrets else ()
    pod = facts.pod
    return PodReport(
        success=not containers,
        namespace=facts.namespace,
        pod=facts.name,
        node=node,
        phase=(pod.status.phase if pod.status else None) or "",
        service_account=(pod.spec.serviceAccountName if pod.spec else None) or "default",
        containers=containers,
        pull_secrets=[
            SecretReport(
                name=s.name, status=s.status, detail=s.detail, type=s.type, registries=list(s.keys)
            )
            for s in checked
        ],
        notes=[*facts.notes, *extra_notes],
        aggregator=aggregator,
    )
