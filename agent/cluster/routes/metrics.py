"""``/metrics``: the aggregator's Prometheus metrics, behind the token."""

from __future__ import annotations

from fastapi import APIRouter, Response

from agent.cluster.routes._state import State
from agent.service.dependencies import PROTECTED
from agent.service.errors import error_responses

__all__ = ["router"]

router = APIRouter(tags=["observability"], dependencies=PROTECTED)


@router.get(
    "/metrics",
    response_class=Response,  # the exposition's own content type; errors are JSON
    responses={
        200: {
            "description": "The Prometheus text format.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **error_responses(400, 401),
    },
)
async def metrics(state: State) -> Response:
    payload, content_type = state.metrics.render()
    return Response(payload, media_type=content_type)
