"""Shared fixtures. The ``lab`` fixture starts the local lab once per session.

With ``CI=true`` the lab must start (afresh, if one was left running): a failure fails the run
loudly instead of skipping.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from lab.info import DEFAULT_DIR, LabInfo

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def lab() -> Iterator[LabInfo]:
    if os.geteuid() != 0 and not IN_CI:
        pytest.skip("the lab needs root (containerd, tmpfs, dnsmasq on port 53); run as root")
    from lab import control

    already_running = control.status(DEFAULT_DIR)
    if already_running and IN_CI:
        # CI tests this checkout from a clean start: a lab left running may run another tree's
        # node agents and carry their state (the registries they have tested, images, faults)
        control.down(DEFAULT_DIR)
        already_running = False
    try:
        info = control.up(DEFAULT_DIR)
    except Exception as exc:
        pytest.fail(f"the local lab could not start: {exc}", pytrace=False)
    yield info
    if not already_running and not os.environ.get("PULLCHECK_KEEP_LAB"):
        control.down(DEFAULT_DIR)


@pytest.fixture
def no_pullcheck_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's PULLCHECK_* variables must not change what a test loads."""
    for name in [n for n in os.environ if n.startswith("PULLCHECK_")]:
        monkeypatch.delenv(name)
