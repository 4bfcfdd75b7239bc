"""Running a CRI query for a command, with runtime-unavailable reported as a result."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from agent.cri import CriClient, RuntimeUnavailable, connect
from agent.pulltest import NodeSettings

T = TypeVar("T")


async def with_runtime(settings: NodeSettings, query: Callable[[CriClient], Awaitable[T]]) -> T:
    """Connect as the settings say, run ``query``, close. Raises RuntimeUnavailable."""
    async with await connect(
        settings.endpoint, timeout=settings.cri_timeout, api_version=settings.api_version
    ) as client:
        return await query(client)


def unavailable_json(exc: RuntimeUnavailable) -> dict[str, Any]:
    return {
        "success": False,
        "cause": "runtime_unavailable",
        "summary": str(exc),
        "tried": [{"endpoint": e, "reason": r} for e, r in exc.tried],
    }
