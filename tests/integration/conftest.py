"""Fixtures for the integration tests: the lab's main node as pull-test settings, a work
directory holding the bearer token, agents on lab nodes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from agent.pulltest import NodeSettings
from lab import control
from lab.info import LabInfo
from lab.servers import TOKEN, Server, agent_config, server

NODES = 3


@pytest.fixture(scope="module")
def node(lab: LabInfo) -> NodeSettings:
    """The lab's main containerd as the node a pull test runs on.

    The hosts file stays the node's /etc/hosts: the lab's containerd resolves ``localhost`` there.
    """
    return NodeSettings(
        endpoint=lab.endpoint,
        resolv_conf=Path(lab.resolv_conf),
        registry_config_path=lab.registry_config_path,
        probe_timeout=5.0,
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A directory per test module for server configs and logs, with ``token`` in it."""
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    (path / "token").write_text(TOKEN + "\n")
    return path


@pytest.fixture(scope="module")
def agents(lab: LabInfo, workdir: Path) -> Iterator[dict[str, Server]]:
    """A real agent on each of ``NODES`` lab nodes (own containerd, own CRI socket)."""
    endpoints = control.ensure_nodes(lab, NODES)
    with ExitStack() as stack:
        yield {
            name: stack.enter_context(
                server("agent", agent_config(lab, workdir / "token", endpoint), workdir, node=name)
            )
            for name, endpoint in sorted(endpoints.items())
        }
