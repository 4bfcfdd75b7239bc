"""The agent's readiness answer: reused for a while when ready, asked again soon when not, so an
agent is ready again soon after its runtime comes back (bench/bench_recovery.py measures it)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from agent.cri import RuntimeUnavailable, RuntimeVersion
from tests.unit.test_node_api import agent

VERSION = RuntimeVersion("0.1.0", "containerd", "1.6.20", "v1")


class _Runtime:
    """A runtime that is down until ``up`` is set; counts the questions it was asked."""

    def __init__(self) -> None:
        self.up = False
        self.asked = 0

    async def __call__(self, query: Callable[[Any], Awaitable[Any]]) -> RuntimeVersion:
        self.asked += 1
        if not self.up:
            raise RuntimeUnavailable([("unix:///run/containerd.sock", "connection refused")])
        return VERSION


async def test_not_ready_is_asked_again_sooner_than_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = agent(tmp_path)
    runtime = _Runtime()
    monkeypatch.setattr(state, "cri", runtime)
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])  # the agent reads time.monotonic()
    assert (await state.ready())[0] is False
    runtime.up = True
    now[0] += 0.1
    assert (await state.ready())[0] is False  # reused: the runtime is not asked at once
    assert runtime.asked == 1
    now[0] += 1.0  # past the not-ready reuse, well inside the ready one
    assert await state.ready() == (True, "containerd 1.6.20")
    runtime.up = False
    now[0] += 1.0
    assert (await state.ready())[0] is True  # a ready answer is reused longer
    assert runtime.asked == 2
