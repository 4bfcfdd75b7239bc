"""Networking shared by the probes: TLS contexts, an HTTP client that never resolves names itself,
error classification, and small protocol sniffers.

Name resolution is the DNS probe's job only. The HTTP client connects to the address the chain
already resolved (``EndpointState.host_addresses``) while the URL keeps the hostname, so the
``Host`` header and TLS SNI are the registry's name, exactly as containerd sends them. A hostname
missing from that map fails the request instead of falling back to the system resolver.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import ipaddress
import re
import ssl
import time
import typing
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import httpcore
import httpx

from agent.models import Cause, Endpoint, Phase
from agent.probes._context import ProbeContext

__all__ = [
    "PhaseTrace",
    "TlsConfigError",
    "UnresolvedHostError",
    "build_ssl_context",
    "classify",
    "format_host_port",
    "is_ip_literal",
    "open_client",
    "read_capped",
    "speaks_plain_http",
    "speaks_tls",
    "url_for",
]

MAX_BODY = 4 * 1024 * 1024  # bytes of a body read: error codes, manifests (registries cap 4 MiB)

# OpenSSL reasons seen when a TLS client talks to a plain-HTTP server
_PLAIN_HTTP_SSL_REASONS = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "RECORD_LAYER_FAILURE",
        "HTTP_REQUEST",
        "PACKET_LENGTH_TOO_LONG",
        "UNKNOWN_PROTOCOL",
        "UNEXPECTED_RECORD",
    }
)
_SSL_LOCATION = re.compile(r"\s*\(_ssl\.c:\d+\)")


class UnresolvedHostError(OSError):
    """The HTTP client was asked for a host the DNS probe has not resolved."""


class TlsConfigError(Exception):
    """A CA or client certificate file of the endpoint could not be loaded."""


# --- small helpers ------------------------------------------------------------------------------


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def format_host_port(host: str, port: int) -> str:
    """``host:port`` with IPv6 literals bracketed."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def url_for(endpoint: Endpoint, path: str, query: str = "") -> str:
    """An absolute URL on ``endpoint``; the port is omitted when it is the scheme's default."""
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    default = 443 if endpoint.scheme == "https" else 80
    netloc = host if endpoint.port == default else f"{host}:{endpoint.port}"
    return f"{endpoint.scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def ms_since(start: float) -> float:
    return round((time.monotonic() - start) * 1000.0, 3)


# --- TLS ----------------------------------------------------------------------------------------


def build_ssl_context(
    endpoint: Endpoint, ctx: ProbeContext, *, verify: bool = True
) -> ssl.SSLContext:
    """The client TLS configuration containerd would use for ``endpoint``.

    System trust store (unless disabled) plus ``ctx.cafile`` plus the endpoint's ``ca`` files,
    the endpoint's client certificates, and ``skip_verify``. ``verify=False`` gives a context that
    accepts any certificate (used to capture a certificate that failed verification).
    """
    cafiles = tuple(([ctx.cafile] if ctx.cafile else []) + list(endpoint.ca_files))
    certs = tuple(endpoint.client_certs)
    # Loading the system store costs ~50 ms; contexts are reused while the files are unchanged
    # (hosts.toml and its CA files may change at any time, without a containerd restart).
    stamp = tuple(_mtime(path) for path in cafiles + tuple(p for pair in certs for p in pair))
    return _ssl_context(
        ctx.use_system_trust, cafiles, certs, endpoint.skip_verify or not verify, stamp
    )


def _mtime(path: str) -> float:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return -1.0


@functools.lru_cache(maxsize=32)
def _ssl_context(
    system_trust: bool,
    cafiles: tuple[str, ...],
    client_certs: tuple[tuple[str, str], ...],
    insecure: bool,
    _stamp: tuple[float, ...],
) -> ssl.SSLContext:
    if system_trust:
        context = ssl.create_default_context()
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    for cafile in cafiles:
        try:
            context.load_verify_locations(cafile=cafile)
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(f"unable to load CA cert {cafile}: {_ssl_text(exc)}") from exc
    for cert, key in client_certs:
        try:
            context.load_cert_chain(cert, key or None)
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(f"failed to load X509 key pair {cert}: {_ssl_text(exc)}") from exc
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


_X509_TEXT = {
    2: "certificate signed by unknown authority",  # unable to get issuer certificate
    18: "certificate signed by unknown authority",  # self-signed certificate
    19: "certificate signed by unknown authority",  # self-signed certificate in chain
    20: "certificate signed by unknown authority",  # unable to get local issuer certificate
    21: "certificate signed by unknown authority",  # unable to verify the first certificate
    9: "certificate has expired or is not yet valid",  # not yet valid
    10: "certificate has expired or is not yet valid",  # expired
    62: "certificate is not valid for the requested name",  # hostname mismatch
    64: "certificate is not valid for the requested IP address",  # IP address mismatch
}


def x509_text(exc: ssl.SSLCertVerificationError) -> str:
    """Go-style text for a verification failure, with OpenSSL's own reason in parentheses."""
    reason = exc.verify_message or _ssl_text(exc)
    text = _X509_TEXT.get(exc.verify_code or -1)
    return f"x509: {text} ({reason})" if text else f"x509: {reason}"


def _ssl_text(exc: BaseException) -> str:
    """OpenSSL's message without the ``[SSL: REASON]`` prefix and ``(_ssl.c:N)`` suffix."""
    ssl_message = isinstance(exc, ssl.SSLError) and len(exc.args) > 1
    text = _SSL_LOCATION.sub("", str(exc.args[1]) if ssl_message else str(exc))
    text = re.sub(r"^\[[A-Z0-9_]+: [A-Z0-9_]+\]\s*", "", text).strip()
    if not text and isinstance(exc, OSError):
        text = exc.strerror or ""
    return text or type(exc).__name__


# --- error classification -----------------------------------------------------------------------


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def classify(exc: BaseException) -> tuple[Cause, str]:
    """Map a network exception (any wrapping depth) to a cause and a short, secret-free reason."""
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, UnresolvedHostError):
            return Cause.DNS_FAILURE, str(e)
        if isinstance(e, TlsConfigError):
            return Cause.TLS_ERROR, str(e)
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError):
            return Cause.TLS_ERROR, x509_text(e)
    for e in chain:
        if isinstance(e, ssl.SSLError):
            if e.reason in _PLAIN_HTTP_SSL_REASONS:
                return (
                    Cause.HTTP_HTTPS_MISMATCH,
                    f"server does not speak TLS ({_ssl_text(e)}); "
                    "containerd: http: server gave HTTP response to HTTPS client",
                )
            return Cause.TLS_ERROR, f"TLS error: {_ssl_text(e)}"
    for e in chain:
        if isinstance(e, ConnectionRefusedError):
            return Cause.CONNECTION_REFUSED, "connection refused"
        if isinstance(e, OSError) and e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            # an active rejection (ICMP unreachable / REJECT rule): fast failure, like refused
            return Cause.CONNECTION_REFUSED, e.strerror or "no route to host"
    for e in chain:
        if isinstance(e, (TimeoutError, httpx.TimeoutException, httpcore.TimeoutException)):
            return Cause.TIMEOUT, _timeout_text(e)
    for e in chain:
        if isinstance(e, ConnectionResetError):
            return Cause.UNKNOWN, "connection reset by peer"
        if isinstance(e, (httpx.RemoteProtocolError, httpcore.RemoteProtocolError)):
            text = str(e) or "server closed the connection without a response"
            return Cause.UNKNOWN, f"malformed HTTP response: {text}"
        if isinstance(e, OSError) and e.strerror:
            return Cause.UNKNOWN, e.strerror
    return Cause.UNKNOWN, str(exc) or type(exc).__name__


def _timeout_text(exc: BaseException) -> str:
    if isinstance(exc, (httpx.ConnectTimeout, httpcore.ConnectTimeout)):
        return "timed out connecting"
    if isinstance(exc, (httpx.ReadTimeout, httpcore.ReadTimeout)):
        return "timed out awaiting response"
    if isinstance(exc, (httpx.WriteTimeout, httpcore.WriteTimeout)):
        return "timed out sending request"
    return "timed out"


# --- an HTTP client that only connects to already-resolved addresses ---------------------------


class _ResolvedBackend(httpcore.AsyncNetworkBackend):
    """Connects to the address the chain resolved for a hostname, never to the system resolver."""

    def __init__(self, addresses: Mapping[str, str]) -> None:
        self._addresses = addresses
        self._inner = httpcore.AnyIOBackend()

    def _address(self, host: str) -> str:
        if is_ip_literal(host):
            return host
        address = self._addresses.get(host.lower().rstrip("."))
        if address is None:
            raise UnresolvedHostError(
                f"{host} was not resolved by the DNS probe (the system resolver is never used)"
            )
        return address

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            address = self._address(host)
        except UnresolvedHostError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return await self._inner.connect_tcp(
            address,
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not used by registry probes")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


_HTTPCORE_TO_HTTPX: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
)


@contextlib.contextmanager
def _map_httpcore_errors() -> typing.Iterator[None]:
    try:
        yield
    except Exception as exc:
        for source, target in _HTTPCORE_TO_HTTPX:
            if isinstance(exc, source):
                raise target(str(exc)) from exc
        raise


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: typing.AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _map_httpcore_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()


class _ResolvedTransport(httpx.AsyncBaseTransport):
    """An httpx transport over an httpcore pool that uses :class:`_ResolvedBackend`."""

    def __init__(self, ssl_context: ssl.SSLContext, addresses: Mapping[str, str]) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            network_backend=_ResolvedBackend(addresses),
            http1=True,
            http2=False,
            max_connections=4,
            retries=0,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _map_httpcore_errors():
            response = await self._pool.handle_async_request(core_request)
        assert isinstance(response.stream, typing.AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


@contextlib.asynccontextmanager
async def open_client(endpoint: Endpoint, ctx: ProbeContext) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for ``endpoint`` (and its token realm) that connects only to resolved
    addresses in ``ctx.state.host_addresses``. Raises :class:`TlsConfigError` for bad CA files."""
    ssl_context = build_ssl_context(endpoint, ctx)
    transport = _ResolvedTransport(ssl_context, ctx.state.host_addresses)
    async with httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(ctx.timeout),
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": ctx.user_agent},
    ) as client:
        yield client


async def read_capped(response: httpx.Response, limit: int = MAX_BODY) -> bytes:
    """Up to ``limit`` bytes of a streamed response body; closes the response."""
    body = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) >= limit:
                break
    finally:
        await response.aclose()
    return bytes(body[:limit])


class PhaseTrace:
    """An httpcore ``trace`` extension turning connection events into blackbox-style phases:
    ``connect``, ``tls``, ``processing`` (request sent → headers received), ``transfer`` (body)."""

    _PHASES: typing.ClassVar[dict[str, str]] = {
        "connection.connect_tcp": "connect",
        "connection.start_tls": "tls",
        "http11.send_request_headers": "processing",
        "http11.receive_response_headers": "processing",
        "http11.receive_response_body": "transfer",
    }

    def __init__(self, label: str = "") -> None:
        self.label = label
        self.phases: list[Phase] = []
        self._open: dict[str, float] = {}

    async def __call__(self, event: str, info: dict[str, Any]) -> None:
        name, _, stage = event.rpartition(".")
        phase = self._PHASES.get(name)
        if phase is None:
            return
        now = time.monotonic()
        if stage == "started":
            self._open.setdefault(phase, now)
            return
        if phase == "processing" and name == "http11.send_request_headers" and stage == "complete":
            return  # processing ends when the response headers arrive
        started = self._open.pop(phase, None)
        if started is None:
            return
        detail = ""
        if stage == "failed":
            detail = classify(info["exception"])[1] if "exception" in info else "failed"
        label = f"{self.label} {phase}" if self.label else phase
        self.phases.append(
            Phase(
                name=label,
                ok=stage == "complete",
                duration_ms=round((now - started) * 1000, 3),
                detail=detail,
            )
        )

    def close_open(self, detail: str) -> None:
        """Record phases still open when the request failed (e.g. a read timeout)."""
        now = time.monotonic()
        for phase, started in list(self._open.items()):
            label = f"{self.label} {phase}" if self.label else phase
            self.phases.append(
                Phase(
                    name=label,
                    ok=False,
                    duration_ms=round((now - started) * 1000, 3),
                    detail=detail,
                )
            )
        self._open.clear()


# --- protocol sniffers --------------------------------------------------------------------------


async def speaks_plain_http(address: str, port: int, host: str, timeout: float) -> bool:
    """Does the server answer a plain ``GET /v2/`` with an HTTP response (and not an
    "HTTP request to an HTTPS server" complaint)?"""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address, port)
            writer.write(f"GET /v2/ HTTP/1.0\r\nHost: {host}\r\n\r\n".encode("ascii", "replace"))
            await writer.drain()
            data = b""
            while len(data) < 2048:
                chunk = await reader.read(2048)
                if not chunk:
                    break
                data += chunk
    except (OSError, TimeoutError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
    if not data.startswith(b"HTTP/"):
        return False
    return b"HTTPS" not in data.upper()


async def speaks_tls(address: str, port: int, host: str, timeout: float) -> bool:
    """Does the server complete a TLS handshake (any certificate accepted)?"""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(
                address, port, ssl=context, server_hostname=None if is_ip_literal(host) else host
            )
    except (OSError, TimeoutError, ssl.SSLError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
    return True
