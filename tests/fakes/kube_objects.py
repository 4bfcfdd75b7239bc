"""Kubernetes objects as the API server stores them, for the fake API (:mod:`tests.fakes.kube_api`).

Each builder writes the shape a real cluster returns, with the source it was copied from:

* **Pod** (``core/v1``) — the Kubernetes API reference, "Pod v1 core" (``spec.containers[]``,
  ``initContainers[]``, ``imagePullSecrets``, ``serviceAccountName``, ``nodeName``;
  ``status.containerStatuses[]`` / ``initContainerStatuses[]`` with ``state.waiting{reason,
  message}``, ``image``, ``imageID``, ``ready``, ``restartCount``, ``started``), the defaults
  the API server fills in (``pkg/apis/core/v1/defaults.go``: ``imagePullPolicy`` ``Always`` for
  ``:latest`` or no tag, else ``IfNotPresent``; ``restartPolicy``, ``dnsPolicy``,
  ``schedulerName``, ``terminationMessagePath``…), and the waiting reasons and messages kubelet
  writes (``pkg/kubelet/images/image_manager.go`` and ``types.go``):

  - ``ErrImagePull`` — message: the CRI error text (``evalCRIPullErr`` falls back to
    ``err.Error()``), e.g. ``rpc error: code = NotFound desc = failed to pull and unpack image
    "…": failed to resolve reference "…": …: not found``;
  - ``ImagePullBackOff`` — ``Back-off pulling image "IMAGE"``, since 1.31 followed by
    ``: ErrImagePull: <the last pull error>`` (``prevPullErrMsg``);
  - ``InvalidImageName`` — ``Failed to apply default image tag "IMAGE": couldn't parse image
    name "IMAGE": invalid reference format…`` (``applyDefaultImageTag``);
  - ``ErrImageNeverPull`` — ``Container image "IMAGE" is not present with pull policy of Never``.

  A real pod is copied in ``kubectl get pod -o json`` of a kind v1.31 cluster (metadata with
  uid, resourceVersion, creationTimestamp; the ``kube-api-access-*`` projected volume; the five
  pod conditions; ``hostIP``/``podIP``; ``qosClass``).
* **Event** (``core/v1``) — the API reference, "Event v1 core", as kubelet's legacy recorder
  writes it (``client-go/tools/record``: name ``<pod>.<hex unix nanoseconds>``,
  ``involvedObject`` with ``fieldPath`` ``spec.containers{NAME}`` or ``spec.initContainers{NAME}``,
  ``source{component: kubelet, host}``, ``firstTimestamp``/``lastTimestamp``/``count``,
  ``eventTime: null``, ``reportingComponent: kubelet``, ``reportingInstance``). The reasons and
  texts of a failing pull (``pkg/kubelet/events/event.go``, ``image_manager.go``): ``Pulling``
  (Normal) ``Pulling image "IMAGE"``; ``Failed`` (Warning) ``Failed to pull image "IMAGE":
  <error>`` and ``Error: ErrImagePull``; ``BackOff`` (Normal) ``Back-off pulling image
  "IMAGE"``; ``Failed`` (Warning) ``Error: ImagePullBackOff``; ``ErrImageNeverPull`` and
  ``InspectFailed`` (Warning) for the other two reasons. The ``events.k8s.io/v1`` view of the
  same object is made by the fake API (:func:`tests.fakes.kube_api.events_v1`).
* **Secret** (``core/v1``) — the API reference, "Secret v1 core", and the API docs "Secrets —
  image pull secrets": ``type`` ``kubernetes.io/dockerconfigjson`` with ``data[.dockerconfigjson]``
  (base64 of ``{"auths": {KEY: {"username", "password", "auth"}}}``), ``kubernetes.io/dockercfg``
  with ``data[.dockercfg]`` (the legacy bare map), ``Opaque``. The API server validates the two
  docker types on write (``pkg/apis/core/validation/validation.go`` ``ValidateSecret``: the key
  must exist and hold JSON), so an "undecodable" secret that a cluster can hold is JSON kubelet
  cannot use (an ``auth`` that is not base64, no ``auths`` object).
* **ServiceAccount** (``core/v1``) — the API reference, "ServiceAccount v1 core":
  ``imagePullSecrets[].name`` (kubelet adds them after the pod's own, ``pkg/serviceaccount``
  admission copies them into the pod at creation; both are read here, as kubelet's
  ``getPullSecretsForPod`` reads the pod's list).
* **Node** (``core/v1``) — the API reference, "Node v1 core": name, the
  ``kubernetes.io/hostname`` label, ``status.nodeInfo.containerRuntimeVersion``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "Container",
    "WaitingReason",
    "backoff_message",
    "default_pull_policy",
    "dockercfg_secret",
    "dockerconfigjson_secret",
    "invalid_name_message",
    "never_pull_message",
    "node",
    "pod",
    "pull_events",
    "rfc3339",
    "secret",
    "service_account",
]

Json = dict[str, Any]
WaitingReason = Literal["ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"]

_CREATED = "2025-06-02T09:14:07Z"


def rfc3339(moment: dt.datetime) -> str:
    """metav1.Time as the API server writes it: UTC, seconds, ``Z``."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _uid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)))


def _metadata(kind: str, name: str, namespace: str | None, created: str = _CREATED) -> Json:
    meta: Json = {
        "name": name,
        "uid": _uid(kind, namespace or "", name),
        "resourceVersion": "0",  # set when stored
        "creationTimestamp": created,
    }
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


# --- Pods -------------------------------------------------------------------------------------


def default_pull_policy(image: str) -> str:
    """The API server's default ``imagePullPolicy``: ``Always`` for ``:latest`` or no tag."""
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    tag = last.partition(":")[2]
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def never_pull_message(image: str) -> str:
    return f'Container image "{image}" is not present with pull policy of Never'


def invalid_name_message(image: str, why: str = "repository name must be lowercase") -> str:
    return (
        f'Failed to apply default image tag "{image}": couldn\'t parse image name "{image}": '
        f"invalid reference format: {why}"
    )


def backoff_message(image: str, last_error: str | None = None) -> str:
    """kubelet's back-off message; with ``last_error`` as since 1.31 (``prevPullErrMsg``)."""
    text = f'Back-off pulling image "{image}"'
    return f"{text}: ErrImagePull: {last_error}" if last_error else text


@dataclass(frozen=True)
class Container:
    """One container of a pod and what kubelet last wrote for it.

    ``waiting`` None means running (started, ready); ``message`` None picks kubelet's own text
    for the reason (the runtime's error for ``ErrImagePull``, given as ``error``).
    """

    name: str
    image: str
    policy: str | None = None  # None: the API server's default
    waiting: WaitingReason | None = None
    message: str | None = None
    error: str = ""  # the runtime's error text behind ErrImagePull / ImagePullBackOff
    restarts: int = 0

    def spec(self) -> Json:
        return {
            "name": self.name,
            "image": self.image,
            "resources": {},
            "volumeMounts": [
                {
                    "name": "kube-api-access",
                    "readOnly": True,
                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                }
            ],
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "imagePullPolicy": self.policy or default_pull_policy(self.image),
        }

    def waiting_message(self) -> str:
        if self.message is not None:
            return self.message
        if self.waiting == "ErrImagePull":
            return self.error
        if self.waiting == "ImagePullBackOff":
            return backoff_message(self.image, self.error or None)
        if self.waiting == "InvalidImageName":
            return invalid_name_message(self.image)
        return never_pull_message(self.image)

    def status(self, started: str) -> Json:
        if self.waiting is None:
            return {
                "name": self.name,
                "state": {"running": {"startedAt": started}},
                "lastState": {},
                "ready": True,
                "restartCount": self.restarts,
                "image": self.image,
                "imageID": "docker.io/library/busybox@sha256:" + "a" * 64,
                "containerID": "containerd://" + "c" * 64,
                "started": True,
            }
        return {
            "name": self.name,
            "state": {"waiting": {"reason": self.waiting, "message": self.waiting_message()}},
            "lastState": {},
            "ready": False,
            "restartCount": self.restarts,
            "image": self.image,
            "imageID": "",
            "started": False,
        }


def pod(
    name: str,
    namespace: str = "default",
    *,
    containers: Sequence[Container],
    init_containers: Sequence[Container] = (),
    node: str | None = "node-1",
    pull_secrets: Sequence[str] = (),
    service_account: str = "default",
    labels: Mapping[str, str] | None = None,
    created: dt.datetime | None = None,
) -> Json:
    """A Pod as ``kubectl get pod -o json`` shows it (kind v1.31), kubelet's statuses included."""
    created_at = rfc3339(created) if created else _CREATED
    spec: Json = {
        "volumes": [
            {
                "name": "kube-api-access",
                "projected": {
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {
                            "configMap": {
                                "name": "kube-root-ca.crt",
                                "items": [{"key": "ca.crt", "path": "ca.crt"}],
                            }
                        },
                    ],
                    "defaultMode": 420,
                },
            }
        ],
        "containers": [c.spec() for c in containers],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": service_account,
        "serviceAccount": service_account,
        "securityContext": {},
        "schedulerName": "default-scheduler",
        "tolerations": [
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
        ],
        "priority": 0,
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
    }
    if init_containers:
        spec["initContainers"] = [c.spec() for c in init_containers]
    if pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in pull_secrets]
    if node is not None:
        spec["nodeName"] = node
    waiting = [c.name for c in (*init_containers, *containers) if c.waiting is not None]
    status: Json = {"phase": "Pending", "qosClass": "BestEffort"}
    if node is None:
        status["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "False",
                "lastProbeTime": None,
                "lastTransitionTime": created_at,
                "reason": "Unschedulable",
                "message": "0/1 nodes are available.",
            }
        ]
    else:
        ready = "False" if waiting else "True"
        init_done = "False" if any(c.waiting for c in init_containers) else "True"
        unready = f"containers with unready status: [{' '.join(waiting)}]"
        status.update(
            {
                "phase": "Pending" if waiting else "Running",
                "conditions": [
                    {"type": "PodReadyToStartContainers", "status": "True"},
                    {"type": "Initialized", "status": init_done},
                    {
                        "type": "Ready",
                        "status": ready,
                        **({"reason": "ContainersNotReady", "message": unready} if waiting else {}),
                    },
                    {
                        "type": "ContainersReady",
                        "status": ready,
                        **({"reason": "ContainersNotReady", "message": unready} if waiting else {}),
                    },
                    {"type": "PodScheduled", "status": "True"},
                ],
                "hostIP": "172.18.0.2",
                "hostIPs": [{"ip": "172.18.0.2"}],
                "podIP": "10.244.0.7",
                "podIPs": [{"ip": "10.244.0.7"}],
                "startTime": created_at,
                "containerStatuses": [c.status(created_at) for c in containers],
            }
        )
        for condition in status["conditions"]:
            condition.setdefault("lastProbeTime", None)
            condition.setdefault("lastTransitionTime", created_at)
        if init_containers:
            status["initContainerStatuses"] = [c.status(created_at) for c in init_containers]
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            **_metadata("pod", name, namespace, created_at),
            "labels": dict(labels or {"app": name}),
        },
        "spec": spec,
        "status": status,
    }


# --- Events -----------------------------------------------------------------------------------


def _event(
    subject: Json,
    field_path: str,
    reason: str,
    message: str,
    kind: Literal["Normal", "Warning"],
    count: int,
    first: dt.datetime,
    last: dt.datetime,
    sequence: int,
) -> Json:
    meta = subject["metadata"]
    host = subject["spec"].get("nodeName", "")
    nanos = int(first.timestamp() * 1e9) + sequence
    return {
        "kind": "Event",
        "apiVersion": "v1",
        "metadata": {
            **_metadata("event", f"{meta['name']}.{nanos:x}", meta["namespace"], rfc3339(first)),
        },
        "involvedObject": {
            "kind": "Pod",
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta["uid"],
            "apiVersion": "v1",
            "resourceVersion": meta.get("resourceVersion", "0"),
            "fieldPath": field_path,
        },
        "reason": reason,
        "message": message,
        "source": {"component": "kubelet", "host": host},
        "firstTimestamp": rfc3339(first),
        "lastTimestamp": rfc3339(last),
        "count": count,
        "type": kind,
        "eventTime": None,
        "reportingComponent": "kubelet",
        "reportingInstance": host,
    }


def pull_events(
    subject: Json,
    container: str,
    *,
    failures: int,
    first: dt.datetime,
    last: dt.datetime,
) -> list[Json]:
    """The events kubelet records for ``container`` of pod ``subject`` failing ``failures`` times.

    Which ones depends on the container's waiting reason in ``subject``'s status, as in
    ``image_manager.go``: pull failures and back-offs; ``ErrImageNeverPull``; ``InspectFailed``.
    """
    spec = subject["spec"]
    init = any(c["name"] == container for c in spec.get("initContainers", []))
    containers = spec["initContainers"] if init else spec["containers"]
    image = next(c["image"] for c in containers if c["name"] == container)
    statuses = subject["status"].get("initContainerStatuses" if init else "containerStatuses", [])
    status = next(s for s in statuses if s["name"] == container)
    waiting = status["state"].get("waiting", {})
    reason, message = waiting.get("reason", ""), waiting.get("message", "")
    path = f"spec.{'initContainers' if init else 'containers'}{{{container}}}"
    made: list[tuple[str, str, Literal["Normal", "Warning"]]]
    if reason == "ErrImageNeverPull":
        made = [
            ("ErrImageNeverPull", message, "Warning"),
            ("Failed", f"Error: {reason}", "Warning"),
        ]
    elif reason == "InvalidImageName":
        made = [("InspectFailed", message, "Warning"), ("Failed", f"Error: {reason}", "Warning")]
    else:
        error = message.split(": ErrImagePull: ", 1)[-1] if "ErrImagePull: " in message else message
        made = [
            ("Pulling", f'Pulling image "{image}"', "Normal"),
            ("Failed", f'Failed to pull image "{image}": {error}', "Warning"),
            ("Failed", "Error: ErrImagePull", "Warning"),
            ("BackOff", f'Back-off pulling image "{image}"', "Normal"),
            ("Failed", "Error: ImagePullBackOff", "Warning"),
        ]
    return [
        _event(subject, path, r, m, k, failures, first, last, number)
        for number, (r, m, k) in enumerate(made)
    ]


# --- Secrets, ServiceAccounts, Nodes ----------------------------------------------------------


def _b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def _entries(auths: Mapping[str, tuple[str, str]]) -> Json:
    return {
        key: {"username": user, "password": password, "auth": _b64(f"{user}:{password}")}
        for key, (user, password) in auths.items()
    }


def secret(name: str, namespace: str, secret_type: str, data: Mapping[str, bytes | str]) -> Json:
    """A Secret of any type; ``data`` values are base64-encoded as the API stores them."""
    return {
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": _metadata("secret", name, namespace),
        "data": {key: _b64(value) for key, value in data.items()},
        "type": secret_type,
    }


def dockerconfigjson_secret(
    name: str, namespace: str, auths: Mapping[str, tuple[str, str]]
) -> Json:
    """``kubectl create secret docker-registry NAME --docker-server=KEY …``: one entry per key."""
    document = json.dumps({"auths": _entries(auths)})
    return secret(
        name, namespace, "kubernetes.io/dockerconfigjson", {".dockerconfigjson": document}
    )


def dockercfg_secret(name: str, namespace: str, auths: Mapping[str, tuple[str, str]]) -> Json:
    """A legacy ``kubernetes.io/dockercfg`` Secret: the bare map of registry entries."""
    return secret(
        name, namespace, "kubernetes.io/dockercfg", {".dockercfg": json.dumps(_entries(auths))}
    )


def service_account(name: str, namespace: str, pull_secrets: Sequence[str] = ()) -> Json:
    body: Json = {
        "kind": "ServiceAccount",
        "apiVersion": "v1",
        "metadata": _metadata("serviceaccount", name, namespace),
    }
    if pull_secrets:
        body["imagePullSecrets"] = [{"name": s} for s in pull_secrets]
    return body


def node(name: str) -> Json:
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            **_metadata("node", name, None),
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {
            "nodeInfo": {
                "containerRuntimeVersion": "containerd://1.6.20",
                "kubeletVersion": "v1.31.0",
                "operatingSystem": "linux",
                "architecture": "amd64",
            }
        },
    }
