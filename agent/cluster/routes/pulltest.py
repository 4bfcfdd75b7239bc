"""``GET|POST /v1/pulltest``: "can every node pull this, and if not, why?"

The test is checked once, up front (reference, allowlist, read-only, timeout), then fanned out to
every agent (or those of ``nodes=a,b``), at most ``max_in_flight`` at once, each under a deadline
(:mod:`agent.cluster.fanout`). Every node is listed, never dropped: a node that does not answer,
or refuses, or that discovery does not know is an entry with its cause
(:mod:`agent.cluster.models`). ``?stream=ndjson`` sends each node's entry as it arrives, then
the summary line (:mod:`agent.cluster.summary`).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Final, Literal

from fastapi import Depends, Query, Request
from fastapi.responses import StreamingResponse

from agent.cluster.fanout import fan_out
from agent.cluster.models import NodeEntry, PullTestAnswer, Summary, SummaryLine, not_found
from agent.cluster.routes._state import State
from agent.cluster.state import AggregatorState
from agent.cluster.summary import failure_cause, summarize
from agent.node.models import PullTestBody, pulltest_query
from agent.service.dependencies import JsonBody, client_of, protected_router
from agent.service.errors import ApiError, ErrorAnswer
from agent.service.logs import log_event
from agent.service.policy import check_test

__all__ = ["router"]

log = logging.getLogger("pullcheck.aggregator")

_NODE_GRACE: Final = 5.0  # seconds a node may take beyond the test's own timeout
_MAX_NODES: Final = 5000  # names in nodes=a,b (Kubernetes' largest supported cluster)
# a node name (DNS subdomain), or the host:port label of an agent whose node is not known yet
_NODE_LABEL: Final = re.compile(r"^[A-Za-z0-9\[]([-A-Za-z0-9.:\[\]]{0,260}[A-Za-z0-9\]])?$")
_NDJSON: Final = "application/x-ndjson"
_BODY: Final = JsonBody(PullTestBody)

router = protected_router(
    "pulltest",
    errors=[403],
    responses={
        200: {
            "description": "One summary and one entry per node; with `stream=ndjson`, one node "
            'entry per line as each node answers, then `{"summary": …}`.',
            "content": {_NDJSON: {"schema": {"type": "string"}}},
        },
        400: {
            "model": ErrorAnswer,
            "description": "Invalid input: the message names the parameter or field (never its "
            "value). A request head over the server's bound (a very long `nodes`) is refused "
            "by the HTTP layer, in plain text.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        503: {"model": ErrorAnswer, "description": "Discovery found no agents."},
    },
)

Nodes = Annotated[
    str | None,
    Query(max_length=65536, description="only these nodes, comma-separated: `node-1,node-2`"),
]
Stream = Annotated[Literal["ndjson"] | None, Query(description="stream node entries as ndjson")]


@router.get("/v1/pulltest", response_model=PullTestAnswer)
async def get_pulltest(
    state: State,
    request: Request,
    test: Annotated[PullTestBody, Depends(pulltest_query)],
    nodes: Nodes = None,
    stream: Stream = None,
) -> PullTestAnswer | StreamingResponse:
    """Test ``image`` on every node (or ``nodes=a,b``) and summarise."""
    return await _pulltest(state, request, test, nodes, stream, post=False)


@router.post("/v1/pulltest", response_model=PullTestAnswer, openapi_extra=_BODY.openapi)
async def post_pulltest(
    state: State,
    request: Request,
    body: Annotated[PullTestBody, Depends(_BODY)],
    nodes: Nodes = None,
    stream: Stream = None,
) -> PullTestAnswer | StreamingResponse:
    """Like GET, with credentials passed on to the agents for this test only."""
    return await _pulltest(state, request, body, nodes, stream, post=True)


async def _pulltest(
    state: AggregatorState,
    request: Request,
    test: PullTestBody,
    nodes: str | None,
    stream: str | None,
    *,
    post: bool,
) -> PullTestAnswer | StreamingResponse:
    settings = state.settings
    budget = check_test(settings, test.image, test.mode, test.timeout).timeout
    deadline = min(budget + _NODE_GRACE, settings.aggregator.node_timeout)
    wanted = _wanted_nodes(nodes)
    known = await state.discovery.agents()
    if not known:
        raise ApiError(
            503,
            "no_agents",
            "no agents found"
            + (f" for nodes {sorted(wanted)}" if wanted else "")
            + (f" ({state.discovery.last_error})" if state.discovery.last_error else ""),
        )
    targets, missing = await state.targets(wanted)
    absent = [not_found(node, len(known), state.discovery.mode) for node in missing]
    started = time.monotonic()

    async def entries() -> AsyncIterator[NodeEntry]:
        """The nodes without an agent to ask first, then the agents' entries as they come."""
        for entry in absent:
            state.metrics.observe_node_result(failure_cause(entry))
            yield entry
        async for found in fan_out(
            targets,
            lambda target: state.pulltest_entry(target, test, deadline=deadline, post=post),
            max_in_flight=settings.aggregator.max_in_flight,
        ):
            state.metrics.observe_node_result(failure_cause(found))
            yield found

    def finish(collected: list[NodeEntry]) -> Summary:
        seconds = time.monotonic() - started
        state.metrics.observe_fanout("pulltest", seconds)
        summary = summarize(collected, duration_ms=round(seconds * 1000, 1))
        log_event(
            log,
            "aggregated_pulltest",
            image=test.image,
            mode=test.mode or "",
            nodes=summary.nodes,
            ok=summary.ok,
            failed=summary.failed,
            client=client_of(request),
        )
        return summary

    state.metrics.observe_request("pulltest", "ok")
    if stream == "ndjson":

        async def lines() -> AsyncIterator[bytes]:
            collected: list[NodeEntry] = []
            async for entry in entries():
                collected.append(entry)
                yield entry.model_dump_json().encode() + b"\n"
            yield SummaryLine(summary=finish(collected)).model_dump_json().encode() + b"\n"

        return StreamingResponse(lines(), media_type=_NDJSON)
    collected = [entry async for entry in entries()]
    collected.sort(key=lambda entry: entry.node)
    return PullTestAnswer(
        image=test.image, mode=test.mode, summary=finish(collected), nodes=collected
    )


def _wanted_nodes(nodes: str | None) -> set[str] | None:
    """The node names of ``nodes=a,b`` (None: all); 400 for a name that cannot be one."""
    wanted = {n.strip() for n in (nodes or "").split(",") if n.strip()}
    if len(wanted) > _MAX_NODES:
        raise ApiError(400, "bad_request", f"nodes: at most {_MAX_NODES} names")
    for name in sorted(wanted):
        if not _NODE_LABEL.match(name):
            shown = name if len(name) <= 60 else name[:57] + "..."
            raise ApiError(
                400, "bad_request", f"nodes: {shown!r} is not a node name (or agent host:port)"
            )
    return wanted or None
