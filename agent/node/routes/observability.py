"""``/metrics`` (Prometheus) and ``/openapi.json``: behind the token, not rate limited."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from agent.node.routes._deps import AgentDep
from agent.service.dependencies import PROTECTED
from agent.service.errors import error_responses

__all__ = ["router"]

router = APIRouter(dependencies=PROTECTED, responses=error_responses(400, 401))


@router.get(
    "/metrics",
    tags=["observability"],
    response_class=Response,  # no media type of its own: the errors stay JSON
    responses={
        200: {
            "description": "The Prometheus text exposition format.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def metrics(state: AgentDep) -> Response:
    """This agent's metrics: pull tests, probes, runtime, queue, the process."""
    payload, content_type = state.metrics.render()
    return Response(payload, media_type=content_type)


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request) -> JSONResponse:
    """This API's OpenAPI schema (behind the token like everything but health)."""
    return JSONResponse(request.app.openapi())
