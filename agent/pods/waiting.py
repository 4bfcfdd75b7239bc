"""The containers kubelet holds waiting on an image, read from a pod's status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from lightkube.models.core_v1 import Container, ContainerStatus
from lightkube.resources.core_v1 import Pod

__all__ = ["PULL_REASONS", "Waiting", "waiting_on_pull"]

#: kubelet's waiting reasons for a container whose image it could not get
PULL_REASONS: Final = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
_MAX_MESSAGE = 16_384


@dataclass(frozen=True)
class Waiting:
    """One container waiting on its image, with what kubelet wrote about it."""

    container: str
    init: bool
    image: str  # as the pod spec writes it
    policy: str  # imagePullPolicy as stored ("" when the API server left it out)
    reason: str
    message: str


def _from(
    specs: list[Container] | None, statuses: list[ContainerStatus] | None, init: bool
) -> list[Waiting]:
    by_name = {c.name: c for c in specs or []}
    found = []
    for status in statuses or []:
        waiting = status.state.waiting if status.state else None
        if waiting is None or waiting.reason not in PULL_REASONS:
            continue
        spec = by_name.get(status.name)
        found.append(
            Waiting(
                container=status.name,
                init=init,
                image=(spec.image if spec and spec.image else status.image) or "",
                policy=(spec.imagePullPolicy if spec else None) or "",
                reason=waiting.reason or "",
                message=(waiting.message or "")[:_MAX_MESSAGE],
            )
        )
    return found


def waiting_on_pull(pod: Pod) -> list[Waiting]:
    """Init containers first (kubelet starts them first), then the others, in spec order."""
    spec, status = pod.spec, pod.status
    if status is None:
        return []
    return [
        *_from(spec.initContainers if spec else None, status.initContainerStatuses, True),
        *_from(spec.containers if spec else None, status.containerStatuses, False),
    ]
