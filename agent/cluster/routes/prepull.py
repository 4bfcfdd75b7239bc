"""``/v1/prepull/jobs…``: the warm-cache jobs, answered by the leading replica.

A replica that does not lead forwards these to the one that does
(:mod:`agent.cluster.forwarding`) and passes its answer on, with the leader's status.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal, TypeVar
from urllib.parse import quote

from fastapi import Header, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from agent.cluster.forwarding import FORWARDED_BY
from agent.cluster.models import ForwardedError, JobDetail, JobList, JobStarted
from agent.cluster.routes._state import State
from agent.cluster.state import AggregatorState
from agent.service.dependencies import protected_router
from agent.service.errors import ApiError

__all__ = ["router"]

A = TypeVar("A", bound=BaseModel)

router = protected_router(
    "prepull",
    responses={
        503: {
            "model": ForwardedError,
            "description": "No replica leads the scheduled work (yet), or the leader gave no "
            "usable answer: retry.",
        },
    },
)

#: set by a replica that forwards a request here (hidden from the schema: replicas set it)
ForwardedBy = Annotated[str | None, Header(alias=FORWARDED_BY, include_in_schema=False)]
_NO_SUCH_JOB: Final[dict[int | str, dict[str, Any]]] = {
    404: {"model": ForwardedError, "description": "No job of that name."}
}


@router.get("/v1/prepull/jobs", response_model=JobList)
async def prepull_jobs(
    state: State, request: Request, forwarded_by: ForwardedBy = None
) -> JobList | Response:
    """Every warm-cache job with its schedule and progress (no per-node detail)."""
    coordinator = state.leading()
    if coordinator is None:
        return await _forward(state, request, JobList, forwarded_by)
    source = coordinator.source
    return JobList(
        jobs=coordinator.statuses(),
        jobs_file=str(source.path),
        version=source.version,
        error=source.last_error,
        leader=state.election.identity,
    )


@router.get("/v1/prepull/jobs/{name}", response_model=JobDetail, responses=_NO_SUCH_JOB)
async def prepull_job(
    state: State, request: Request, name: str, forwarded_by: ForwardedBy = None
) -> JobDetail | Response:
    """One job, per node and image: phase, digest, duration, cause and remedy."""
    coordinator = state.leading()
    if coordinator is None:
        return await _forward(state, request, JobDetail, forwarded_by)
    status = coordinator.status(name)
    if status is None:
        raise ApiError(404, "not_found", f"no pre-pull job named {name!r}")
    return JobDetail(**dict(status), leader=state.election.identity)


@router.post(
    "/v1/prepull/jobs/{name}/run",
    status_code=202,
    response_model=JobStarted,
    responses={
        **_NO_SUCH_JOB,
        409: {"model": ForwardedError, "description": "The job is running already."},
    },
)
async def prepull_run(
    state: State, request: Request, name: str, forwarded_by: ForwardedBy = None
) -> JobStarted | Response:
    """Run a job now (all its nodes), within its caps."""
    coordinator = state.leading()
    if coordinator is None:
        return await _forward(state, request, JobStarted, forwarded_by)
    if name not in coordinator.jobs:
        raise ApiError(404, "not_found", f"no pre-pull job named {name!r}")
    if not coordinator.start(name):
        raise ApiError(409, "running", f"pre-pull job {name!r} is already running")
    return JobStarted(job=name, leader=state.election.identity)


async def _forward(
    state: AggregatorState, request: Request, answer: type[A], forwarded_by: str | None
) -> Response:
    """The leader's answer to the same request (``answer`` when it succeeded), with its
    status."""
    method: Literal["GET", "POST"] = "POST" if request.method == "POST" else "GET"
    status, passed = await state.leader_client.forward(
        method, _path_of(request), answer, forwarded_by=forwarded_by
    )
    return Response(passed.model_dump_json(), status, media_type="application/json")


def _path_of(request: Request) -> str:
    """The path of the request's route with its parameters, each quoted as one segment."""
    route = request.scope["route"]
    if not isinstance(route, APIRoute):
        raise TypeError("not a request routed to an API route")
    segments = {name: quote(str(value), safe="") for name, value in request.path_params.items()}
    return route.path_format.format(**segments)
