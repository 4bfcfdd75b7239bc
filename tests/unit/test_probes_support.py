"""Real loopback servers and helpers for the probe tests (no tests here).

Everything listens on 127.0.0.1 (and ::1 where noted) in background threads, so the servers are
independent of pytest-asyncio's event loops: a fake DNS server (dnspython messages over UDP), an
HTTP(S) fake registry + token server (http.server), a blackhole (listens, never accepts) and a
refused port. Certificates come from a throwaway CA made with ``cryptography``.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import secrets
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.credentials import Credential
from agent.models import Endpoint
from agent.probes import ProbeContext
from lab.certs import CA_KEY_USAGE

# --- guard: the system resolver must never be used --------------------------------------------


@dataclass
class ResolverSpy:
    calls: list[str] = field(default_factory=list)


def _is_ip(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return host is None
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


@pytest.fixture
def forbid_system_resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[ResolverSpy]:
    """Fail loudly if anything resolves a *name* through the system (getaddrinfo & co)."""
    spy = ResolverSpy()
    real_getaddrinfo = socket.getaddrinfo

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_ip(host):
            spy.calls.append(str(host))
            raise AssertionError(f"system resolver used for {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    def guarded_by_name(name: Any, *args: Any, **kwargs: Any) -> Any:
        spy.calls.append(str(name))
        raise AssertionError(f"system resolver used for {name!r}")

    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    monkeypatch.setattr(socket, "gethostbyname", guarded_by_name)
    monkeypatch.setattr(socket, "gethostbyname_ex", guarded_by_name)
    yield spy


# --- certificates ------------------------------------------------------------------------------


@dataclass
class Pki:
    directory: Path
    ca_file: Path
    other_ca_file: Path  # a CA that signed nothing we serve
    cert_file: Path  # leaf for NAMES + 127.0.0.1 + ::1, signed by ca
    key_file: Path
    expired_cert_file: Path
    expired_key_file: Path
    name_only_cert_file: Path  # leaf for NAMES only: no IP address in its SANs
    name_only_key_file: Path
    ip_only_cert_file: Path  # leaf for 127.0.0.1 and ::1 only: no name in its SANs
    ip_only_key_file: Path


NAMES = ["registry.pullcheck.test", "auth.pullcheck.test", "localhost"]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            CA_KEY_USAGE,
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    *,
    expired: bool = False,
    names: bool = True,
    ips: bool = True,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    start, end = (
        (now - dt.timedelta(days=10), now - dt.timedelta(days=1))
        if expired
        else (now - dt.timedelta(days=1), now + dt.timedelta(days=30))
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in NAMES] if names else []
    if ips:
        sans += [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(NAMES[0] if names else "127.0.0.1"))  # no CN fallback to a name
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _write(
    path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None
) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("pullcheck test CA")
    _, other_cert = _ca("some other CA")
    leaf_key, leaf_cert = _leaf(ca_key, ca_cert)
    old_key, old_cert = _leaf(ca_key, ca_cert, expired=True)
    named_key, named_cert = _leaf(ca_key, ca_cert, ips=False)
    ip_key, ip_cert = _leaf(ca_key, ca_cert, names=False)
    _write(directory / "name-only.pem", named_cert, named_key)
    _write(directory / "ip-only.pem", ip_cert, ip_key)
    _write(directory / "ca.crt", ca_cert)
    _write(directory / "other-ca.crt", other_cert)
    _write(directory / "server.pem", leaf_cert, leaf_key)
    _write(directory / "expired.pem", old_cert, old_key)
    return Pki(
        directory=directory,
        ca_file=directory / "ca.crt",
        other_ca_file=directory / "other-ca.crt",
        cert_file=directory / "server.pem",
        key_file=directory / "server.key",
        expired_cert_file=directory / "expired.pem",
        expired_key_file=directory / "expired.key",
        name_only_cert_file=directory / "name-only.pem",
        name_only_key_file=directory / "name-only.key",
        ip_only_cert_file=directory / "ip-only.pem",
        ip_only_key_file=directory / "ip-only.key",
    )


def server_ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    return context


# --- fake DNS server ---------------------------------------------------------------------------


@dataclass
class DnsZone:
    records: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # name -> type -> addrs
    servfail: set[str] = field(default_factory=set)
    silent: set[str] = field(default_factory=set)  # never answered
    queries: list[tuple[str, str]] = field(default_factory=list)


class _DnsHandler(socketserver.BaseRequestHandler):
    server: _DnsServer

    def handle(self) -> None:
        data, sock = self.request
        zone = self.server.zone
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = question.name.to_text().lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        zone.queries.append((name, rdtype))
        if name in zone.silent:
            return
        response = dns.message.make_response(query)
        if name in zone.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name not in zone.records:
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            addresses = zone.records[name].get(rdtype, [])
            if addresses:
                response.answer.append(dns.rrset.from_text_list(name, 60, "IN", rdtype, addresses))
        sock.sendto(response.to_wire(), self.client_address)


class _DnsServer(socketserver.ThreadingUDPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, zone: DnsZone) -> None:
        self.zone = zone
        super().__init__(("127.0.0.1", 0), _DnsHandler)


@dataclass
class DnsServer:
    zone: DnsZone
    port: int


def start_dns(zone: DnsZone) -> tuple[DnsServer, Callable[[], None]]:
    server = _DnsServer(zone)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return DnsServer(zone, server.server_address[1]), stop


# --- fake registry + token server (http.server) ------------------------------------------------

Route = Callable[["RegistryHandler"], tuple[int, dict[str, str], bytes] | None]


@dataclass
class RegistryConfig:
    """A tiny distribution-like registry. ``auth`` is none, basic or bearer."""

    auth: str = "none"
    users: dict[str, str] = field(default_factory=dict)
    realm: str = ""  # token endpoint URL for bearer
    service: str = "fake-registry"
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)  # repo -> tag -> manifest
    private: set[str] = field(default_factory=set)  # bearer: repos needing an authenticated token
    routes: dict[str, Route] = field(default_factory=dict)  # path prefix -> custom handler
    head_405: bool = False
    v2_status: int | None = None  # force a status on GET /v2/
    tokens: dict[str, tuple[str, str]] = field(default_factory=dict)  # token -> (user, scope)
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def manifest_bytes(tag: str) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "tag": tag}).encode()


class RegistryHandler(BaseHTTPRequestHandler):
    config: RegistryConfig
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # request plumbing
    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("content-length", "0") or 0)
        body = self.rfile.read(length) if length else b""
        with self.config.lock:
            self.config.requests.append(
                {
                    "method": self.command,
                    "path": parts.path,
                    "query": parse_qs(parts.query),
                    "headers": dict(self.headers.items()),
                    "body": body,
                }
            )
        self.query = parse_qs(parts.query)
        self.form = parse_qs(body.decode()) if body else {}
        for prefix, route in self.config.routes.items():
            if parts.path.startswith(prefix):
                answer = route(self)
                if answer is not None:
                    self._send(*answer)
                    return
        if parts.path == "/token":
            self._send(*self._token())
        elif parts.path == "/v2/":
            self._send(*self._v2())
        else:
            self._send(*self._api(parts.path))

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        headers = {"Docker-Distribution-API-Version": "registry/2.0", **headers}
        if "Content-Length" not in headers:
            headers["Content-Length"] = str(len(body))
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    # auth
    def _basic_user(self) -> str | None:
        header = self.headers.get("authorization", "")
        if not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user if self.config.users.get(user) == password else None

    def _challenge(self, scope: str = "", error: str = "") -> dict[str, str]:
        if self.config.auth == "basic":
            return {"WWW-Authenticate": 'Basic realm="fake, registry"'}
        value = f'Bearer realm="{self.config.realm}",service="{self.config.service}"'
        if scope:
            value += f',scope="{scope}"'
        if error:
            value += f',error="{error}"'
        return {"WWW-Authenticate": value}

    def _authorized(self, repo: str) -> tuple[bool, str]:
        """(allowed, error) for the request's credentials on ``repo``."""
        if self.config.auth == "none":
            return True, ""
        header = self.headers.get("authorization", "")
        if self.config.auth == "basic":
            return self._basic_user() is not None, ""
        if not header.startswith("Bearer "):
            return False, ""
        grant = self.config.tokens.get(header[7:])
        if grant is None:
            return False, "invalid_token"
        user, scope = grant
        if scope != f"repository:{repo}:pull":
            return False, "insufficient_scope"
        if repo in self.config.private and not user:
            return False, "insufficient_scope"
        return True, ""

    def _token(self) -> tuple[int, dict[str, str], bytes]:
        user = ""
        if self.command == "POST":
            refresh = self.form.get("refresh_token", [""])[0]
            if refresh != "refresh-" + "ok":
                return 401, {}, b'{"details":"invalid refresh token"}'
            user, scope = "token-user", self.form.get("scope", [""])[0]
        else:
            if self.headers.get("authorization"):
                found = self._basic_user()
                if found is None:
                    return (
                        401,
                        {"Content-Type": "application/json"},
                        b'{"details":"incorrect username or password"}',
                    )
                user = found
            scope = self.query.get("scope", [""])[0]
        token = secrets.token_urlsafe(24)
        with self.config.lock:
            self.config.tokens[token] = (user, scope)
        doc = {"token": token, "access_token": token, "expires_in": 300}
        return 200, {"Content-Type": "application/json"}, json.dumps(doc).encode()

    def _v2(self) -> tuple[int, dict[str, str], bytes]:
        if self.config.v2_status is not None:
            return self.config.v2_status, {}, b"{}"
        if self.config.auth == "none":
            return 200, {"Content-Type": "application/json"}, b"{}"
        if self.config.auth == "basic" and self._basic_user() is not None:
            return 200, {}, b"{}"
        body = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
        return 401, {"Content-Type": "application/json", **self._challenge()}, body

    def _api(self, path: str) -> tuple[int, dict[str, str], bytes]:
        if not path.startswith("/v2/"):
            return 404, {}, b"not found"
        rest = path[len("/v2/") :]
        if "/manifests/" in rest:
            repo, _, ref = rest.partition("/manifests/")
            kind = "manifest"
        elif rest.endswith("/tags/list"):
            repo, ref, kind = rest[: -len("/tags/list")], "", "tags"
        else:
            return 404, {}, b""
        allowed, error = self._authorized(repo)
        if not allowed:
            scope = f"repository:{repo}:pull"
            body = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
            return 401, {"Content-Type": "application/json", **self._challenge(scope, error)}, body
        if kind == "manifest" and self.command == "HEAD" and self.config.head_405:
            return 405, {}, b""
        tags = self.config.repos.get(repo)
        if tags is None:
            body = b'{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known"}]}'
            return 404, {"Content-Type": "application/json"}, body
        if kind == "tags":
            doc = {"name": repo, "tags": sorted(tags)}
            return 200, {"Content-Type": "application/json"}, json.dumps(doc).encode()
        manifest = tags.get(ref)
        if manifest is None:
            body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}'
            return 404, {"Content-Type": "application/json"}, body
        import hashlib

        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        return 200, {"Content-Type": MANIFEST_TYPE, "Docker-Content-Digest": digest}, manifest


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


class _HttpServer6(_HttpServer):
    address_family = socket.AF_INET6


@dataclass
class RunningServer:
    port: int
    config: RegistryConfig
    stop: Callable[[], None]


def start_registry(
    config: RegistryConfig, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> RunningServer:
    handler = type("Handler", (RegistryHandler,), {"config": config})
    server_class = _HttpServer6 if ":" in host else _HttpServer
    server = server_class((host, 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return RunningServer(server.server_address[1], config, stop)


# --- blackhole and refused ports ---------------------------------------------------------------


def blackhole() -> tuple[int, Callable[[], None]]:
    """A port that completes TCP handshakes (kernel backlog) but never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock.getsockname()[1], sock.close


def full_backlog() -> tuple[int, Callable[[], None]]:
    """A port whose accept queue is full, so new connects get no SYN-ACK: a connect timeout."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)
    port: int = sock.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=2)

    def close() -> None:
        filler.close()
        sock.close()

    return port, close


def refused_port() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


# --- contexts and endpoints --------------------------------------------------------------------


def write_resolv_conf(directory: Path, body: str = "nameserver 127.0.0.1\n") -> Path:
    path = directory / "resolv.conf"
    path.write_text(body)
    return path


def write_hosts(directory: Path, entries: dict[str, str]) -> Path:
    path = directory / "hosts"
    path.write_text("".join(f"{addr} {name}\n" for name, addr in entries.items()))
    return path


def make_ctx(
    tmp_path: Path,
    *,
    hosts: dict[str, str] | None = None,
    dns: DnsServer | None = None,
    resolv_body: str = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    timeout: float = 3.0,
    **kwargs: Any,
) -> ProbeContext:
    """A context that can only reach the test servers: its own resolv.conf and hosts file."""
    return ProbeContext(
        resolv_conf=str(write_resolv_conf(tmp_path, resolv_body)),
        hosts_file=str(write_hosts(tmp_path, hosts or {})),
        dns_port=dns.port if dns is not None else 9,  # discard port: nothing answers there
        timeout=timeout,
        use_system_trust=False,
        **kwargs,
    )


def endpoint(host: str, port: int, scheme: str = "http", **kwargs: Any) -> Endpoint:
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    path = kwargs.pop("path", "/v2")
    return Endpoint(
        url=f"{scheme}://{netloc}{path}",
        scheme="https" if scheme == "https" else "http",
        host=host,
        port=port,
        path=path,
        role=kwargs.pop("role", "upstream"),
        **kwargs,
    )


USER, PASSWORD = "alice", "correct-horse-battery-staple"
GOOD = Credential(username=USER, password=PASSWORD, source="test-secret")
BAD = Credential(username=USER, password="wrong-password-123", source="stale-secret")
