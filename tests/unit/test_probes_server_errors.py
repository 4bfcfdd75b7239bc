"""The probes name a registry's HTTP 5xx ``registry_error`` and a connection that broke after it
was established ``connection_reset``, with the endpoint, the status and the way it broke."""

from __future__ import annotations

import errno
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from agent.models import Cause, HttpEvidence, ManifestEvidence, TokenEvidence
from agent.probes import probe_endpoint, probe_http, probe_manifest, probe_token
from agent.probes._classify import classify
from tests.unit.test_probes_support import (
    RegistryConfig,
    RegistryHandler,
    RunningServer,
    endpoint,
    forbid_system_resolver,  # noqa: F401  (fixture)
    make_ctx,
    manifest_bytes,
    start_registry,
)

pytestmark = pytest.mark.usefixtures("forbid_system_resolver")

REG = "registry.pullcheck.test"
HOSTS = {REG: "127.0.0.1"}
REPOS = {"pullcheck/good": {"1.0": manifest_bytes("1.0")}}
UNAVAILABLE = b'{"errors":[{"code":"UNAVAILABLE","message":"service unavailable"}]}'

Answer = tuple[int, dict[str, str], bytes] | None


def _only(
    path: str, answer: tuple[int, dict[str, str], bytes]
) -> Callable[[RegistryHandler], Answer]:
    """A route answering ``answer`` for exactly ``path`` (others fall through)."""

    def route(handler: RegistryHandler) -> Answer:
        return answer if handler.path.split("?")[0] == path else None

    return route


@pytest.fixture
def registry() -> Iterator[RunningServer]:
    server = start_registry(RegistryConfig(repos=dict(REPOS)))
    yield server
    server.stop()


# --- HTTP 5xx -----------------------------------------------------------------------------------


async def test_v2_503_is_registry_error_with_retry_after(
    tmp_path: Path, registry: RunningServer
) -> None:
    registry.config.routes["/v2/"] = _only("/v2/", (503, {"Retry-After": "120"}, UNAVAILABLE))
    result = await probe_http(endpoint(REG, registry.port), make_ctx(tmp_path, hosts=HOSTS))
    url = f"http://{REG}:{registry.port}/v2/"
    assert result.cause is Cause.REGISTRY_ERROR
    assert result.error == (
        f"GET {url} → 503 Service Unavailable (Retry-After 120): unavailable: service unavailable"
    )
    assert isinstance(result.evidence, HttpEvidence) and result.evidence.status == 503


@pytest.mark.parametrize("status", [500, 502, 504, 599])
async def test_manifest_5xx_is_registry_error(
    tmp_path: Path, registry: RunningServer, status: int
) -> None:
    path = "/v2/pullcheck/good/manifests/1.0"
    registry.config.routes[path] = _only(path, (status, {}, b"<html>bad gateway</html>"))
    ctx = make_ctx(tmp_path, hosts=HOSTS, repository="pullcheck/good", tag_or_digest="1.0")
    result = await probe_manifest(endpoint(REG, registry.port), ctx)
    assert result.cause is Cause.REGISTRY_ERROR
    assert result.error.startswith(f"HEAD http://{REG}:{registry.port}{path} → {status}")
    assert isinstance(result.evidence, ManifestEvidence) and result.evidence.status == status


async def test_token_service_502_is_registry_error(tmp_path: Path, registry: RunningServer) -> None:
    registry.config.auth = "bearer"
    registry.config.realm = f"http://{REG}:{registry.port}/token"
    registry.config.routes["/token"] = _only("/token", (502, {"Retry-After": "30"}, b"bad gateway"))
    ctx = make_ctx(tmp_path, hosts=HOSTS, repository="pullcheck/good", tag_or_digest="1.0")
    report = await probe_endpoint(endpoint(REG, registry.port), ctx)
    assert report.cause is Cause.REGISTRY_ERROR
    token = next(p for p in report.probes if p.probe == "token")
    assert token.cause is Cause.REGISTRY_ERROR
    assert token.error.startswith(f"token service failing: GET {registry.config.realm}?")
    assert token.error.endswith("→ 502 Bad Gateway (anonymous) (Retry-After 30)"), token.error
    assert isinstance(token.evidence, TokenEvidence) and token.evidence.status == 502
    assert report.summary == token.error or token.error in report.summary


async def test_fresh_challenge_whose_token_service_fails(
    tmp_path: Path, registry: RunningServer
) -> None:
    # /v2/ is open, the repository challenges: the manifest probe fetches the token itself
    registry.config.auth = "bearer"
    registry.config.v2_status = 200
    registry.config.realm = f"http://{REG}:{registry.port}/token"
    registry.config.routes["/token"] = _only("/token", (504, {}, b"gateway timeout"))
    ctx = make_ctx(tmp_path, hosts=HOSTS, repository="pullcheck/good", tag_or_digest="1.0")
    result = await probe_token(endpoint(REG, registry.port), ctx)
    assert result.success  # no Bearer challenge on /v2/: nothing to fetch yet
    result = await probe_manifest(endpoint(REG, registry.port), ctx)
    assert result.cause is Cause.REGISTRY_ERROR
    assert "token service failing" in result.error and "504 Gateway Timeout" in result.error


async def test_token_service_401_still_unauthorized(
    tmp_path: Path, registry: RunningServer
) -> None:
    registry.config.auth = "bearer"
    registry.config.v2_status = 200
    registry.config.realm = f"http://{REG}:{registry.port}/token"
    registry.config.routes["/token"] = _only("/token", (401, {}, b"{}"))
    ctx = make_ctx(tmp_path, hosts=HOSTS, repository="pullcheck/good", tag_or_digest="1.0")
    result = await probe_manifest(endpoint(REG, registry.port), ctx)
    assert result.cause is Cause.UNAUTHORIZED


# --- a connection that breaks ---------------------------------------------------------------


def _raw_server(answer: Callable[[socket.socket], None]) -> tuple[int, Callable[[], None]]:
    """A TCP server that reads one request head per connection and lets ``answer`` reply."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    answer(conn)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def stop() -> None:
        stopping.set()
        thread.join(2)
        listener.close()

    return listener.getsockname()[1], stop


def _reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _half_body(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"{" * 10)


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (_reset, "connection reset by peer"),
        (_half_body, "connection closed mid-answer"),
    ],
)
async def test_broken_connection_is_connection_reset(
    tmp_path: Path, answer: Callable[[socket.socket], None], reason: str
) -> None:
    port, stop = _raw_server(answer)
    try:
        result = await probe_http(endpoint(REG, port), make_ctx(tmp_path, hosts=HOSTS))
    finally:
        stop()
    assert result.cause is Cause.CONNECTION_RESET, result.error
    assert result.error.startswith(f"GET http://{REG}:{port}/v2/ (127.0.0.1): {reason}")


def test_classify_broken_connections() -> None:
    reset = httpx.ReadError("boom")
    reset.__cause__ = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    assert classify(reset) == (Cause.CONNECTION_RESET, "connection reset by peer")
    assert classify(BrokenPipeError(errno.EPIPE, "Broken pipe"))[0] is Cause.CONNECTION_RESET
    closed = httpx.RemoteProtocolError(
        "peer closed connection without sending complete message body: received 10 bytes, "
        "expected 1000"
    )
    assert classify(closed)[0] is Cause.CONNECTION_RESET
    # a malformed answer is no broken connection
    assert classify(httpx.RemoteProtocolError("illegal header line"))[0] is Cause.UNKNOWN
