"""``/healthz`` and ``/readyz``: public, for liveness and readiness probes (no token)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from agent.node.models import HealthAnswer, ReadyAnswer
from agent.node.routes._deps import AgentDep
from agent.service.dependencies import PUBLIC
from agent.service.errors import error_responses

__all__ = ["router"]

router = APIRouter(tags=["health"], dependencies=PUBLIC, responses=error_responses(400))


@router.get("/healthz")
async def healthz(state: AgentDep) -> HealthAnswer:
    """The process is alive (and which node it serves, for aggregators that ask)."""
    return HealthAnswer(status="ok", node=state.node_name)


@router.get(
    "/readyz",
    responses={
        503: {"model": ReadyAnswer, "description": "Not ready: the runtime does not answer."}
    },
)
async def readyz(state: AgentDep, response: Response) -> ReadyAnswer:
    """Ready when the container runtime answers over CRI."""
    ok, reason = await state.ready()
    response.status_code = 200 if ok else 503
    return ReadyAnswer(ready=ok, runtime=reason)
