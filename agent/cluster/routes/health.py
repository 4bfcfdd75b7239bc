"""``/healthz`` and ``/readyz``: public, for the kubelet's probes."""

from __future__ import annotations

from fastapi import APIRouter, Response

from agent.cluster.models import AggregatorHealth, AggregatorReady
from agent.cluster.routes._state import State
from agent.service.dependencies import PUBLIC

__all__ = ["router"]

router = APIRouter(tags=["health"], dependencies=PUBLIC)


@router.get("/healthz")
async def healthz() -> AggregatorHealth:
    """The process is alive."""
    return AggregatorHealth()


@router.get(
    "/readyz",
    responses={503: {"model": AggregatorReady, "description": "No agents found."}},
)
async def readyz(state: State, response: Response) -> AggregatorReady:
    """Ready once discovery has found at least one agent."""
    agents = await state.discovery.agents()
    if not agents:
        response.status_code = 503
    return AggregatorReady(
        ready=bool(agents),
        agents=len(agents),
        error=state.discovery.last_error,
        leader=state.election.detail(),
    )
