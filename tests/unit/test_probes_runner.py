"""The one probe runner: results built in one place, prerequisites supplied, and whatever a
probe body raises caught and classified once (a probe reports, it never raises)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.credentials import Credential
from agent.models import Cause, DnsEvidence, HttpEvidence, ProbeResult
from agent.probes import probe_dns, probe_http, probe_tls
from agent.probes._runner import ProbeRun, run_probe
from agent.probes._tls_context import TlsConfigError
from tests.unit.test_probes_support import (
    RegistryConfig,
    endpoint,
    forbid_system_resolver,  # noqa: F401  (fixture)
    make_ctx,
    start_registry,
)

pytestmark = pytest.mark.usefixtures("forbid_system_resolver")

SECRET = "s3cret-Passw0rd-for-the-runner"


def _failing(exc: Exception) -> object:
    async def body(run: ProbeRun) -> ProbeResult:
        run.action = f"GET http://r.test/v2/ (127.0.0.1) as alice:{SECRET}"
        run.evidence = HttpEvidence(method="GET", url="http://r.test/v2/")
        run.phase("connect", True, run.started, "connected")
        raise exc

    return body


@pytest.mark.parametrize(
    ("exc", "cause", "ending"),
    [
        (RuntimeError(f"boom {SECRET}"), Cause.UNKNOWN, "boom <redacted>"),
        (TimeoutError(), Cause.TIMEOUT, "timed out after 0.5 s"),
        (ConnectionRefusedError(111, "refused"), Cause.CONNECTION_REFUSED, "connection refused"),
        (
            TlsConfigError("unable to load CA cert /x.pem: no such file"),
            Cause.TLS_ERROR,
            "x.pem: no such file",
        ),
    ],
    ids=["unexpected", "timeout", "refused", "tls-config"],
)
async def test_an_exception_becomes_a_classified_redacted_failure(
    tmp_path: Path, exc: Exception, cause: Cause, ending: str
) -> None:
    ctx = make_ctx(tmp_path, timeout=0.5, credentials=[Credential("alice", SECRET)])
    result = await run_probe("http", "http://r.test/v2/", ctx, _failing(exc))  # type: ignore[arg-type]
    assert not result.success and result.cause is cause
    assert result.error.startswith("GET http://r.test/v2/ (127.0.0.1) as alice:<redacted>: ")
    assert result.error.endswith(ending)
    assert SECRET not in result.model_dump_json()
    assert isinstance(result.evidence, HttpEvidence)  # the evidence so far is kept
    assert result.phases[0].name == "connect"  # and so are the phases
    if isinstance(exc, TlsConfigError):
        assert result.phases[-1].name == "config" and not result.phases[-1].ok


async def test_a_real_probe_that_hits_a_bug_reports_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object) -> list[str]:
        raise ValueError("hosts file parser bug")

    monkeypatch.setattr("agent.probes.dns.hosts_file_lookup", broken)
    ctx = make_ctx(tmp_path)
    result = await probe_dns(endpoint("r.pullcheck.test", 80), ctx)
    assert (result.success, result.cause) == (False, Cause.UNKNOWN)
    assert result.error == "lookup r.pullcheck.test: hosts file parser bug"
    assert isinstance(result.evidence, DnsEvidence) and result.evidence.host == "r.pullcheck.test"
    assert ctx.state.addresses == [] and ctx.state.dns_error is result  # the chain knows


async def test_an_unmet_prerequisite_is_the_dns_failure_that_caused_it(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)  # r.pullcheck.test is in no hosts file, and no nameserver answers
    tls = await probe_tls(endpoint("r.pullcheck.test", 443, "https"), ctx)
    http = await probe_http(endpoint("r.pullcheck.test", 80), ctx)
    assert tls.cause is http.cause is Cause.DNS_FAILURE
    assert ctx.state.dns_error is not None
    assert tls.error == http.error == ctx.state.dns_error.error
    assert tls.evidence is None and isinstance(http.evidence, HttpEvidence)


async def test_a_prerequisite_is_resolved_once_and_reused(tmp_path: Path) -> None:
    server = start_registry(RegistryConfig())
    try:
        ctx = make_ctx(tmp_path, hosts={"r.pullcheck.test": "127.0.0.1"})
        first = await probe_http(endpoint("r.pullcheck.test", server.port), ctx)
        (tmp_path / "hosts").write_text("")  # a second lookup would now fail
        second = await probe_http(endpoint("r.pullcheck.test", server.port), ctx)
    finally:
        server.stop()
    assert first.success and second.success, (first.error, second.error)
    assert ctx.state.addresses == ["127.0.0.1"]
