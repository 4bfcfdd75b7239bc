"""Running a CRI query for a command, with runtime-unavailable reported as a result."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from agent.cli import _render
from agent.cli._options import EXIT_FAILED, cri_from
from agent.cri import CriClient, RuntimeUnavailable, connect

T = TypeVar("T")


async def with_runtime(params: dict[str, Any], query: Callable[[CriClient], Awaitable[T]]) -> T:
    """Connect as the ``cri_options`` say, run ``query``, close. Raises RuntimeUnavailable.

    Only the CRI client is loaded: images and runtime need none of the pull test's engine.
    """
    endpoint, timeout, api_version = cri_from(params)
    async with await connect(endpoint, timeout=timeout, api_version=api_version) as client:
        return await query(client)


def report_unavailable(exc: RuntimeUnavailable, as_json: bool) -> int:
    """Print a runtime_unavailable outcome (one JSON object, or a line on stderr); exit 1."""
    if as_json:
        body: dict[str, Any] = {
            "success": False,
            "cause": "runtime_unavailable",
            "summary": str(exc),
            "tried": [{"endpoint": e, "reason": r} for e, r in exc.tried],
        }
        print(json.dumps(body, indent=2))
    else:
        _render.err.print(f"[red]runtime_unavailable[/] {_render.clean(exc)}")
    return EXIT_FAILED
