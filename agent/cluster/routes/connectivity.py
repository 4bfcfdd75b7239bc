"""``/v1/connectivity``: which node reaches which registry endpoint."""

from __future__ import annotations

import time
from typing import Final

from agent.cluster.fanout import fan_out
from agent.cluster.models import ConnectivityMatrix, NodeFailure
from agent.cluster.routes._state import State
from agent.cluster.summary import connectivity_matrix
from agent.service.dependencies import protected_router

__all__ = ["router"]

_DEADLINE: Final = 60.0  # seconds per node at most (an agent caches its probes)

router = protected_router("connectivity")


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
