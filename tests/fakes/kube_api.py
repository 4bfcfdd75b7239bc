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
* Anything else → 404 ``NotFound``; other methods → 405. Not replayed: watch (400), pagination,
  fieldSelector (400), list/delete/patch of Leases (405).

Every request is recorded (method, path, query, user, status), so tests can count them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import ssl
import threading
import uuid
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
        self, method: str, target: str, authorization: str | None, body: bytes = b""
    ) -> tuple[int, Json]:
        """The status and JSON body kube-apiserver would send."""
        parts = urlsplit(target)
        query = parse_qs(parts.query, keep_blank_values=True)
        with self._lock:
            user = self._authenticate(authorization)
            if user is not None and (leases := _LEASES.match(parts.path)):
                status, answer = self._lease_request(
                    method, leases.group(1), leases.group(2), user, body
                )
            else:
                status, answer = self._dispatch(method, parts.path, query, user)
            self.requests.append(Recorded(method, parts.path, query, user, status))
        return status, answer

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
        status, body = self.server.api.respond(
            self.command, self.path, self.headers.get("Authorization"), raw
        )
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Kubernetes-Pf-Flowschema-Uid", str(uuid.uuid4()))
        self.send_header("X-Kubernetes-Pf-Prioritylevel-Uid", str(uuid.uuid4()))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


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
