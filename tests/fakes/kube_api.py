"""A fake kube-apiserver: a real HTTP(S) server on 127.0.0.1 replaying the real API's shapes.

The JSON it sends is shaped like kube-apiserver's own (the ``discovery.k8s.io/v1`` types of the
Kubernetes API reference and apimachinery's ``metav1.Status``), compact as the server writes it:

* ``GET /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices`` (and the all-namespaces
  ``/apis/discovery.k8s.io/v1/endpointslices``) → an ``EndpointSliceList``::

      {"kind":"EndpointSliceList","apiVersion":"discovery.k8s.io/v1",
       "metadata":{"resourceVersion":"4711"},"items":[...]}

  Items carry no ``kind``/``apiVersion`` (the server leaves them out of list items). Each has
  metadata (name from ``generateName``, namespace, uid, resourceVersion, generation,
  creationTimestamp, the controller's labels ``kubernetes.io/service-name`` and
  ``endpointslice.kubernetes.io/managed-by``, the ``last-change-trigger-time`` annotation, an
  ownerReference to the Service, managedFields), ``addressType``, ``endpoints[]`` (addresses,
  conditions ready/serving/terminating, nodeName, targetRef to the Pod, zone) and ``ports[]``
  (name, protocol, port). ``labelSelector`` is applied with apimachinery's grammar: ``k=v``,
  ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k``, ``!k``; a bad one → 400.
* Authentication by ``Authorization: Bearer <token>``: an unknown token → 401 ``Unauthorized``
  Status; no header → the request is ``system:anonymous`` (the apiserver's default).
* Authorization, RBAC-like: a user lists endpointslices only in namespaces it was granted
  (``"*"`` = cluster scope); otherwise 403 ``Forbidden`` with the apiserver's message wording.
* ``coordination.k8s.io/v1`` Leases (the Kubernetes API reference, "Lease v1 coordination.k8s.io",
  and apiserver's REST behaviour for get/create/update): ``GET`` and ``PUT
  /apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}``, ``POST …/namespaces/{ns}/leases``.
  A stored Lease is what the server returns::

      {"kind":"Lease","apiVersion":"coordination.k8s.io/v1",
       "metadata":{"name":"pullcheck-aggregator","namespace":"pullcheck","uid":"…",
                   "resourceVersion":"4712","creationTimestamp":"2025-06-02T09:14:07Z",
                   "annotations":{…},"managedFields":[…]},
       "spec":{"holderIdentity":"agg-0","leaseDurationSeconds":15,
               "acquireTime":"2025-06-02T09:14:07.123456Z","renewTime":"2025-06-02T09:14:09.123456Z",
               "leaseTransitions":0}}

  ``acquireTime``/``renewTime`` are MicroTimes: exactly six fraction digits, else 400 (the
  apiserver parses them with ``2006-01-02T15:04:05.000000Z07:00``). Every write bumps the
  resourceVersion. ``PUT`` without ``metadata.resourceVersion`` → 422 ``Invalid``; with a stale one
  → 409 ``Conflict`` (``Operation cannot be fulfilled on leases.coordination.k8s.io "…": the
  object has been modified; please apply your changes to the latest version and try again``);
  ``POST`` of an existing name → 409 ``AlreadyExists``; a missing Lease → 404 ``NotFound``
  (``leases.coordination.k8s.io "…" not found``), each a ``metav1.Status`` with ``details``
  ``{name, group, kind}``. RBAC per verb (``get``, ``create``, ``update``) and namespace
  (:meth:`FakeKubeApi.grant_leases`), else 403 ``Forbidden`` in the apiserver's wording.
* ``core/v1`` Pods, Secrets, ServiceAccounts, Events and Nodes, and ``events.k8s.io/v1``
  Events, from one object store (shapes and their sources: :mod:`tests.fakes.kube_objects`):
  ``GET /api/v1/namespaces/{ns}/{resource}[/{name}]``, the all-namespaces lists
  ``/api/v1/{pods,events,…}`` and ``/apis/events.k8s.io/v1[/namespaces/{ns}]/events``, and
  ``/api/v1/nodes[/{name}]``. Lists are ``{"kind":"PodList","apiVersion":"v1","metadata":
  {"resourceVersion":"…"},"items":[…]}`` with items lacking ``kind``/``apiVersion``; a missing
  object → 404 (``pods "web" not found``, ``details{name, kind}``). ``labelSelector`` as above;
  ``fieldSelector`` with ``=``, ``==``, ``!=`` over the field labels the apiserver allows per
  resource (``pkg/registry/core/{pod,event,secret,node}/strategy.go``: ``spec.nodeName``,
  ``involvedObject.name|namespace|uid|…``, ``type``…), another label → 400 ``field label not
  supported: …``. The ``events.k8s.io/v1`` view converts the stored core Event
  (``involvedObject``→``regarding``, ``message``→``note``, ``count``→``deprecatedCount``…).
  Core Events also take ``POST`` (create: ``generateName``, 409 ``AlreadyExists``, 422 when
  ``involvedObject.namespace`` differs) and ``PATCH`` with ``application/merge-patch+json`` or
  ``application/strategic-merge-patch+json`` (a ``metadata.resourceVersion`` in the patch is a
  precondition: 409 ``Conflict``), so repeats are counted through ``count``/``series``.
* RBAC for those resources per (user, verb, resource, namespace) (:meth:`FakeKubeApi.grant`,
  ``"*"`` = a ClusterRoleBinding), else 403 in the apiserver's words (``pods "web" is forbidden:
  User "u" cannot get resource "pods" in API group "" in the namespace "ns"``; lists:
  ``pods is forbidden: … cannot list resource "pods" … at the cluster scope``).
* WATCH (``?watch=1&resourceVersion=N&allowWatchBookmarks=true&timeoutSeconds=S``) on any of
  them: HTTP 200, chunked, one ``{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":{…}}``
  per line (apimachinery's ``metav1.WatchEvent``). No or ``0`` resourceVersion: the current
  objects as ADDED, then changes; ``N``: every change after N from the retained history
  (``watch_window`` changes, or none after :meth:`FakeKubeApi.compact`), and when N is older
  than that the apiserver's ``ERROR`` event with a ``410`` Status, ``reason: Expired``,
  ``message: "too old resource version: N (M)"``, then the stream ends. Selectors filter as the
  watch cache does (an object that stops matching arrives as DELETED). BOOKMARKs carry only
  ``kind``, ``apiVersion`` and ``metadata.resourceVersion`` and are sent when the test calls
  :meth:`FakeKubeApi.bookmark` (the apiserver sends them about once a minute).
  :meth:`FakeKubeApi.close_watches` ends every stream (apiserver restart or timeout).
* Test hooks: :meth:`~FakeKubeApi.put` / :meth:`~FakeKubeApi.delete` (each write bumps the
  resourceVersion and feeds the watches; a docker-type Secret ``ValidateSecret`` would refuse
  raises), :meth:`~FakeKubeApi.stored`, :meth:`~FakeKubeApi.fail` (the next requests on a
  resource answer 500 ``InternalError``, 503, 429 or 504 with the apiserver's Status),
  :meth:`~FakeKubeApi.kubeconfig` (a kubeconfig for this server and a token).
* Anything else → 404 ``NotFound``; other methods → 405. Not replayed: pagination
  (``limit``/``continue`` are ignored: one page), watch of EndpointSlices (400), fieldSelector
  on EndpointSlices (400), list/delete/patch of Leases (405), JSON patch and server-side apply
  (415), update/delete through the REST API of the new resources (405).

Every request is recorded (method, path, query, user, status), so tests can count them.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import queue
import re
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab.certs import CA_KEY_USAGE

__all__ = [
    "FakeKubeApi",
    "KubeTls",
    "Recorded",
    "endpoint",
    "endpoint_slice",
    "make_kube_tls",
    "parse_label_selector",
    "serve_kube_api",
]

Json = dict[str, Any]

_GROUP, _VERSION, _RESOURCE = "discovery.k8s.io", "v1", "endpointslices"
_NAMESPACED = re.compile(rf"^/apis/{_GROUP}/{_VERSION}/namespaces/([a-z0-9-]+)/{_RESOURCE}/?$")
_ALL = re.compile(rf"^/apis/{_GROUP}/{_VERSION}/{_RESOURCE}/?$")
_LEASE_GROUP = "coordination.k8s.io"
_LEASES = re.compile(
    rf"^/apis/{_LEASE_GROUP}/v1/namespaces/([a-z0-9-]+)/leases(?:/([a-z0-9.-]+))?/?$"
)
_MICROTIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(?:Z|[+-]\d\d:\d\d)$")
_LEASE_VERBS = frozenset({"get", "create", "update"})
_RAND = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's rand.String alphabet
_TIMESTAMP = "2025-06-02T09:14:07Z"


# --- object builders (what the EndpointSlice controller writes) -------------------------------


def _suffix(seed: str) -> str:
    number = int(uuid.uuid5(uuid.NAMESPACE_URL, seed).hex, 16)
    chars = []
    for _ in range(5):
        number, index = divmod(number, len(_RAND))
        chars.append(_RAND[index])
    return "".join(chars)


def endpoint(
    address: str,
    node: str | None,
    *,
    ready: bool | None = True,
    terminating: bool = False,
    pod: str | None = None,
    namespace: str = "pullcheck",
    zone: str | None = None,
) -> Json:
    """One endpoint as the controller writes it for a DaemonSet pod. ``ready=None`` leaves
    ``conditions.ready`` unset (API: "nil should be interpreted as true")."""
    conditions: Json = {}
    if ready is not None:
        conditions["ready"] = ready
    conditions["serving"] = bool(ready) if ready is not None else True
    conditions["terminating"] = terminating
    pod_name = pod or f"pullcheck-agent-{_suffix(f'{node}/{address}')}"
    item: Json = {
        "addresses": [address],
        "conditions": conditions,
        "targetRef": {
            "kind": "Pod",
            "namespace": namespace,
            "name": pod_name,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"pod/{namespace}/{pod_name}")),
        },
    }
    if node is not None:
        item["nodeName"] = node
    if zone is not None:
        item["zone"] = zone
    return item


def endpoint_slice(
    service: str,
    endpoints: Sequence[Json],
    *,
    namespace: str = "pullcheck",
    address_type: str = "IPv4",
    ports: Sequence[tuple[str, int]] | None = (("http", 8479),),
    name: str | None = None,
    labels: dict[str, str] | None = None,
) -> Json:
    """An EndpointSlice object as stored by the API server (metadata included)."""
    slice_name = name or f"{service}-{_suffix(f'{namespace}/{service}/{address_type}')}"
    service_uid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"svc/{namespace}/{service}"))
    return {
        "metadata": {
            "name": slice_name,
            "generateName": f"{service}-",
            "namespace": namespace,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"eps/{namespace}/{slice_name}")),
            "resourceVersion": "0",  # set when stored
            "generation": 1,
            "creationTimestamp": _TIMESTAMP,
            "labels": {
                "app.kubernetes.io/name": "pullcheck",
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                "kubernetes.io/service-name": service,
                "service.kubernetes.io/headless": "",
                **(labels or {}),
            },
            "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": _TIMESTAMP},
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "name": service,
                    "uid": service_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            "managedFields": [
                {
                    "manager": "kube-controller-manager",
                    "operation": "Update",
                    "apiVersion": "discovery.k8s.io/v1",
                    "time": _TIMESTAMP,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {
                        "f:addressType": {},
                        "f:endpoints": {},
                        "f:metadata": {"f:labels": {}, "f:ownerReferences": {}},
                        "f:ports": {},
                    },
                }
            ],
        },
        "addressType": address_type,
        "endpoints": list(endpoints),
        "ports": None
        if ports is None
        else [{"name": n, "protocol": "TCP", "port": p} for n, p in ports],
    }


# --- label selectors (apimachinery's grammar) -------------------------------------------------

_KEY = r"(?:[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET = re.compile(rf"^({_KEY})\s+(in|notin)\s*\(\s*({_VALUE}(?:\s*,\s*{_VALUE})*)\s*\)$")
_EQ = re.compile(rf"^({_KEY})\s*(==|=|!=)\s*({_VALUE})$")
_EXISTS = re.compile(rf"^(!?)\s*({_KEY})$")

Requirement = tuple[str, str, frozenset[str]]  # key, operator, values


def parse_label_selector(text: str) -> list[Requirement]:
    """``app=x,tier in (a,b),!legacy`` → requirements; ValueError like the apiserver's 400."""
    parts: list[str] = []
    depth, start = 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    requirements: list[Requirement] = []
    for raw in parts:
        part = raw.strip()
        if not part and len(parts) == 1:
            return []
        if match := _SET.match(part):
            values = frozenset(v.strip() for v in match.group(3).split(","))
            requirements.append((match.group(1), match.group(2), values))
        elif match := _EQ.match(part):
            operator = "!=" if match.group(2) == "!=" else "="
            requirements.append((match.group(1), operator, frozenset([match.group(3)])))
        elif match := _EXISTS.match(part):
            operator = "!" if match.group(1) else "exists"
            requirements.append((match.group(2), operator, frozenset()))
        else:
            raise ValueError(f"unable to parse requirement: {part!r}")
    return requirements


def _matches(labels: dict[str, str], requirements: Iterable[Requirement]) -> bool:
    for key, operator, values in requirements:
        present = key in labels
        value = labels.get(key)
        ok = {
            "=": present and value in values,
            "in": present and value in values,
            "!=": not present or value not in values,
            "notin": not present or value not in values,
            "exists": present,
            "!": not present,
        }[operator]
        if not ok:
            return False
    return True


# --- core resources: pods, secrets, serviceaccounts, events, nodes ---------------------------


@dataclass(frozen=True)
class _Resource:
    """One REST resource the fake serves from its object store."""

    store: str  # which stored objects ("events" serves both Event groups)
    plural: str
    group: str
    kind: str
    namespaced: bool
    verbs: frozenset[str]
    fields: frozenset[str]  # field labels the apiserver accepts in fieldSelector

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def api_version(self) -> str:
        return f"{self.group}/v1" if self.group else "v1"


_META_FIELDS = frozenset({"metadata.name", "metadata.namespace"})
# pkg/registry/core/event/strategy.go ToSelectableFields (the events.k8s.io view shares storage)
_EVENT_FIELDS = _META_FIELDS | {
    "involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
    "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
    "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type",
}  # fmt: skip
_READ = frozenset({"get", "list", "watch"})
_RESOURCES: dict[tuple[str, str], _Resource] = {
    ("", "pods"): _Resource(
        "pods", "pods", "", "Pod", True, _READ,
        _META_FIELDS | {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
                        "spec.serviceAccountName", "status.phase", "status.podIP",
                        "status.nominatedNodeName"},
    ),
    ("", "secrets"): _Resource(
        "secrets", "secrets", "", "Secret", True, _READ, _META_FIELDS | {"type"}
    ),
    ("", "serviceaccounts"): _Resource(
        "serviceaccounts", "serviceaccounts", "", "ServiceAccount", True, _READ, _META_FIELDS
    ),
    ("", "events"): _Resource(
        "events", "events", "", "Event", True, _READ | {"create", "patch"}, _EVENT_FIELDS
    ),
    ("events.k8s.io", "events"): _Resource(
        "events", "events", "events.k8s.io", "Event", True, _READ, _EVENT_FIELDS
    ),
    ("", "nodes"): _Resource(
        "nodes", "nodes", "", "Node", False, _READ,
        frozenset({"metadata.name", "spec.unschedulable"}),
    ),
}  # fmt: skip
_STORE_OF_KIND = {"Pod": "pods", "Secret": "secrets", "ServiceAccount": "serviceaccounts",
                  "Event": "events", "Node": "nodes"}  # fmt: skip
_CORE_PATH = re.compile(r"^/api/v1(?:/namespaces/([a-z0-9-]+))?/([a-z]+)(?:/([^/]+))?/?$")
_EVENTS_V1_PATH = re.compile(
    r"^/apis/events\.k8s\.io/v1(?:/namespaces/([a-z0-9-]+))?/events(?:/([^/]+))?/?$"
)
_DOCKER_SECRET_KEYS = {
    "kubernetes.io/dockerconfigjson": ".dockerconfigjson",
    "kubernetes.io/dockercfg": ".dockercfg",
}
_MERGE_PATCHES = frozenset(
    {"application/merge-patch+json", "application/strategic-merge-patch+json"}
)
FieldRequirement = tuple[str, bool, str]  # field label, equal (True) or not, value


def parse_field_selector(text: str, allowed: frozenset[str]) -> list[FieldRequirement]:
    """``involvedObject.name=web,type!=Normal`` → requirements; ValueError as the apiserver's 400.

    Values may escape ``\\``, ``,`` and ``=`` with a backslash (fields.EscapeValue).
    """
    requirements: list[FieldRequirement] = []
    for part in _split_unescaped(text, ","):
        if not part:
            continue
        for operator in ("!=", "==", "="):
            label, found, value = part.partition(operator)
            if found:
                break
        else:
            raise ValueError(f"invalid selector: '{text}'; can't understand '{part}'")
        equal = operator != "!="
        if label not in allowed:
            raise ValueError(f"field label not supported: {label}")
        requirements.append((label, equal, _unescape(value)))
    return requirements


def _split_unescaped(text: str, separator: str) -> list[str]:
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def _field_value(obj: Json, label: str) -> str:
    if label == "source":
        return str((obj.get("source") or {}).get("component", ""))
    if label == "reportingComponent":
        return str(obj.get("reportingComponent", ""))
    value: Any = obj
    for key in label.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _selected(obj: Json, labels: list[Requirement], fields: list[FieldRequirement]) -> bool:
    if not _matches(obj.get("metadata", {}).get("labels") or {}, labels):
        return False
    return all((_field_value(obj, label) == value) == equal for label, equal, value in fields)


def events_v1(event: Json) -> Json:
    """The ``events.k8s.io/v1`` view of a core Event, as the apiserver converts it
    (``pkg/apis/events/v1/conversion.go``: involvedObject→regarding, message→note,
    source→deprecatedSource, count/firstTimestamp/lastTimestamp→deprecated*)."""
    view: Json = {
        "kind": "Event",
        "apiVersion": "events.k8s.io/v1",
        "metadata": event["metadata"],
        "eventTime": event.get("eventTime"),
    }
    renamed = {
        "series": "series", "reportingComponent": "reportingController",
        "reportingInstance": "reportingInstance", "action": "action", "reason": "reason",
        "involvedObject": "regarding", "related": "related", "message": "note", "type": "type",
        "source": "deprecatedSource", "firstTimestamp": "deprecatedFirstTimestamp",
        "lastTimestamp": "deprecatedLastTimestamp", "count": "deprecatedCount",
    }  # fmt: skip
    for old, new in renamed.items():
        if event.get(old) not in (None, "", {}):
            view[new] = event[old]
    return view


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (the strategic merge patch of an Event's scalar fields)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _copy(obj: Json) -> Json:
    copied: Json = json.loads(json.dumps(obj))
    return copied


@dataclass
class _Watch:
    """One open watch: its filter and the lines waiting to be written (None ends the stream)."""

    resource: _Resource
    namespace: str | None
    labels: list[Requirement]
    fields: list[FieldRequirement]
    bookmarks: bool
    timeout: float | None
    lines: queue.Queue[bytes | None] = field(default_factory=queue.Queue)

    def view(self, obj: Json) -> Json:
        return events_v1(obj) if self.resource.group == "events.k8s.io" else obj

    def wants(self, obj: Json) -> bool:
        namespace = obj["metadata"].get("namespace")
        in_scope = self.namespace is None or namespace == self.namespace
        return in_scope and _selected(obj, self.labels, self.fields)

    def send(self, kind: str, obj: Json) -> None:
        line = json.dumps({"type": kind, "object": obj}, separators=(",", ":")) + "\n"
        self.lines.put(line.encode())

    def offer(self, kind: str, new: Json | None, old: Json | None) -> None:
        """Feed one change, as the watch cache does for a filtered watch: an object that starts
        matching is ADDED, one that stops matching is DELETED."""
        was = old is not None and self.wants(old)
        now = new is not None and self.wants(new)
        if kind == "DELETED":
            if was and old is not None:
                self.send("DELETED", self.view(old))
        elif now and new is not None:
            self.send("MODIFIED" if was else "ADDED", self.view(new))
        elif was and new is not None:
            self.send("DELETED", self.view(new))


@dataclass(frozen=True)
class _Change:
    version: int
    store: str
    kind: str  # ADDED, MODIFIED, DELETED
    new: Json | None
    old: Json | None


@dataclass(frozen=True)
class _Failure:
    resource: str  # qualified resource name ("pods", "events.events.k8s.io")
    verb: str | None
    status: int


# --- the server -------------------------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    user: str | None  # None: the token was rejected
    status: int


@dataclass
class FakeKubeApi:
    """State of one fake API server; mutate it from the test while the server runs."""

    url: str = ""
    tokens: dict[str, str] = field(default_factory=dict)  # bearer token → user name
    grants: dict[str, set[str]] = field(default_factory=dict)  # user → namespaces ("*" = all)
    # user → namespace → lease verbs it may use
    lease_grants: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    _slices: list[Json] = field(default_factory=list)
    _leases: dict[tuple[str, str], Json] = field(default_factory=dict)
    _resource_version: int = 4700
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # user → {(verb, resource, namespace or "*")}: Roles and ClusterRoles with their bindings
    rbac: dict[str, set[tuple[str, str, str]]] = field(default_factory=dict)
    watch_window: int = 1000  # changes a watch can resume from; older versions get 410
    _objects: dict[str, dict[tuple[str, str], Json]] = field(default_factory=dict)
    _history: deque[_Change] = field(default_factory=deque)
    _compacted: int = 0  # changes at or before this resourceVersion are gone from history
    _watches: list[_Watch] = field(default_factory=list)
    _failures: list[_Failure] = field(default_factory=list)

    def add_user(self, token: str, user: str, namespaces: Iterable[str] = ()) -> None:
        """Accept ``token`` as ``user``, allowed to list endpointslices in ``namespaces``."""
        with self._lock:
            self.tokens[token] = user
            self.grants.setdefault(user, set()).update(namespaces)

    def grant_leases(
        self, user: str, namespace: str, verbs: Iterable[str] = ("get", "create", "update")
    ) -> None:
        """Let ``user`` use these verbs on Leases in ``namespace`` (a Role and its binding)."""
        wanted = set(verbs)
        if not wanted <= _LEASE_VERBS:
            raise ValueError(f"lease verbs are {sorted(_LEASE_VERBS)}, not {sorted(wanted)}")
        with self._lock:
            self.lease_grants.setdefault(user, {}).setdefault(namespace, set()).update(wanted)

    def revoke_leases(self, user: str) -> None:
        with self._lock:
            self.lease_grants.pop(user, None)

    def lease(self, namespace: str, name: str) -> Json | None:
        """The stored Lease (a copy), or None."""
        with self._lock:
            stored = self._leases.get((namespace, name))
        copy: Json | None = None if stored is None else json.loads(json.dumps(stored))
        return copy

    def put_lease(self, namespace: str, name: str, spec: Json) -> Json:
        """Store a Lease with ``spec`` as if some other client had written it; return it."""
        with self._lock:
            old = self._leases.get((namespace, name))
            body = {"metadata": {"name": name, "namespace": namespace}, "spec": spec}
            stored = self._store_lease(namespace, name, body, old)
        copy: Json = json.loads(json.dumps(stored))
        return copy

    def lease_requests(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if "/leases" in r.path]

    def set_slices(self, slices: Iterable[Json]) -> None:
        """Replace the stored EndpointSlices (each gets a new resourceVersion)."""
        with self._lock:
            stored = []
            for item in slices:
                self._resource_version += 1
                copy = json.loads(json.dumps(item))
                copy["metadata"]["resourceVersion"] = str(self._resource_version)
                stored.append(copy)
            self._slices = stored

    def respond(
        self,
        method: str,
        target: str,
        authorization: str | None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> tuple[int, Json]:
        """The status and JSON body kube-apiserver would send (a watch: use :meth:`serve`)."""
        answer = self.serve(method, target, authorization, body, content_type)
        if isinstance(answer, _Watch):
            self.end_watch(answer)
            return 400, _status(400, "BadRequest", "fake kube-apiserver: a watch needs serve()")
        return answer

    # --- core resources: test hooks -----------------------------------------------------------

    def grant(
        self,
        user: str,
        resource: str,
        verbs: Iterable[str] = ("get", "list", "watch"),
        namespace: str = "*",
    ) -> None:
        """Let ``user`` use ``verbs`` on ``resource`` (``pods``, ``secrets``, ``serviceaccounts``,
        ``events``, ``events.events.k8s.io``, ``nodes``) in ``namespace`` (``"*"``: a
        ClusterRoleBinding, needed for all-namespaces lists and cluster-scoped resources)."""
        known = {r.qualified for r in _RESOURCES.values()}
        if resource not in known:
            raise ValueError(f"resource {resource!r} is not one of {sorted(known)}")
        with self._lock:
            granted = self.rbac.setdefault(user, set())
            granted.update((verb, resource, namespace) for verb in verbs)

    def revoke(self, user: str, resource: str | None = None) -> None:
        """Take back ``user``'s grants on ``resource`` (every resource when None)."""
        with self._lock:
            granted = self.rbac.get(user, set())
            granted -= {g for g in granted if resource is None or g[1] == resource}

    def put(self, obj: Json) -> Json:
        """Create or replace an object (Pod, Secret, ServiceAccount, Event, Node) as another
        client would: the resourceVersion is bumped and open watches see ADDED or MODIFIED.
        A docker-type Secret whose data the apiserver would reject raises ValueError."""
        store = _STORE_OF_KIND.get(obj.get("kind", ""))
        if store is None:
            raise ValueError(f"kind {obj.get('kind')!r} is not one of {sorted(_STORE_OF_KIND)}")
        if store == "secrets":
            _validate_secret(obj)
        with self._lock:
            return _copy(self._write(store, obj))

    def delete(self, kind: str, namespace: str | None, name: str) -> Json:
        """Delete a stored object; open watches see DELETED. KeyError when absent."""
        store = _STORE_OF_KIND[kind]
        with self._lock:
            old = self._objects.setdefault(store, {}).pop((namespace or "", name))
            self._resource_version += 1
            gone = _copy(old)
            gone["metadata"]["resourceVersion"] = str(self._resource_version)
            self._commit(store, "DELETED", None, gone)
            return _copy(gone)

    def stored(self, kind: str, namespace: str | None = None) -> list[Json]:
        """Copies of the stored objects of ``kind`` (in ``namespace`` when given), oldest first."""
        store = _STORE_OF_KIND[kind]
        with self._lock:
            found = [
                _copy(o)
                for (ns, _), o in self._objects.get(store, {}).items()
                if namespace is None or ns == namespace
            ]
        return sorted(found, key=lambda o: int(o["metadata"]["resourceVersion"]))

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._resource_version

    def bookmark(self) -> None:
        """Send a BOOKMARK with the current resourceVersion to every watch that allowed them."""
        with self._lock:
            for watch in self._watches:
                if watch.bookmarks:
                    marker = {
                        "kind": watch.resource.kind,
                        "apiVersion": watch.resource.api_version,
                        "metadata": {
                            "resourceVersion": str(self._resource_version),
                            "creationTimestamp": None,
                        },
                    }
                    watch.send("BOOKMARK", marker)

    def compact(self) -> None:
        """Forget the change history, like etcd compaction: a watch from any older
        resourceVersion gets the ``410`` ``Expired`` ERROR event."""
        with self._lock:
            self._history.clear()
            self._compacted = self._resource_version

    def close_watches(self) -> None:
        """End every open watch stream (as the apiserver does at its timeout or on restart)."""
        with self._lock:
            for watch in self._watches:
                watch.lines.put(None)
            self._watches.clear()

    def watch_count(self) -> int:
        with self._lock:
            return len(self._watches)

    def fail(self, resource: str, status: int, times: int = 1, verb: str | None = None) -> None:
        """The next ``times`` requests on ``resource`` (only ``verb`` when given) answer
        ``status`` (500, 503, 429, 504) with the apiserver's Status body."""
        if status not in _INJECTED:
            raise ValueError(f"status {status} is not one of {sorted(_INJECTED)}")
        with self._lock:
            self._failures.extend(_Failure(resource, verb, status) for _ in range(times))

    def kubeconfig(
        self,
        path: Path,
        token: str | None,
        *,
        namespace: str | None = None,
        ca_file: Path | None = None,
        context: str = "fake",
    ) -> Path:
        """Write a kubeconfig for this server (``token`` None: anonymous) and return its path."""
        cluster: Json = {"server": self.url}
        if ca_file is not None:
            cluster["certificate-authority"] = str(ca_file)
        ctx: Json = {"cluster": "fake", "user": "fake"}
        if namespace is not None:
            ctx["namespace"] = namespace
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": "fake", "user": {"token": token} if token else {}}],
            "contexts": [{"name": context, "context": ctx}],
            "current-context": context,
        }
        path.write_text(json.dumps(document))
        return path

    # --- core resources: the REST side --------------------------------------------------------

    def serve(
        self,
        method: str,
        target: str,
        authorization: str | None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> tuple[int, Json] | _Watch:
        """What kube-apiserver answers: a status and JSON body, or an open watch stream."""
        parts = urlsplit(target)
        query = parse_qs(parts.query, keep_blank_values=True)
        with self._lock:
            user = self._authenticate(authorization)
            answer: tuple[int, Json] | _Watch
            core = _CORE_PATH.match(parts.path)
            events = _EVENTS_V1_PATH.match(parts.path)
            if user is not None and (leases := _LEASES.match(parts.path)):
                answer = self._lease_request(method, leases.group(1), leases.group(2), user, body)
            elif user is not None and core and ("", core.group(2)) in _RESOURCES:
                request = _Request(method, core.group(1), core.group(3), query, body, content_type)
                answer = self._resource_request(_RESOURCES["", core.group(2)], request, user)
            elif user is not None and events:
                request = _Request(method, events.group(1), events.group(2), query, body,
                                   content_type)  # fmt: skip
                answer = self._resource_request(
                    _RESOURCES["events.k8s.io", "events"], request, user
                )
            else:
                answer = self._dispatch(method, parts.path, query, user)
            status = 200 if isinstance(answer, _Watch) else answer[0]
            self.requests.append(Recorded(method, parts.path, query, user, status))
        return answer

    def end_watch(self, watch: _Watch) -> None:
        with self._lock:
            if watch in self._watches:
                self._watches.remove(watch)

    def _write(self, store: str, obj: Json) -> Json:
        metadata = obj.get("metadata") or {}
        key = (metadata.get("namespace") or "", metadata["name"])
        objects = self._objects.setdefault(store, {})
        old = objects.get(key)
        self._resource_version += 1
        new = _copy(obj)
        meta = new.setdefault("metadata", {})
        meta["resourceVersion"] = str(self._resource_version)
        if old is not None:
            meta["uid"] = old["metadata"]["uid"]
            meta["creationTimestamp"] = old["metadata"]["creationTimestamp"]
        else:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
        objects[key] = new
        self._commit(store, "MODIFIED" if old else "ADDED", new, old)
        return new

    def _commit(self, store: str, kind: str, new: Json | None, old: Json | None) -> None:
        self._history.append(_Change(self._resource_version, store, kind, new, old))
        while len(self._history) > self.watch_window:
            self._compacted = self._history.popleft().version
        for watch in self._watches:
            if watch.resource.store == store:
                watch.offer(kind, new, old)

    def _resource_request(
        self, resource: _Resource, request: _Request, user: str
    ) -> tuple[int, Json] | _Watch:
        namespace, name = request.namespace, request.name
        if (namespace is not None and not resource.namespaced) or (
            resource.namespaced and namespace is None and name is not None
        ):
            return 404, _status(404, "NotFound", "the server could not find the requested resource")
        verb = request.verb()
        if verb is None or verb not in resource.verbs:
            return 405, _status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        injected = self._injected(resource, verb)
        if injected is not None:
            return injected
        if not self._allowed(user, verb, resource, namespace):
            return 403, _forbidden(user, verb, resource, namespace, name)
        if verb == "get":
            assert name is not None
            stored = self._objects.get(resource.store, {}).get((namespace or "", name))
            if stored is None:
                return _not_found(resource, name)
            return 200, _view(resource, stored)
        if verb in ("list", "watch"):
            try:
                labels = parse_label_selector(request.param("labelSelector"))
                fields = parse_field_selector(request.param("fieldSelector"), resource.fields)
            except ValueError as exc:
                return 400, _status(400, "BadRequest", str(exc))
            if verb == "watch":
                return self._watch(resource, request, labels, fields)
            items = [
                {k: v for k, v in _view(resource, o).items() if k not in ("kind", "apiVersion")}
                for (ns, _), o in sorted(
                    self._objects.get(resource.store, {}).items(),
                    key=lambda item: int(item[1]["metadata"]["resourceVersion"]),
                )
                if (namespace is None or ns == namespace) and _selected(o, labels, fields)
            ]
            return 200, {
                "kind": f"{resource.kind}List",
                "apiVersion": resource.api_version,
                "metadata": {"resourceVersion": str(self._resource_version)},
                "items": items,
            }
        assert namespace is not None
        try:
            body = json.loads(request.body)
        except ValueError as exc:
            return 400, _status(
                400, "BadRequest", f"couldn't get version/kind; json parse error: {exc}"
            )
        if not isinstance(body, dict):
            return 400, _status(400, "BadRequest", "the body must be a JSON object")
        if verb == "create":
            return self._create_event(namespace, body)
        assert name is not None
        if request.content_type not in _MERGE_PATCHES:
            return 415, _status(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format ({request.content_type}) - "
                "fake kube-apiserver accepts application/merge-patch+json, "
                "application/strategic-merge-patch+json",
            )
        return self._patch_event(namespace, name, body)

    def _watch(
        self,
        resource: _Resource,
        request: _Request,
        labels: list[Requirement],
        fields: list[FieldRequirement],
    ) -> tuple[int, Json] | _Watch:
        timeout_text = request.param("timeoutSeconds")
        version_text = request.param("resourceVersion")
        if not re.fullmatch(r"\d{0,18}", timeout_text) or not re.fullmatch(
            r"\d{0,18}", version_text
        ):
            return 400, _status(400, "BadRequest", "resourceVersion and timeoutSeconds must be "
                                                   "non-negative integers")  # fmt: skip
        watch = _Watch(
            resource,
            request.namespace,
            labels,
            fields,
            bookmarks=request.param("allowWatchBookmarks") == "true",
            timeout=float(timeout_text) if timeout_text else None,
        )
        since = int(version_text) if version_text else 0
        if since == 0:  # "" or "0": the current state as ADDED events, then changes
            for _, stored in sorted(
                self._objects.get(resource.store, {}).items(),
                key=lambda item: int(item[1]["metadata"]["resourceVersion"]),
            ):
                if watch.wants(stored):
                    watch.send("ADDED", watch.view(stored))
        elif since < self._compacted:
            message = f"too old resource version: {since} ({self._compacted})"
            watch.send("ERROR", _status(410, "Expired", message))
            watch.lines.put(None)
            return watch
        else:
            for change in self._history:
                if change.store == resource.store and change.version > since:
                    watch.offer(change.kind, change.new, change.old)
        self._watches.append(watch)
        return watch

    def _create_event(self, namespace: str, body: Json) -> tuple[int, Json]:
        metadata = body.setdefault("metadata", {})
        if not isinstance(metadata, dict):
            return 400, _status(400, "BadRequest", "metadata must be an object")
        if metadata.get("namespace", namespace) != namespace:
            return 400, _status(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on "
                "the request",
            )
        metadata["namespace"] = namespace
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = f"{metadata['generateName']}{_suffix(str(uuid.uuid4()))}"
        name = metadata.get("name")
        if not name:
            return 422, _invalid(
                "Event", "", "metadata.name: Required value: name or generateName is required"
            )
        involved = body.get("involvedObject") or {}
        if involved.get("namespace", namespace) != namespace:
            return 422, _invalid(
                "Event",
                name,
                f'involvedObject.namespace: Invalid value: "{involved.get("namespace")}": '
                "does not match event.namespace",
            )
        if (namespace, name) in self._objects.get("events", {}):
            return 409, _status(
                409,
                "AlreadyExists",
                f'events "{name}" already exists',
                details={"name": name, "kind": "events"},
            )
        body["kind"], body["apiVersion"] = "Event", "v1"
        metadata.pop("resourceVersion", None)
        return 201, _copy(self._write("events", body))

    def _patch_event(self, namespace: str, name: str, patch: Json) -> tuple[int, Json]:
        stored = self._objects.get("events", {}).get((namespace, name))
        if stored is None:
            return _not_found(_RESOURCES["", "events"], name)
        version = (patch.get("metadata") or {}).get("resourceVersion")
        if version is not None and version != stored["metadata"]["resourceVersion"]:
            message = (
                f'Operation cannot be fulfilled on events "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again"
            )
            return 409, _status(409, "Conflict", message, details={"name": name, "kind": "events"})
        merged = _merge_patch(stored, patch)
        merged["metadata"]["name"], merged["metadata"]["namespace"] = name, namespace
        return 200, _copy(self._write("events", merged))

    def _injected(self, resource: _Resource, verb: str) -> tuple[int, Json] | None:
        for index, failure in enumerate(self._failures):
            if failure.resource == resource.qualified and failure.verb in (None, verb):
                del self._failures[index]
                reason, message = _INJECTED[failure.status]
                return failure.status, _status(failure.status, reason, message)
        return None

    def _allowed(self, user: str, verb: str, resource: _Resource, namespace: str | None) -> bool:
        granted = self.rbac.get(user, set())
        if (verb, resource.qualified, "*") in granted:
            return True
        return namespace is not None and (verb, resource.qualified, namespace) in granted

    # --- leases -------------------------------------------------------------------------------

    def _lease_request(
        self, method: str, namespace: str, name: str | None, user: str, raw: bytes
    ) -> tuple[int, Json]:
        verb = {"GET": "get", "POST": "create", "PUT": "update"}.get(method)
        if verb is None or (verb == "create") != (name is None):
            return 405, _status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        if verb not in self.lease_grants.get(user, {}).get(namespace, set()):
            target = f' "{name}"' if name else ""
            message = (
                f'leases.{_LEASE_GROUP}{target} is forbidden: User "{user}" cannot {verb} '
                f'resource "leases" in API group "{_LEASE_GROUP}" in the namespace "{namespace}"'
            )
            details: Json = {"group": _LEASE_GROUP, "kind": "leases"}
            if name:
                details["name"] = name
            return 403, _status(403, "Forbidden", message, details=details)
        if verb == "get":
            assert name is not None
            stored = self._leases.get((namespace, name))
            if stored is None:
                return _lease_not_found(name)
            return 200, stored
        try:
            body = json.loads(raw)
        except ValueError as exc:
            return 400, _status(
                400, "BadRequest", f"couldn't get version/kind; json parse error: {exc}"
            )
        problem = _lease_problem(body)
        if problem:
            return 400, _status(400, "BadRequest", problem)
        given = body.get("metadata", {}).get("name")
        if verb == "create":
            if not given:
                return 422, _lease_invalid("", "metadata.name: Required value: name is required")
            if (namespace, given) in self._leases:
                message = f'leases.{_LEASE_GROUP} "{given}" already exists'
                details = {"name": given, "group": _LEASE_GROUP, "kind": "leases"}
                return 409, _status(409, "AlreadyExists", message, details=details)
            return 201, self._store_lease(namespace, given, body, None)
        assert name is not None
        if given != name:
            return 400, _status(
                400,
                "BadRequest",
                f"the name of the object ({given}) does not match the name on the URL ({name})",
            )
        stored = self._leases.get((namespace, name))
        if stored is None:
            return _lease_not_found(name)
        version = body.get("metadata", {}).get("resourceVersion")
        if not version:
            return 422, _lease_invalid(
                name,
                "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
            )
        if version != stored["metadata"]["resourceVersion"]:
            message = (
                f'Operation cannot be fulfilled on leases.{_LEASE_GROUP} "{name}": the object '
                "has been modified; please apply your changes to the latest version and try again"
            )
            details = {"name": name, "group": _LEASE_GROUP, "kind": "leases"}
            return 409, _status(409, "Conflict", message, details=details)
        return 200, self._store_lease(namespace, name, body, stored)

    def _store_lease(self, namespace: str, name: str, body: Json, old: Json | None) -> Json:
        self._resource_version += 1
        metadata = body.get("metadata", {})
        uid = old["metadata"]["uid"] if old else str(uuid.uuid4())
        stored: Json = {
            "kind": "Lease",
            "apiVersion": f"{_LEASE_GROUP}/v1",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": uid,
                "resourceVersion": str(self._resource_version),
                "creationTimestamp": old["metadata"]["creationTimestamp"] if old else _TIMESTAMP,
                **({"labels": metadata["labels"]} if metadata.get("labels") else {}),
                **({"annotations": metadata["annotations"]} if metadata.get("annotations") else {}),
                "managedFields": [
                    {
                        "manager": "pullcheck",
                        "operation": "Update",
                        "apiVersion": f"{_LEASE_GROUP}/v1",
                        "time": _TIMESTAMP,
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:spec": {}},
                    }
                ],
            },
            "spec": {k: v for k, v in (body.get("spec") or {}).items() if v is not None},
        }
        self._leases[(namespace, name)] = stored
        return stored

    def list_requests(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith(f"/{_RESOURCE}")]

    def _authenticate(self, authorization: str | None) -> str | None:
        if authorization is None:
            return "system:anonymous"
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self.tokens.get(token.strip())

    def _dispatch(
        self, method: str, path: str, query: dict[str, list[str]], user: str | None
    ) -> tuple[int, Json]:
        if user is None:
            return 401, _status(401, "Unauthorized", "Unauthorized")
        namespaced = _NAMESPACED.match(path)
        if not namespaced and not _ALL.match(path):
            return 404, _status(404, "NotFound", "the server could not find the requested resource")
        if method != "GET":
            return 405, _status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        namespace = namespaced.group(1) if namespaced else None
        granted = self.grants.get(user, set())
        if not ("*" in granted or (namespace is not None and namespace in granted)):
            scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
            message = (
                f'{_RESOURCE}.{_GROUP} is forbidden: User "{user}" cannot list resource '
                f'"{_RESOURCE}" in API group "{_GROUP}" {scope}'
            )
            return 403, _status(
                403, "Forbidden", message, details={"group": _GROUP, "kind": _RESOURCE}
            )
        if query.get("watch", [""])[0] in ("true", "1"):
            return 400, _status(400, "BadRequest", "fake kube-apiserver: watch is not replayed")
        if "fieldSelector" in query:
            return 400, _status(400, "BadRequest", "fake kube-apiserver: no fieldSelector")
        try:
            selector = parse_label_selector(query.get("labelSelector", [""])[0])
        except ValueError as exc:
            return 400, _status(400, "BadRequest", str(exc))
        items = [
            item
            for item in self._slices
            if (namespace is None or item["metadata"]["namespace"] == namespace)
            and _matches(item["metadata"].get("labels", {}), selector)
        ]
        return 200, {
            "kind": "EndpointSliceList",
            "apiVersion": f"{_GROUP}/{_VERSION}",
            "metadata": {"resourceVersion": str(self._resource_version)},
            "items": items,
        }


def _lease_problem(body: Any) -> str | None:
    """Why the apiserver could not decode ``body`` as a Lease (None: it can)."""
    if not isinstance(body, dict) or body.get("kind") != "Lease":
        return 'Lease in version "v1" cannot be handled as a Lease: kind must be Lease'
    spec = body.get("spec") or {}
    if not isinstance(spec, dict):
        return 'Lease in version "v1" cannot be handled as a Lease: spec must be an object'
    for key in ("acquireTime", "renewTime"):
        value = spec.get(key)
        if value is not None and not (isinstance(value, str) and _MICROTIME.match(value)):
            return (
                f'Lease in version "v1" cannot be handled as a Lease: parsing time {value!r} '
                'as "2006-01-02T15:04:05.000000Z07:00": cannot parse as ".000000"'
            )
    for key in ("leaseDurationSeconds", "leaseTransitions"):
        value = spec.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            return f'Lease in version "v1" cannot be handled as a Lease: {key} must be an integer'
    return None


def _lease_not_found(name: str) -> tuple[int, Json]:
    details = {"name": name, "group": _LEASE_GROUP, "kind": "leases"}
    message = f'leases.{_LEASE_GROUP} "{name}" not found'
    return 404, _status(404, "NotFound", message, details=details)


def _lease_invalid(name: str, cause: str) -> Json:
    message = f'Lease.{_LEASE_GROUP} "{name}" is invalid: {cause}'
    details = {"name": name, "group": _LEASE_GROUP, "kind": "Lease"}
    return _status(422, "Invalid", message, details=details)


def _status(code: int, reason: str, message: str, *, details: Json | None = None) -> Json:
    body: Json = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


@dataclass(frozen=True)
class _Request:
    method: str
    namespace: str | None
    name: str | None
    query: dict[str, list[str]]
    body: bytes
    content_type: str | None

    def param(self, key: str) -> str:
        return self.query.get(key, [""])[0]

    def verb(self) -> str | None:
        if self.method == "GET":
            if self.name is not None:
                return "get"
            return "watch" if self.param("watch") in ("true", "1") else "list"
        if self.method == "POST" and self.name is None:
            return "create"
        if self.method == "PATCH" and self.name is not None:
            return "patch"
        return None


_INJECTED: dict[int, tuple[str, str]] = {
    500: ("InternalError", "Internal error occurred: fake kube-apiserver: injected failure"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    429: (
        "TooManyRequests",
        "the server has received too many requests and has asked us to try again later",
    ),
    504: (
        "Timeout",
        "the server was unable to return a response in the time allotted, but may still be "
        "processing the request",
    ),
}


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _view(resource: _Resource, obj: Json) -> Json:
    return events_v1(obj) if resource.group == "events.k8s.io" else obj


def _forbidden(
    user: str, verb: str, resource: _Resource, namespace: str | None, name: str | None
) -> Json:
    """The apiserver's 403: ``pods "x" is forbidden: User "u" cannot get resource "pods" in API
    group "" in the namespace "ns"`` (apiserver/pkg/endpoints/handlers/responsewriters)."""
    subject = f'{resource.qualified} "{name}"' if name else resource.qualified
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    message = (
        f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource.plural}" '
        f'in API group "{resource.group}" {scope}'
    )
    details: Json = {"name": name} if name else {}
    if resource.group:
        details["group"] = resource.group
    details["kind"] = resource.plural
    return _status(403, "Forbidden", message, details=details)


def _not_found(resource: _Resource, name: str) -> tuple[int, Json]:
    details: Json = {"name": name}
    if resource.group:
        details["group"] = resource.group
    details["kind"] = resource.plural
    message = f'{resource.qualified} "{name}" not found'
    return 404, _status(404, "NotFound", message, details=details)


def _invalid(kind: str, name: str, cause: str) -> Json:
    return _status(
        422, "Invalid", f'{kind} "{name}" is invalid: {cause}', details={"name": name, "kind": kind}
    )


def _validate_secret(obj: Json) -> None:
    """Refuse what ``ValidateSecret`` refuses for the docker types: no key, or not JSON."""
    key = _DOCKER_SECRET_KEYS.get(obj.get("type", ""))
    if key is None:
        return
    raw = (obj.get("data") or {}).get(key)
    if not isinstance(raw, str):
        raise ValueError(f"data[{key}]: Required value (the apiserver refuses this Secret)")
    try:
        json.loads(base64.b64decode(raw))
    except ValueError:
        raise ValueError(
            f"data[{key}]: Invalid value: not JSON (the apiserver refuses this Secret)"
        ) from None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, api: FakeKubeApi) -> None:
        self.api = api
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        answer = self.server.api.serve(
            self.command,
            self.path,
            self.headers.get("Authorization"),
            raw,
            self.headers.get("Content-Type"),
        )
        if isinstance(answer, _Watch):
            self._stream(answer)
            return
        status, body = answer
        data = json.dumps(body, separators=(",", ":")).encode()
        self._head(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _head(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Kubernetes-Pf-Flowschema-Uid", str(uuid.uuid4()))
        self.send_header("X-Kubernetes-Pf-Prioritylevel-Uid", str(uuid.uuid4()))

    def _stream(self, watch: _Watch) -> None:
        """A watch: one JSON event per line, chunked, until closed or ``timeoutSeconds``."""
        self._head(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deadline = None if watch.timeout is None else time.monotonic() + watch.timeout
        try:
            while deadline is None or time.monotonic() < deadline:
                wait = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
                try:
                    line = watch.lines.get(timeout=max(wait, 0.0))
                except queue.Empty:
                    continue
                if line is None:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client went away
            pass
        finally:
            self.server.api.end_watch(watch)
            self.close_connection = True


@contextmanager
def serve_kube_api(tls: KubeTls | None = None) -> Iterator[FakeKubeApi]:
    """Run a fake API server on 127.0.0.1 (HTTPS with ``tls``) until the block ends."""
    api = FakeKubeApi()
    server = _Server(api)
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        server.socket = context.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    api.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="fake-kube-api", daemon=True
    )
    thread.start()
    try:
        yield api
    finally:
        api.close_watches()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- TLS, like a cluster CA and the apiserver's serving certificate ---------------------------


@dataclass(frozen=True)
class KubeTls:
    ca_file: Path
    cert_file: Path
    key_file: Path


def make_kube_tls(directory: Path) -> KubeTls:
    """A throw-away cluster CA and a serving certificate for 127.0.0.1 / kubernetes.default.svc."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            CA_KEY_USAGE,
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.DNSName("kubernetes.default.svc"),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    tls = KubeTls(directory / "ca.crt", directory / "apiserver.crt", directory / "apiserver.key")
    tls.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    tls.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return tls
