"""One exception hierarchy: every deliberate error is a PullcheckError, unusable input also an
InvalidInput (exit 2, mapped in one place), each keeping the stdlib base its callers catch."""

from __future__ import annotations

import contextlib
import io
import json

import click
import pytest

from agent.cli import cli, main
from agent.cluster.discovery import DiscoveryError
from agent.cluster.leader import LeaseError
from agent.cluster.prepull.jobs import JobFileError
from agent.credentials import CredentialError
from agent.cri import CriError, InvalidEndpoint, RuntimeUnavailable
from agent.errors import InvalidInput, PullcheckError
from agent.hostport import InvalidHostPort
from agent.hosts import HostsConfigError
from agent.node.runner import QueueFull
from agent.probes._tls_context import TlsConfigError
from agent.probes._transport import UnresolvedHostError
from agent.reference import InvalidReference
from agent.service.auth import TokenFileError
from agent.service.config import ConfigError

INPUT_ERRORS: list[tuple[type[Exception], type[Exception]]] = [
    (InvalidReference, ValueError),
    (CredentialError, ValueError),
    (HostsConfigError, ValueError),
    (InvalidEndpoint, ValueError),
    (ConfigError, ValueError),
    (JobFileError, ValueError),
    (InvalidHostPort, ValueError),
    (TokenFileError, RuntimeError),
    (TlsConfigError, Exception),
]
OTHER_ERRORS: list[tuple[type[Exception], type[Exception]]] = [
    (CriError, Exception),
    (RuntimeUnavailable, CriError),
    (DiscoveryError, Exception),
    (LeaseError, Exception),
    (QueueFull, Exception),
    (UnresolvedHostError, OSError),
]


@pytest.mark.parametrize(("error", "base"), INPUT_ERRORS, ids=lambda e: e.__name__)
def test_input_errors_are_invalid_input_and_keep_their_base(
    error: type[Exception], base: type[Exception]
) -> None:
    assert issubclass(error, InvalidInput) and issubclass(error, PullcheckError)
    assert issubclass(error, base)


@pytest.mark.parametrize(("error", "base"), OTHER_ERRORS, ids=lambda e: e.__name__)
def test_other_errors_are_pullcheck_errors_but_not_input_errors(
    error: type[Exception], base: type[Exception]
) -> None:
    assert issubclass(error, PullcheckError) and issubclass(error, base)
    assert not issubclass(error, InvalidInput)


@pytest.mark.parametrize(
    "raised",
    [
        InvalidReference("Nginx", "repository name (Nginx) must be lowercase"),
        ConfigError("pullcheck.yaml: agent.listen: expected HOST:PORT"),
        JobFileError("jobs.yaml", ["jobs.0.image: field required"]),
        InvalidHostPort("invalid port in 'a:b'"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_the_cli_maps_every_invalid_input_to_exit_2_with_one_json_object(
    monkeypatch: pytest.MonkeyPatch, raised: InvalidInput
) -> None:
    @click.command("boom")
    @click.option("--json", "as_json", is_flag=True)
    def boom(as_json: bool) -> None:
        raise raised

    monkeypatch.setitem(cli.commands, "boom", boom)
    stdout, stderr = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
        pytest.raises(SystemExit) as exited,
    ):
        main(["boom", "--json"])
    assert exited.value.code == 2
    body = json.loads(stdout.getvalue())
    assert body == {"success": False, "error": "invalid_input", "message": f"pullcheck: {raised}"}
    assert "Traceback" not in stderr.getvalue()
