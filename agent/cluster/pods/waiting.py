"""Which containers of a pod wait on an image pull, read from the pod as the API sends it.

Works on the raw JSON object (a watch of every pod in a cluster decodes nothing it does not
need): ``status.initContainerStatuses`` then ``status.containerStatuses`` whose
``state.waiting.reason`` is one kubelet sets for a pull (``ErrImagePull``, ``ImagePullBackOff``,
``InvalidImageName``, ``ErrImageNeverPull``), with the image from the pod's spec (what kubelet
pulls; the status may name a resolved one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

__all__ = ["PULL_REASONS", "PodKey", "Waiting", "node_of", "pod_key", "waiting_on_pull"]

#: kubelet's waiting reasons of a container whose image is not there (pkg/kubelet/images)
PULL_REASONS: Final = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
_MAX_CONTAINERS: Final = 256  # per pod, of each kind (a pod spec has far fewer)
_MAX_TEXT: Final = 1024  # characters of an image or message kept

Json = dict[str, Any]


@dataclass(frozen=True)
class PodKey:
    namespace: str
    name: str


@dataclass(frozen=True)
class Waiting:
    """One container waiting on its image."""

    container: str
    image: str
    reason: str
    message: str  # kubelet's message (the runtime's error), bounded
    init: bool


def pod_key(pod: Json) -> PodKey | None:
    metadata = pod.get("metadata")
    if not isinstance(metadata, dict):
        return None
    namespace, name = metadata.get("namespace"), metadata.get("name")
    if not (isinstance(namespace, str) and isinstance(name, str) and namespace and name):
        return None
    return PodKey(namespace, name)


def waiting_on_pull(pod: Json) -> list[Waiting]:
    """The pod's containers waiting on a pull, init containers first."""
    spec = _dict(pod.get("spec"))
    status = _dict(pod.get("status"))
    found: list[Waiting] = []
    for statuses, containers, init in (
        ("initContainerStatuses", "initContainers", True),
        ("containerStatuses", "containers", False),
    ):
        images = _images(spec.get(containers))
        for entry in _list(status.get(statuses)):
            state = entry.get("state")
            waiting = state.get("waiting") if isinstance(state, dict) else None
            reason = waiting.get("reason") if isinstance(waiting, dict) else None
            name = entry.get("name")
            if reason not in PULL_REASONS or not isinstance(name, str) or not name:
                continue
            assert isinstance(waiting, dict) and isinstance(reason, str)
            image = images.get(name) or entry.get("image")
            if not isinstance(image, str) or not image:
                continue
            message = waiting.get("message")
            found.append(
                Waiting(
                    container=name[:_MAX_TEXT],
                    image=image[:_MAX_TEXT],
                    reason=reason,
                    message=(message if isinstance(message, str) else "")[:_MAX_TEXT],
                    init=init,
                )
            )
    return found


def node_of(pod: Json) -> str:
    spec = pod.get("spec")
    node = spec.get("nodeName") if isinstance(spec, dict) else None
    return node if isinstance(node, str) else ""


def _dict(value: Any) -> Json:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Json]:
    if not isinstance(value, list):
        return []
    return [item for item in value[:_MAX_CONTAINERS] if isinstance(item, dict)]


def _images(containers: Any) -> dict[str, str]:
    return {
        c["name"]: c["image"]
        for c in _list(containers)
        if isinstance(c.get("name"), str) and isinstance(c.get("image"), str)
    }
