"""``/v1/connectivity``: the registry path from this node, for every registry it knows."""

from __future__ import annotations

from fastapi import Response

from agent.node.models import ConnectivityAnswer
from agent.node.routes._deps import AgentDep
from agent.service.dependencies import protected_router

__all__ = ["router"]

router = protected_router("connectivity")


@router.get("/v1/connectivity", response_model=ConnectivityAnswer)
async def connectivity(state: AgentDep) -> Response:
    """Probes of the configured registries and of those seen in recent tests (reused for
    ``connectivity_ttl``)."""
    return Response(await state.probe_connectivity(), media_type="application/json")
