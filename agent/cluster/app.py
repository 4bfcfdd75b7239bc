"""The aggregator's HTTP app: "can every node pull this, and if not, why?"

:func:`create_aggregator_app` builds the app from :class:`AggregatorState` and the routers of
:mod:`agent.cluster.routes`; its lifespan is the one place that starts and stops the
aggregator's background tasks. Every replica serves the whole API; scheduled work (the pre-pull
coordinator) runs only on the replica that leads (:mod:`agent.cluster.leader`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from agent import __version__
from agent.cluster.leader import while_leading
from agent.cluster.pods import routes as pods
from agent.cluster.routes import agents, connectivity, health, prepull, pulltest, ui
from agent.cluster.state import AggregatorState
from agent.service.dependencies import install_service
from agent.service.metrics import monitor_event_loop_lag
from agent.service.observability import observability_router

__all__ = ["AggregatorState", "create_aggregator_app"]


def create_aggregator_app(state: AggregatorState) -> FastAPI:
    """The aggregator's app over ``state`` (token, rate limit and request guard included)."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        """Every background task of the aggregator starts and stops here."""
        stop = asyncio.Event()  # work of every replica
        stop_leading = asyncio.Event()  # work that runs only while this replica leads
        stop_election = asyncio.Event()  # last: the Lease is released once that work stopped
        tasks = [
            asyncio.create_task(state.discovery.run(stop)),
            asyncio.create_task(monitor_event_loop_lag(state.metrics, stop=stop)),
            asyncio.create_task(
                state.readiness.run(stop, state.discovery.agents, state.metrics.set_agents)
            ),
        ]
        # cluster-wide scheduled work: one while_leading() per piece, all under one election
        leading = [
            asyncio.create_task(
                while_leading(state.election, state.run_prepull, stop_leading, name="pre-pull jobs")
            ),
        ]
        if state.settings.aggregator.pod_diagnosis.enabled:  # off by default
            diagnosis = while_leading(
                state.election, state.pods.run, stop_leading, name="pod diagnosis"
            )
            leading.append(asyncio.create_task(diagnosis))
        election = asyncio.create_task(state.election.run(stop_election))
        try:
            yield
        finally:
            stop_leading.set()
            await asyncio.gather(*leading, return_exceptions=True)
            stop_election.set()
            await asyncio.gather(election, return_exceptions=True)
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await state.close()

    app = FastAPI(
        title="pullcheck aggregator",
        version=__version__,
        description="Can every node pull this image, and if not, why?",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served by agent.service.observability, behind the token
    )
    app.include_router(health.router)
    app.include_router(observability_router(rate_limit_schema=True))
    for routes in (agents, pulltest, prepull, connectivity, pods, ui):
        app.include_router(routes.router)
    return install_service(app, state, state.settings.limits)
