"""``/metrics`` (Prometheus) and ``/openapi.json``, the same in both apps: behind the token.

``/metrics`` renders the app state's :attr:`~agent.service.dependencies.ServiceState.metrics` and
is never rate limited (Prometheus scrapes on its own schedule). The schema is served here rather
than by FastAPI (``openapi_url=None``) so that it needs the token like everything but health.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from agent.service.dependencies import RATE_LIMITED, protected_router, state_of

__all__ = ["observability_router"]


def observability_router(*, rate_limit_schema: bool) -> APIRouter:
    """The router serving ``/metrics`` and ``/openapi.json``; ``rate_limit_schema``: fetching the
    schema counts against the client's rate (the aggregator's; an agent's does not)."""
    router = protected_router(rate_limited=False)
    router.add_api_route(
        "/metrics",
        _metrics,
        name="metrics",
        tags=["observability"],
        response_class=Response,  # no media type of its own: the errors stay JSON
        responses={
            200: {
                "description": "The Prometheus text exposition format.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    router.add_api_route(
        "/openapi.json",
        _openapi,
        name="openapi",
        include_in_schema=False,
        dependencies=[RATE_LIMITED] if rate_limit_schema else [],
    )
    return router


async def _metrics(request: Request) -> Response:
    """This process's metrics: what it did, and its own overhead."""
    payload, content_type = state_of(request).metrics.render()
    return Response(payload, media_type=content_type)


async def _openapi(request: Request) -> JSONResponse:
    """This API's OpenAPI schema."""
    return JSONResponse(request.app.openapi())
