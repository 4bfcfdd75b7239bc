"""TCP and TLS probes against real loopback servers (TLS with a generated test CA)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.models import Cause, TcpEvidence, TlsEvidence
from agent.probes import probe_tcp, probe_tls
from tests.unit.test_probes_support import (
    Pki,
    RegistryConfig,
    RunningServer,
    blackhole,
    endpoint,
    forbid_system_resolver,  # noqa: F401  (fixture)
    full_backlog,
    make_ctx,
    make_pki,
    refused_port,
    server_ssl_context,
    start_registry,
)

pytestmark = pytest.mark.usefixtures("forbid_system_resolver")

REG = "registry.pullcheck.test"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(pki: Pki) -> Iterator[RunningServer]:
    server = start_registry(RegistryConfig(), tls=server_ssl_context(pki.cert_file, pki.key_file))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def plain_server() -> Iterator[RunningServer]:
    server = start_registry(RegistryConfig())
    yield server
    server.stop()


def _tls(result: object) -> TlsEvidence:
    evidence = getattr(result, "evidence", None)
    assert isinstance(evidence, TlsEvidence)
    return evidence


# --- tcp ---------------------------------------------------------------------------------------


async def test_tcp_connects_and_reports_each_family(
    tmp_path: Path, plain_server: RunningServer
) -> None:
    # the name has an IPv6 address where nothing listens: reported, but v4 succeeds
    (tmp_path / "hosts").write_text("")
    ctx = make_ctx(tmp_path)
    (tmp_path / "hosts").write_text(f"127.0.0.1 {REG}\n::1 {REG}\n")
    result = await probe_tcp(endpoint(REG, plain_server.port), ctx)
    assert result.success and result.probe == "tcp"
    assert isinstance(result.evidence, TcpEvidence)
    assert result.evidence.address == "127.0.0.1" and result.evidence.family == "ipv4"
    assert [p.name for p in result.phases] == [
        f"connect 127.0.0.1:{plain_server.port}",
        f"connect [::1]:{plain_server.port}",
    ]
    assert [p.ok for p in result.phases] == [True, False]
    assert result.phases[1].detail == "ipv6: connection refused"
    assert ctx.state.connected == "127.0.0.1"
    assert ctx.state.addresses == ["127.0.0.1", "::1"]  # resolved on demand through the dns probe


async def test_tcp_refused(tmp_path: Path) -> None:
    port = refused_port()
    ctx = make_ctx(tmp_path, hosts={"refused.pullcheck.test": "127.0.0.1"})
    result = await probe_tcp(endpoint("refused.pullcheck.test", port), ctx)
    assert result.cause == Cause.CONNECTION_REFUSED
    assert result.error == f"TCP connect to refused.pullcheck.test:{port} (127.0.0.1) refused"


async def test_tcp_connect_timeout(tmp_path: Path) -> None:
    port, close = full_backlog()
    try:
        ctx = make_ctx(tmp_path, hosts={"slow.pullcheck.test": "127.0.0.1"}, timeout=0.4)
        result = await probe_tcp(endpoint("slow.pullcheck.test", port), ctx)
    finally:
        close()
    assert result.cause == Cause.TIMEOUT
    assert (
        result.error
        == f"TCP connect to slow.pullcheck.test:{port} (127.0.0.1) timed out after 0.4 s"
    )


async def test_tcp_dns_failure_when_run_alone(tmp_path: Path) -> None:
    result = await probe_tcp(endpoint("nowhere.pullcheck.test", 80), make_ctx(tmp_path))
    assert result.cause == Cause.DNS_FAILURE and result.probe == "tcp"


# --- tls ---------------------------------------------------------------------------------------


async def test_tls_verified_with_endpoint_ca(
    tmp_path: Path, pki: Pki, tls_server: RunningServer
) -> None:
    ctx = make_ctx(tmp_path, hosts={REG: "127.0.0.1"})
    ep = endpoint(REG, tls_server.port, "https", ca_files=[str(pki.ca_file)])
    result = await probe_tls(ep, ctx)
    assert result.success, result.error
    ev = _tls(result)
    assert ev.verified and ev.server_name == REG and ev.address == "127.0.0.1"
    assert ev.version.startswith("TLSv1.") and ev.cipher
    assert ev.subject == f"CN={REG}" and ev.issuer == "CN=pullcheck test CA"
    assert REG in ev.sans and "::1" in ev.sans and "127.0.0.1" in ev.sans
    assert ev.not_before < ev.not_after and ev.ca_files == [str(pki.ca_file)]
    assert ctx.state.tls_ok is True


async def test_tls_extra_cafile_from_context(
    tmp_path: Path, pki: Pki, tls_server: RunningServer
) -> None:
    ctx = make_ctx(tmp_path, hosts={REG: "127.0.0.1"}, cafile=str(pki.ca_file))
    result = await probe_tls(endpoint(REG, tls_server.port, "https"), ctx)
    assert result.success and _tls(result).verified


async def test_tls_untrusted_captures_certificate(
    tmp_path: Path, pki: Pki, tls_server: RunningServer
) -> None:
    ctx = make_ctx(tmp_path, hosts={"untrusted.pullcheck.test": "127.0.0.1"})
    ep = endpoint(
        "untrusted.pullcheck.test", tls_server.port, "https", ca_files=[str(pki.other_ca_file)]
    )
    result = await probe_tls(ep, ctx)
    assert result.cause == Cause.TLS_ERROR
    assert "x509: certificate signed by unknown authority" in result.error
    assert result.error.startswith(
        f"TLS handshake with untrusted.pullcheck.test:{tls_server.port} (127.0.0.1) failed: x509:"
    )
    ev = _tls(result)
    assert not ev.verified and ev.verify_error.startswith("x509: certificate signed by unknown")
    assert ev.subject == f"CN={REG}" and ev.issuer == "CN=pullcheck test CA"  # captured anyway
    assert [p.name for p in result.phases] == ["handshake", "handshake (no verification)"]


async def test_tls_hostname_mismatch(tmp_path: Path, pki: Pki, tls_server: RunningServer) -> None:
    ctx = make_ctx(tmp_path, hosts={"wrong.pullcheck.test": "127.0.0.1"})
    ep = endpoint("wrong.pullcheck.test", tls_server.port, "https", ca_files=[str(pki.ca_file)])
    result = await probe_tls(ep, ctx)
    assert result.cause == Cause.TLS_ERROR
    assert result.error.endswith(
        "x509: certificate is valid for registry.pullcheck.test, auth.pullcheck.test, localhost, "
        "127.0.0.1, ::1, not wrong.pullcheck.test"
    )


async def test_tls_expired(tmp_path: Path, pki: Pki) -> None:
    server = start_registry(
        RegistryConfig(), tls=server_ssl_context(pki.expired_cert_file, pki.expired_key_file)
    )
    try:
        ctx = make_ctx(tmp_path, hosts={REG: "127.0.0.1"})
        result = await probe_tls(
            endpoint(REG, server.port, "https", ca_files=[str(pki.ca_file)]), ctx
        )
    finally:
        server.stop()
    assert result.cause == Cause.TLS_ERROR
    assert "x509: certificate has expired or is not yet valid: expired at" in result.error


async def test_tls_skip_verify(tmp_path: Path, tls_server: RunningServer) -> None:
    ctx = make_ctx(tmp_path, hosts={"untrusted.pullcheck.test": "127.0.0.1"})
    ep = endpoint("untrusted.pullcheck.test", tls_server.port, "https", skip_verify=True)
    result = await probe_tls(ep, ctx)
    ev = _tls(result)
    assert result.success and ev.skip_verify and not ev.verified and ev.subject == f"CN={REG}"


async def test_tls_ipv6_literal(tmp_path: Path, pki: Pki) -> None:
    server = start_registry(
        RegistryConfig(), tls=server_ssl_context(pki.cert_file, pki.key_file), host="::1"
    )
    try:
        ep = endpoint("::1", server.port, "https", ca_files=[str(pki.ca_file)])
        result = await probe_tls(ep, make_ctx(tmp_path))
    finally:
        server.stop()
    assert result.success, result.error
    assert _tls(result).address == "::1"


async def test_tls_against_plain_http_is_mismatch(
    tmp_path: Path, plain_server: RunningServer
) -> None:
    ctx = make_ctx(tmp_path, hosts={"mismatch.pullcheck.test": "127.0.0.1"}, timeout=1.0)
    result = await probe_tls(endpoint("mismatch.pullcheck.test", plain_server.port, "https"), ctx)
    assert result.cause == Cause.HTTP_HTTPS_MISMATCH, result.error
    assert "server speaks plain HTTP" in result.error
    assert "http: server gave HTTP response to HTTPS client" in result.error


async def test_tls_handshake_timeout(tmp_path: Path) -> None:
    port, close = blackhole()
    try:
        ctx = make_ctx(tmp_path, hosts={"blackhole.pullcheck.test": "127.0.0.1"}, timeout=0.3)
        result = await probe_tls(endpoint("blackhole.pullcheck.test", port, "https"), ctx)
    finally:
        close()
    assert result.cause == Cause.TIMEOUT
    assert result.error == (
        f"TLS handshake with blackhole.pullcheck.test:{port} (127.0.0.1) timed out after 0.3 s"
    )


async def test_tls_bad_ca_file(tmp_path: Path, tls_server: RunningServer) -> None:
    ctx = make_ctx(tmp_path, hosts={REG: "127.0.0.1"})
    ep = endpoint(REG, tls_server.port, "https", ca_files=[str(tmp_path / "missing.pem")])
    result = await probe_tls(ep, ctx)
    assert result.cause == Cause.TLS_ERROR and "unable to load CA cert" in result.error


async def test_tls_skipped_for_http(tmp_path: Path) -> None:
    result = await probe_tls(endpoint(REG, 80), make_ctx(tmp_path))
    assert result.success and result.evidence is None and result.phases[0].name == "skip"
