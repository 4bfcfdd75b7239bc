"""``/v1/agents``: the agents discovery knows, with their readiness."""

from __future__ import annotations

from agent.cluster.models import AgentEntry, AgentList
from agent.cluster.routes._state import State
from agent.service.dependencies import protected_router

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
