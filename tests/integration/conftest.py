"""Fixtures for the server tests: a work directory holding the bearer token."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.servers import TOKEN


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A directory per test module for server configs and logs, with ``token`` in it."""
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    (path / "token").write_text(TOKEN + "\n")
    return path
