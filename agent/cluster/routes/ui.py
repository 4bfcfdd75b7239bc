"""``/ui/``: the cluster dashboard, and the two small answers only it needs.

The page, its script and its style are package files (:mod:`agent.cluster.ui`), public like
``/healthz`` (they hold no data): the page asks for the bearer token and sends it with every
API call. Every file is served with a strict Content-Security-Policy (scripts and styles from
this origin only, nothing inline, no plugins, no framing), ``nosniff`` and no referrer.

Behind the token: ``GET /ui/api/settings`` (what the page must honour: ``read_only``, whether
the automatic pod diagnosis runs) and ``GET /ui/api/nodes/{node}/connectivity`` (one node's
probes with their phases, timings and remedy, for the matrix cell a person selects; the
matrix itself carries only each cell's verdict).
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Annotated, Final

from fastapi import APIRouter, Path, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ConfigDict

from agent import __version__
from agent.cluster.models import NodeConnectivity, NodeFailure, not_found
from agent.cluster.routes._state import State
from agent.service.dependencies import PUBLIC, protected_router
from agent.service.errors import ApiError, ErrorAnswer

__all__ = ["CONTENT_SECURITY_POLICY", "UiSettings", "router"]

#: the policy of every dashboard file: nothing inline, nothing from another origin
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",  # revalidated: a new version is seen at the next load
}
#: the files the dashboard is made of → their media type (nothing else is served)
_FILES: Final = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
_CONNECTIVITY_DEADLINE: Final = 60.0  # seconds, as /v1/connectivity

_files = APIRouter(tags=["ui"], dependencies=PUBLIC, include_in_schema=False)
_api = protected_router("ui")


@functools.cache
def _file(name: str) -> bytes:
    """A dashboard file's bytes (read once: they are part of the installed package)."""
    return resources.files("agent.cluster.ui").joinpath("static", name).read_bytes()


def _served(name: str) -> Response:
    return Response(_file(name), media_type=_FILES[name], headers=_HEADERS)


@_files.get("/ui")
async def ui_root() -> RedirectResponse:
    """The dashboard lives at ``/ui/`` (its files are relative to it)."""
    return RedirectResponse("/ui/", status_code=308, headers=_HEADERS)


@_files.get("/ui/")
async def ui_index() -> Response:
    """The dashboard's page."""
    return _served("index.html")


@_files.get("/ui/{name}", responses={404: {"model": ErrorAnswer}})
async def ui_file(name: Annotated[str, Path(max_length=64)]) -> Response:
    """One of the dashboard's files (``app.js``, ``app.css``)."""
    if name not in _FILES:
        raise ApiError(404, "not_found", "no such dashboard file")
    return _served(name)


class UiSettings(BaseModel):
    """``GET /ui/api/settings``: what the dashboard must honour."""

    model_config = ConfigDict(extra="forbid")

    version: str
    read_only: bool  # no pulls: the page offers no test and no "run now"
    pod_diagnosis: bool  # aggregator.pod_diagnosis.enabled
    default_timeout: float  # seconds, the agents' default for a test
    max_timeout: float


@_api.get("/ui/api/settings")
async def ui_settings(state: State) -> UiSettings:
    """What the dashboard must honour (asked with the token: it also checks the token)."""
    settings = state.settings
    return UiSettings(
        version=__version__,
        read_only=settings.read_only,
        pod_diagnosis=settings.aggregator.pod_diagnosis.enabled,
        default_timeout=settings.limits.default_timeout,
        max_timeout=settings.limits.max_timeout,
    )


Node = Annotated[str, Path(max_length=253, description="a node name, as the matrix lists it")]


@_api.get(
    "/ui/api/nodes/{node}/connectivity",
    response_model=NodeConnectivity | NodeFailure,
    responses={404: {"model": ErrorAnswer, "description": "No agent is known for this node."}},
)
async def ui_node_connectivity(node: Node, state: State) -> NodeConnectivity | NodeFailure:
    """One node's connectivity probes in full (phases, timings, evidence, remedy), or why
    there are none."""
    targets, missing = await state.targets({node})
    if missing or not targets:
        known = len(await state.discovery.agents())
        raise ApiError(404, "node_not_found", not_found(node, known, state.discovery.mode).summary)
    deadline = min(state.settings.aggregator.node_timeout, _CONNECTIVITY_DEADLINE)
    return await state.connectivity_entry(targets[0], deadline=deadline)


#: the files (public) and the two answers (behind the token), for the app to include
router = APIRouter()
router.include_router(_files)
router.include_router(_api)
