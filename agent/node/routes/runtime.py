"""``/v1/images`` and ``/v1/runtime``: what crictl shows of this node's runtime."""

from __future__ import annotations

from agent.cri import CriClient
from agent.node.models import ImagesAnswer, RuntimeAnswer
from agent.node.routes._deps import RUNTIME_DOWN, AgentDep
from agent.service.dependencies import protected_router

__all__ = ["router"]

router = protected_router("runtime", responses=RUNTIME_DOWN)


@router.get("/v1/images")
async def images(state: AgentDep) -> ImagesAnswer:
    """Images on this node, as the runtime lists them (``crictl images``)."""
    found = await state.ask_runtime(lambda c: c.list_images())
    return ImagesAnswer(node=state.node_name, images=found)


@router.get("/v1/runtime")
async def runtime(state: AgentDep) -> RuntimeAnswer:
    """The runtime's version, conditions and image filesystem usage."""

    async def query(client: CriClient) -> RuntimeAnswer:
        return RuntimeAnswer(
            node=state.node_name,
            endpoint=client.endpoint,
            api_version=client.api_version,
            version=await client.version(),
            status=await client.status(),
            image_filesystems=await client.image_fs_info(),
        )

    return await state.ask_runtime(query)
