"""``/v1/prepull``: warm this node's cache with one image (sent by the aggregator's pre-pull
jobs; :mod:`agent.node.prepull` does the work)."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Depends

from agent.node.models import PrepullBody, PullOutcome
from agent.node.prepull import prepull_image
from agent.node.routes._deps import RUNTIME_DOWN, AgentDep, credentials_of
from agent.service.dependencies import JsonBody, protected_router
from agent.service.errors import ApiError
from agent.service.policy import check_test

__all__ = ["router"]

router = protected_router("prepull", rate_limited=False, errors=[403, 413], responses=RUNTIME_DOWN)

_BODY: Final = JsonBody(PrepullBody)


@router.post("/v1/prepull", openapi_extra=_BODY.openapi)
async def prepull(state: AgentDep, body: Annotated[PrepullBody, Depends(_BODY)]) -> PullOutcome:
    """Warm this node's cache with one image.

    Never re-pulls a digest the node has: ``IfNotPresent`` (or a digest-pinned reference)
    only checks presence; ``Always`` resolves the tag's digest with a manifest HEAD and pulls
    only when the node lacks it. Pulled images are kept.
    """
    if state.settings.read_only:
        raise ApiError(403, "read_only", "this agent is read-only: it does not pre-pull")
    checked = check_test(state.settings, body.image, "pull", body.timeout)
    credential, keyring = credentials_of(None, None, body.docker_config)
    state.remember(checked.reference.registry_host)
    return await prepull_image(state, checked, body.policy, credential, keyring)
