"""The endpoint chain: containerd's HTTP fallback, and the evidence kept when a run is cut off."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.models import Cause, Endpoint, TlsEvidence
from agent.probes import ChainProgress, RegistryProbe, probe_endpoint
from tests.unit.test_probes_support import (
    Pki,
    RegistryConfig,
    RunningServer,
    blackhole,
    endpoint,
    forbid_system_resolver,  # noqa: F401  (fixture)
    make_ctx,
    make_pki,
    manifest_bytes,
    server_ssl_context,
    start_registry,
)

pytestmark = pytest.mark.usefixtures("forbid_system_resolver")

REPOS = {"pullcheck/good": {"1.0": manifest_bytes("1.0")}}
LOOPBACK = "127.0.0.1"


@pytest.fixture(scope="module")
def plain() -> Iterator[RunningServer]:
    server = start_registry(RegistryConfig(repos=dict(REPOS)))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A TLS registry whose certificate nobody trusts (the probe context has no CA for it)."""
    pki: Pki = make_pki(tmp_path_factory.mktemp("pki"))
    server = start_registry(
        RegistryConfig(repos=dict(REPOS)), tls=server_ssl_context(pki.cert_file, pki.key_file)
    )
    yield server
    server.stop()


def _fallback(port: int) -> Endpoint:
    """What agent.hosts gives a loopback registry on containerd 2.1: HTTPS first, unverified."""
    return endpoint(LOOPBACK, port, "https", skip_verify=True, http_fallback=True)


# --- containerd's HTTP fallback (loopback registries) ------------------------------------------


async def test_fallback_endpoint_reaches_a_plain_http_registry(
    tmp_path: Path, plain: RunningServer
) -> None:
    ctx = make_ctx(tmp_path, repository="pullcheck/good", tag_or_digest="1.0")
    report = await probe_endpoint(_fallback(plain.port), ctx)
    assert report.success, report.summary
    assert [p.probe for p in report.probes] == ["dns", "tcp", "tls", "http", "manifest"]
    tls = report.probes[2]
    assert tls.success and tls.phases[-1].name == "http fallback"
    assert report.probes[3].target == f"http://{LOOPBACK}:{plain.port}/v2/"
    assert report.probes[4].target.startswith(f"http://{LOOPBACK}:{plain.port}/v2/pullcheck/")
    assert report.summary.startswith(f"http://{LOOPBACK}:{plain.port} (127.0.0.1) reachable")
    assert "falls back to http" in report.summary
    # the report names the endpoint as used: plain HTTP, reached through the fallback
    assert report.endpoint.url == f"http://{LOOPBACK}:{plain.port}/v2"
    assert report.endpoint.scheme == "http" and report.endpoint.http_fallback


async def test_fallback_endpoint_uses_tls_without_verification_when_offered(
    tmp_path: Path, self_signed: RunningServer
) -> None:
    ctx = make_ctx(tmp_path, repository="pullcheck/good", tag_or_digest="1.0")
    report = await probe_endpoint(_fallback(self_signed.port), ctx)
    assert report.success, report.summary
    tls = report.probes[2].evidence
    assert isinstance(tls, TlsEvidence) and tls.skip_verify and not tls.verified
    assert report.probes[3].target.startswith("https://")
    assert "falls back" not in report.summary


async def test_without_fallback_plain_http_behind_https_is_a_mismatch(
    tmp_path: Path, plain: RunningServer
) -> None:
    ctx = make_ctx(tmp_path, repository="pullcheck/good", tag_or_digest="1.0")
    report = await probe_endpoint(endpoint(LOOPBACK, plain.port, "https"), ctx)
    assert report.cause is Cause.HTTP_HTTPS_MISMATCH, report.summary
    assert [p.probe for p in report.probes] == ["dns", "tcp", "tls"]


# --- evidence kept when the run is cut off -----------------------------------------------------


async def _until(condition: Callable[[], bool], limit: float = 10.0) -> None:
    async def wait() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(wait(), limit)


async def test_cancelled_run_keeps_finished_probes_and_marks_the_cut_step(
    tmp_path: Path, plain: RunningServer
) -> None:
    port, close = blackhole()
    try:
        ctx = make_ctx(tmp_path, repository="pullcheck/good", tag_or_digest="1.0", timeout=30)
        registry = RegistryProbe(
            [endpoint(LOOPBACK, plain.port, role="mirror"), endpoint(LOOPBACK, port, "https")], ctx
        )
        task = asyncio.create_task(registry.run())
        mirror, hung = registry.chains
        await _until(lambda: mirror.report is not None and hung.running == "tls")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        close()
    first, second = registry.so_far(Cause.CANCELLED, "cancelled before it finished")
    assert first.success and first is mirror.report
    assert not second.success and second.cause is Cause.CANCELLED
    assert [(p.probe, p.success, p.cause) for p in second.probes] == [
        ("dns", True, None),
        ("tcp", True, None),
        ("tls", False, Cause.CANCELLED),
    ]
    assert second.summary == (f"TLS handshake with {LOOPBACK}:{port}: cancelled before it finished")
    assert second.probes[-1].target == f"{LOOPBACK}:{port}"


def test_a_chain_that_never_started_says_so() -> None:
    chain = ChainProgress(endpoint(LOOPBACK, 5000))
    report = chain.so_far(Cause.TIMEOUT, "no answer before the test deadline")
    assert report.cause is Cause.TIMEOUT and report.probes == []
    assert report.summary == (
        f"http://{LOOPBACK}:5000/v2 not probed: no answer before the test deadline"
    )
