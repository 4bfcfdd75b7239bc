"""``/v1/connectivity``: the registry path from this node, for every registry it knows."""

from __future__ import annotations

from fastapi import APIRouter, Response

from agent.node.models import ConnectivityAnswer
from agent.node.routes._deps import AgentDep
from agent.service.dependencies import PROTECTED, RATE_LIMITED
from agent.service.errors import error_responses

__all__ = ["router"]

router = APIRouter(
    tags=["connectivity"],
    dependencies=[*PROTECTED, RATE_LIMITED],
    responses=error_responses(400, 401, 429),
)


@router.get("/v1/connectivity", response_model=ConnectivityAnswer)
async def connectivity(state: AgentDep) -> Response:
    """Probes of the configured registries and of those seen in recent tests (reused for
    ``connectivity_ttl``)."""
    return Response(await state.probe_connectivity(), media_type="application/json")
