"""Which containers of a pod wait on an image pull, read from the pod as the API sends it.

One rule for the CLI (``pod.to_dict()`` of a lightkube ``Pod``) and the aggregator's watch (the
raw JSON object: a watch of every pod in a cluster decodes nothing it does not need):
``status.initContainerStatuses`` then ``status.containerStatuses`` (kubelet starts init
containers first) whose ``state.waiting.reason`` is one kubelet sets for a pull
(``ErrImagePull``, ``ImagePullBackOff``, ``InvalidImageName``, ``ErrImageNeverPull``), with the
image and ``imagePullPolicy`` from the pod's spec (what kubelet pulls; the status may name a
resolved image). Hostile input is bounded: at most ``_MAX_CONTAINERS`` of each kind, names,
images and messages cut at ``_MAX_TEXT`` characters, anything of the wrong JSON type ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "PULL_REASONS",
    "Json",
    "PodKey",
    "Waiting",
    "field_path",
    "node_of",
    "pod_key",
    "waiting_on_pull",
]

#: kubelet's waiting reasons of a container whose image is not there (pkg/kubelet/images)
PULL_REASONS: Final = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
_MAX_CONTAINERS: Final = 256  # per pod, of each kind (a pod spec has far fewer)
_MAX_TEXT: Final = 1024  # characters of a name, an image or a message kept

Json = dict[str, Any]


@dataclass(frozen=True)
class PodKey:
    namespace: str
    name: str


@dataclass(frozen=True)
class Waiting:
    """One container waiting on its image, with what kubelet wrote about it."""

    container: str
    init: bool
    image: str  # as the pod spec writes it
    policy: str  # imagePullPolicy as stored ("" when the API server left it out)
    reason: str
    message: str  # kubelet's message (the runtime's error), bounded

    @property
    def field_path(self) -> str:
        return field_path(self.container, self.init)


def field_path(container: str, init: bool) -> str:
    """The ``involvedObject.fieldPath`` kubelet's Events give a container:
    ``spec.containers{web}``, ``spec.initContainers{setup}``."""
    return f"spec.{'initContainers' if init else 'containers'}{{{container}}}"


def pod_key(pod: Json) -> PodKey | None:
    metadata = pod.get("metadata")
    if not isinstance(metadata, dict):
        return None
    namespace, name = metadata.get("namespace"), metadata.get("name")
    if not (isinstance(namespace, str) and isinstance(name, str) and namespace and name):
        return None
    return PodKey(namespace, name)


def node_of(pod: Json) -> str:
    node = _dict(pod.get("spec")).get("nodeName")
    return node if isinstance(node, str) else ""


def waiting_on_pull(pod: Json) -> list[Waiting]:
    """The pod's containers waiting on a pull: init containers first, each kind in status
    order (kubelet writes the statuses in spec order)."""
    spec = _dict(pod.get("spec"))
    status = _dict(pod.get("status"))
    found: list[Waiting] = []
    for statuses, containers, init in (
        ("initContainerStatuses", "initContainers", True),
        ("containerStatuses", "containers", False),
    ):
        specs = _specs(spec.get(containers))
        for entry in _list(status.get(statuses)):
            waiting = _dict(_dict(entry.get("state")).get("waiting"))
            reason, name = waiting.get("reason"), entry.get("name")
            if reason not in PULL_REASONS or not isinstance(name, str) or not name:
                continue
            container = specs.get(name, {})
            image = _text(container.get("image")) or _text(entry.get("image"))
            if not image:
                continue
            found.append(
                Waiting(
                    container=name[:_MAX_TEXT],
                    init=init,
                    image=image,
                    policy=_text(container.get("imagePullPolicy")),
                    reason=str(reason),
                    message=_text(waiting.get("message")),
                )
            )
    return found


def _dict(value: Any) -> Json:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Json]:
    if not isinstance(value, list):
        return []
    return [item for item in value[:_MAX_CONTAINERS] if isinstance(item, dict)]


def _text(value: Any) -> str:
    return value[:_MAX_TEXT] if isinstance(value, str) else ""


def _specs(containers: Any) -> dict[str, Json]:
    return {c["name"]: c for c in _list(containers) if isinstance(c.get("name"), str)}
