"""What the node agent's routes share: their :class:`AgentState`, and credentials from a body."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import Depends, Request
from pydantic import TypeAdapter

from agent.credentials import Credential, CredentialError, Keyring, from_cli, loads_docker_config
from agent.node.state import AgentState
from agent.service.dependencies import state_of
from agent.service.errors import ApiError, ErrorAnswer

__all__ = ["RUNTIME_DOWN", "AgentDep", "agent_state", "credentials_of"]

#: ``responses=`` of a route that asks the runtime (:meth:`AgentState.ask_runtime`)
RUNTIME_DOWN: Final[dict[int | str, dict[str, Any]]] = {
    503: {"model": ErrorAnswer, "description": "The runtime does not answer over CRI."}
}

_CONFIG: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])


async def agent_state(request: Request) -> AgentState:
    """The agent's state, from ``app.state``."""
    state = state_of(request)
    if not isinstance(state, AgentState):
        raise TypeError("not a node agent's app: build it with create_agent_app()")
    return state


AgentDep = Annotated[AgentState, Depends(agent_state)]


def credentials_of(
    creds: str | None, auth: str | None, docker_config: dict[str, Any] | str | None
) -> tuple[Credential | None, Keyring | None]:
    """The credential and keyring a request body carries (400 ``invalid_credentials``)."""
    try:
        credential = from_cli(creds, auth)
        keyring = None
        if docker_config is not None:
            text = (
                docker_config
                if isinstance(docker_config, str)
                else _CONFIG.dump_json(docker_config).decode()
            )
            keyring = loads_docker_config(text, origin="request")
    except CredentialError as exc:
        raise ApiError(400, "invalid_credentials", str(exc)) from None
    return credential, keyring
