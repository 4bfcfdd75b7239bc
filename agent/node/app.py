"""The node agent's HTTP API (FastAPI): pull tests, pre-pulls, connectivity, images, runtime,
health, metrics — one router per concern in :mod:`agent.node.routes`.

Every route except ``/healthz`` and ``/readyz`` needs the bearer token
(:mod:`agent.service.dependencies`). A caller can only make the node contact registries named by
an allowed image reference or by the configuration; credentials sent in a request are used for
that test only — never logged, cached in results, or returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from agent import __version__
from agent.node.routes import ROUTERS
from agent.node.state import AgentState
from agent.service.dependencies import install_service
from agent.service.logs import log_event
from agent.service.metrics import monitor_event_loop_lag

__all__ = ["create_agent_app"]

log = logging.getLogger("pullcheck.agent")


def create_agent_app(state: AgentState) -> FastAPI:
    """The agent's app for ``state``: its routers, error handlers, request guard, lifespan."""
    app = FastAPI(
        title="pullcheck agent",
        version=__version__,
        description="Can this node's container runtime pull an image, and if not, why?",
        lifespan=lambda _app: _background(state),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served by a route, behind the token like everything but health
    )
    for router in ROUTERS:
        app.include_router(router)
    log_event(log, "agent_configured", node=state.node_name, read_only=state.settings.read_only)
    return install_service(app, state, state.settings.limits)


@contextlib.asynccontextmanager
async def _background(state: AgentState) -> AsyncIterator[None]:
    """The one place the agent's background tasks start and stop: the connectivity probes
    (registry metrics fresh without a caller) and the event-loop lag monitor."""
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(state.connectivity_loop(stop)),
        asyncio.create_task(monitor_event_loop_lag(state.metrics, stop=stop)),
    ]
    try:
        yield
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
