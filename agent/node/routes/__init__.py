"""The node agent's routes, one router per concern (``create_agent_app`` mounts them all)."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter

from agent.node.routes import connectivity, health, prepull, pulltest, runtime
from agent.service.observability import observability_router

__all__ = ["ROUTERS"]

ROUTERS: Final[tuple[APIRouter, ...]] = (
    health.router,
    observability_router(rate_limit_schema=False),
    pulltest.router,
    prepull.router,
    connectivity.router,
    runtime.router,
)
