"""``imagePullPolicy`` against the images a node holds: the local-cluster traps.

The runbooks this project grew from keep finding the same four in kind, minikube and k3d:

* an image loaded onto the node by hand (``kind load``, ``minikube image load``) while the policy
  is ``Always`` — kubelet goes to the registry anyway and fails there;
* ``Never`` with the image absent on the pod's node (and which nodes do have it);
* the wanted tag absent while the node holds the same repository under other tags
  (``:v1.0.0`` wanted, ``:dev`` present);
* an image without tag: kubelet pulls ``:latest`` and the API server defaults the policy to
  ``Always``.

Images are compared in containerd's normalised form (``docker.io/library/nginx:latest``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from agent.cri.types import ImageInfo
from agent.pods._text import listing
from agent.pods.waiting import Waiting
from agent.reference import InvalidReference, Reference, parse

__all__ = ["PolicyFinding", "check_policy"]

PolicyKind = Literal[
    "always_with_local_image",
    "never_absent",
    "tag_absent_other_tags",
    "implicit_latest",
    "images_unknown",
]


@dataclass(frozen=True)
class PolicyFinding:
    kind: PolicyKind
    summary: str
    remedy: str
    nodes: tuple[str, ...] = ()  # nodes that hold the image (never_absent)
    tags: tuple[str, ...] = ()  # the repository's other tags on the node


def _held(reference: Reference, images: Sequence[ImageInfo]) -> tuple[bool, list[str]]:
    """Whether ``images`` hold ``reference``, and the repository's other tags there."""
    wanted = reference.normalized
    other: list[str] = []
    for image in images:
        if wanted in image.repo_tags or wanted in image.repo_digests:
            return True, []
        for tag in image.repo_tags:
            repository, _, name = tag.rpartition(":")
            if repository == reference.name and "/" not in name:
                other.append(name)
    return False, sorted(set(other))


def check_policy(
    waiting: Waiting, node: str, images: Mapping[str, Sequence[ImageInfo]] | None
) -> list[PolicyFinding]:
    """The policy traps for ``waiting`` on ``node``; ``images``: node → its images (None:
    unknown, the checks that need them say so)."""
    try:
        reference = parse(waiting.image)
    except InvalidReference:
        return []
    found: list[PolicyFinding] = []
    if reference.tag is None and reference.digest is None:
        found.append(
            PolicyFinding(
                "implicit_latest",
                f"{waiting.image} has no tag: kubelet pulls {reference.kubelet_image}, and the "
                f"policy defaults to Always for it (policy here: {waiting.policy or 'unset'})",
                "pin a tag or a digest so every node runs the same image",
            )
        )
    if images is None or node not in images:
        found.append(
            PolicyFinding(
                "images_unknown",
                f"imagePullPolicy {waiting.policy or 'unset'} not checked against the images on "
                f"{node or 'the node'}: that needs the node's image list from an aggregator",
                "pass --aggregator URL (the aggregator asks the node's agent)",
            )
        )
        return found
    present, other_tags = _held(reference, images[node])
    if present and waiting.policy == "Always":
        found.append(
            PolicyFinding(
                "always_with_local_image",
                f"{reference.normalized} is on node {node} (loaded by hand? kind load, minikube "
                "image load), but imagePullPolicy is Always, so kubelet asks the registry anyway",
                "set imagePullPolicy: IfNotPresent (or Never) to use the image on the node",
            )
        )
    if not present and waiting.policy == "Never":
        holders = sorted(n for n, held in images.items() if n != node and _held(reference, held)[0])
        where = f"nodes that have it: {listing(holders)}" if holders else "no node has it"
        found.append(
            PolicyFinding(
                "never_absent",
                f"imagePullPolicy is Never and {reference.normalized} is not on node {node} "
                f"({where})",
                "load the image onto that node (kind load docker-image / minikube image load), "
                "or schedule the pod where it is, or allow pulls (IfNotPresent)",
                nodes=tuple(holders),
            )
        )
    if not present and other_tags:
        found.append(
            PolicyFinding(
                "tag_absent_other_tags",
                f"node {node} holds {reference.name} as {listing([f':{t}' for t in other_tags])}"
                f" but not :{reference.tag or 'latest'}",
                f"use one of the tags the node has, or load :{reference.tag or 'latest'} too",
                tags=tuple(other_tags),
            )
        )
    return found
