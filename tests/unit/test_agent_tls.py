"""Aggregator → agent over HTTPS: the agent serves TLS with its certificate (uvicorn, as
``pullcheck agent`` runs it), the aggregator verifies it against a CA file and the name the
certificate carries; without the CA the call fails; config errors name the files."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import click
import pytest
import uvicorn
from fastapi import FastAPI

from agent.cli._serve import check_tls, uvicorn_config
from agent.cluster.client import AgentClient, AgentTls, AgentTlsError, FailureKind
from agent.node.models import HealthAnswer
from agent.service.config import ConfigError, Limits, Settings
from tests.fakes.kube_api import KubeTls, make_kube_tls


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "node": "node-tls"}

    return app


@pytest.fixture
async def https_agent(tmp_path: Path) -> AsyncIterator[tuple[str, KubeTls]]:
    tls = make_kube_tls(tmp_path)  # a CA and a certificate for 127.0.0.1 / localhost
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    config = uvicorn_config(
        _app(), "127.0.0.1", port, "warning", Limits(), (str(tls.cert_file), str(tls.key_file))
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            await asyncio.sleep(0.01)
    yield f"https://127.0.0.1:{port}", tls
    server.should_exit = True
    await task


async def test_the_aggregator_verifies_the_agent_with_its_ca(
    https_agent: tuple[str, KubeTls],
) -> None:
    url, tls = https_agent
    client = AgentClient(tls=AgentTls(str(tls.ca_file)))
    try:
        answer = await client.health(url)
    finally:
        await client.aclose()
    assert isinstance(answer, HealthAnswer) and answer.node == "node-tls"


async def test_the_certificate_is_checked_for_the_configured_name(
    https_agent: tuple[str, KubeTls],
) -> None:
    url, tls = https_agent
    # the agents' certificate names a Service, not the pod IP dialled: checked by that name
    named = AgentClient(tls=AgentTls(str(tls.ca_file), "kubernetes.default.svc"))
    wrong = AgentClient(tls=AgentTls(str(tls.ca_file), "pullcheck-agent.pullcheck.svc"))
    untrusted = AgentClient()  # the system trust store does not know the test CA
    try:
        assert isinstance(await named.health(url), HealthAnswer)
        for client in (wrong, untrusted):
            failure = await client.health(url)
            assert not isinstance(failure, HealthAnswer)
            assert failure.kind is FailureKind.UNREACHABLE
            assert (
                "CERTIFICATE_VERIFY_FAILED" in failure.message or "certificate" in failure.message
            )
    finally:
        for client in (named, wrong, untrusted):
            await client.aclose()


def test_a_bad_ca_file_or_key_pair_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.crt"
    with pytest.raises(AgentTlsError, match=re.escape(f"agent CA bundle {missing}")):
        AgentTls(str(missing)).context()
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate\n")
    with pytest.raises(AgentTlsError, match=r"garbage\.crt"):
        AgentTls(str(garbage)).context()
    with pytest.raises(click.UsageError, match=r"TLS certificate .*nope\.crt"):
        check_tls((str(missing), str(missing)))


def test_the_agent_needs_both_certificate_and_key() -> None:
    with pytest.raises(ValueError, match="tls_cert_file and tls_key_file go together"):
        Settings.model_validate({"agent": {"tls_cert_file": "/etc/tls.crt"}})
    section = Settings.model_validate(
        {"agent": {"tls_cert_file": "/etc/tls.crt", "tls_key_file": "/etc/tls.key"}}
    ).agent
    assert section.tls == ("/etc/tls.crt", "/etc/tls.key")
    assert issubclass(AgentTlsError, ConfigError)
