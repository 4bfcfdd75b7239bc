"""``/v1/agents``: the agents discovery knows, with their readiness; ``/v1/agents/{node}/images``:
one node's images, as its agent lists them (``pullcheck pod`` checks imagePullPolicy with it)."""

from __future__ import annotations

from agent.cluster.client import CallFailure
from agent.cluster.models import AgentEntry, AgentList
from agent.cluster.routes._state import State
from agent.node.models import ImagesAnswer
from agent.service.dependencies import protected_router
from agent.service.errors import ApiError, ErrorAnswer

__all__ = ["router"]

router = protected_router("agents")


@router.get("/v1/agents")
async def agents(state: State) -> AgentList:
    """The agents discovery currently knows."""
    listed = []
    for target in await state.discovery.agents():
        seen = state.readiness.get(target)
        listed.append(
            AgentEntry(
                node=state.label(target), url=target.url, state=seen.state, reason=seen.reason
            )
        )
    return AgentList(agents=listed, last_error=state.discovery.last_error)


_NODE_IMAGES = {
    404: {"model": ErrorAnswer, "description": "No agent is known for this node."},
    502: {"model": ErrorAnswer, "description": "The node's agent did not answer or refused."},
}


@router.get("/v1/agents/{node}/images", responses=_NODE_IMAGES)  # type: ignore[arg-type]
async def node_images(node: str, state: State) -> ImagesAnswer:
    """The images on ``node``, as its agent lists them (CRI ListImages)."""
    targets, _ = await state.targets({node[:253]})
    if not targets:
        raise ApiError(404, "node_not_found", f"no agent is known for node {node[:253]!r}")
    answer = await state.client.images(targets[0].url)
    if isinstance(answer, CallFailure):
        raise ApiError(502, "agent_unreachable", f"node {node[:253]!r}: {answer.reason}")
    return answer
