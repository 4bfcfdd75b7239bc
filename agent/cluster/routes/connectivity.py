"""``/v1/connectivity``: which node reaches which registry endpoint."""

from __future__ import annotations

import time
from typing import Final

from fastapi import APIRouter

from agent.cluster.fanout import fan_out
from agent.cluster.models import ConnectivityMatrix, NodeFailure
from agent.cluster.routes._state import State
from agent.cluster.summary import connectivity_matrix
from agent.service.dependencies import PROTECTED, RATE_LIMITED
from agent.service.errors import error_responses

__all__ = ["router"]

_DEADLINE: Final = 60.0  # seconds per node at most (an agent caches its probes)

router = APIRouter(
    tags=["connectivity"],
    dependencies=[*PROTECTED, RATE_LIMITED],
    responses=error_responses(400, 401, 429),
)


@router.get("/v1/connectivity")
async def connectivity(state: State) -> ConnectivityMatrix:
    """Node-by-registry-endpoint matrix from every agent's connectivity probes."""
    section = state.settings.aggregator
    deadline = min(section.node_timeout, _DEADLINE)
    started = time.monotonic()
    entries = []
    async for entry in fan_out(
        await state.discovery.agents(),
        lambda target: state.connectivity_entry(target, deadline=deadline),
        max_in_flight=section.max_in_flight,
    ):
        state.metrics.observe_node_result(entry.cause if isinstance(entry, NodeFailure) else None)
        entries.append(entry)
    state.metrics.observe_fanout("connectivity", time.monotonic() - started)
    state.metrics.observe_request("connectivity", "ok")
    return connectivity_matrix(entries)
