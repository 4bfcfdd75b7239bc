"""``/openapi.json``: the served schema, behind the token like everything but health."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from agent.service.dependencies import PROTECTED, RATE_LIMITED

__all__ = ["router"]

router = APIRouter(dependencies=[*PROTECTED, RATE_LIMITED])


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request) -> dict[str, Any]:
    return request.app.openapi()  # type: ignore[no-any-return]
