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
* Anything else → 404 ``NotFound``; other methods → 405. Not replayed: watch (400), pagination,
  fieldSelector (400).

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
    requests: list[Recorded] = field(default_factory=list)
    _slices: list[Json] = field(default_factory=list)
    _resource_version: int = 4700
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_user(self, token: str, user: str, namespaces: Iterable[str] = ()) -> None:
        """Accept ``token`` as ``user``, allowed to list endpointslices in ``namespaces``."""
        with self._lock:
            self.tokens[token] = user
            self.grants.setdefault(user, set()).update(namespaces)

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

    def respond(self, method: str, target: str, authorization: str | None) -> tuple[int, Json]:
        """The status and JSON body kube-apiserver would send."""
        parts = urlsplit(target)
        query = parse_qs(parts.query, keep_blank_values=True)
        with self._lock:
            user = self._authenticate(authorization)
            status, body = self._dispatch(method, parts.path, query, user)
            self.requests.append(Recorded(method, parts.path, query, user, status))
        return status, body

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
        if length:
            self.rfile.read(length)
        status, body = self.server.api.respond(
            self.command, self.path, self.headers.get("Authorization")
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
