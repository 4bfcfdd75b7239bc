"""``/v1/pulltest``: can this node pull the image, and if not, why? (GET, or POST with
credentials for this test only — never logged, cached in results, or returned)."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any, Final

from fastapi import Depends, Request, Response

from agent.credentials import Credential, Keyring
from agent.models import PullTestResult
from agent.node.models import PullTestBody, pulltest_query
from agent.node.routes._deps import AgentDep, credentials_of
from agent.node.runner import QueueFull
from agent.node.state import AgentState
from agent.service.dependencies import JsonBody, client_of, protected_router
from agent.service.errors import ApiError, ErrorAnswer
from agent.service.logs import log_pulltest
from agent.service.policy import check_test
from agent.service.ratelimit import RateLimiter
from agent.timing import ms_since

__all__ = ["router"]

log = logging.getLogger("pullcheck.agent")

router = protected_router("pulltest", errors=[403])

_BODY: Final = JsonBody(PullTestBody)
#: a guard stopped the pull before any download: the result says which (``refused``)
_REFUSED_STATUS: Final = {"image_too_large": 413, "insufficient_space": 507}
_REFUSED = "The pull was refused before any download (`refused` says why); "
_ANSWERS: Final[dict[int | str, dict[str, Any]]] = {
    413: {"model": PullTestResult, "description": _REFUSED + "the image is over the size limit."},
    507: {"model": PullTestResult, "description": _REFUSED + "too little free space."},
}


@router.get("/v1/pulltest", response_model=PullTestResult, responses=_ANSWERS)
async def get_pulltest(
    request: Request, state: AgentDep, test: Annotated[PullTestBody, Depends(pulltest_query)]
) -> Response:
    """Run (or reuse) a pull test of ``image`` on this node."""
    return await _pulltest(request, state, test)


@router.post(
    "/v1/pulltest",
    response_model=PullTestResult,
    openapi_extra=_BODY.openapi,
    responses={
        **_ANSWERS,
        413: {
            "model": PullTestResult | ErrorAnswer,
            "description": _ANSWERS[413]["description"] + " Or the body is over the limit.",
        },
    },
)
async def post_pulltest(
    request: Request, state: AgentDep, body: Annotated[PullTestBody, Depends(_BODY)]
) -> Response:
    """Like GET, with credentials for this test only (never stored or returned)."""
    credential, keyring = credentials_of(body.creds, body.auth, body.docker_config)
    return await _pulltest(request, state, body, credential, keyring)


async def _pulltest(
    request: Request,
    state: AgentState,
    asked: PullTestBody,
    credential: Credential | None = None,
    keyring: Keyring | None = None,
) -> Response:
    checked = check_test(state.settings, asked.image, asked.mode, asked.timeout)
    ref = checked.reference
    state.remember(ref.registry_host)
    test, key = state.test(ref, checked.mode, checked.timeout, credential, keyring, keep=False)
    started = time.monotonic()
    try:
        with state.metrics.track_pulltest():
            result, body, outcome = await state.runner.run(key, test)
    except QueueFull as exc:
        state.metrics.observe_request("rejected")
        raise ApiError(
            429,
            "queue_full",
            "this node is busy with other pull tests",
            {"Retry-After": RateLimiter.retry_after(exc.retry_after)},
        ) from None
    state.metrics.observe_pulltest(result, reused=outcome != "fresh", outcome=outcome)
    log_pulltest(
        log,
        result,
        client=client_of(request),
        reused=outcome,
        duration_ms=ms_since(started),
    )
    status = _REFUSED_STATUS.get(result.refused, 200)
    return Response(body, status, media_type="application/json")
