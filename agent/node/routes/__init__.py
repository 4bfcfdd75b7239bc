"""The node agent's routes, one router per concern (``create_agent_app`` mounts them all)."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter

from agent.node.routes import connectivity, health, observability, prepull, pulltest, runtime

__all__ = ["ROUTERS"]

ROUTERS: Final[tuple[APIRouter, ...]] = (
    health.router,
    observability.router,
    pulltest.router,
    prepull.router,
    connectivity.router,
    runtime.router,
)
