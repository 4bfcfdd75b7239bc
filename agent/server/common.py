"""HTTP plumbing shared by the agent and the aggregator: errors, body limit, request model."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "ApiError",
    "BodyLimit",
    "PullTestBody",
    "client_of",
    "install_error_handlers",
    "with_body_limit",
]


class ApiError(Exception):
    """An error answered as ``{"error": kind, "message": …}`` with an HTTP status."""

    def __init__(
        self, status: int, kind: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers


class PullTestBody(BaseModel):
    """``POST /v1/pulltest``: like the query form, plus credentials for this test only."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1, max_length=1024)
    mode: Literal["pull", "resolve"] | None = None
    timeout: float | None = Field(default=None, gt=0)
    creds: str | None = Field(default=None, description="USER[:PASS], as crictl --creds")
    auth: str | None = Field(default=None, description="base64(USER:PASS), as crictl --auth")
    docker_config: dict[str, Any] | str | None = Field(
        default=None, description="a .dockerconfigjson object (or its JSON text)"
    )


def install_error_handlers(app: FastAPI) -> None:
    """``{"error": kind, "message": …}`` for API errors, 400 (not 422) for invalid input."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            {"error": exc.kind, "message": exc.message}, exc.status, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": "bad_request", "message": _validation_message(exc)}, 400)


def with_body_limit(app: FastAPI, limit: int) -> FastAPI:
    app.add_middleware(BodyLimit, limit=limit)
    return app


class BodyLimit:
    """Reject request bodies over ``limit`` bytes with 413, before the app reads them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _too_large(self.limit)(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLarge:
            await _too_large(self.limit)(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(
        {"error": "body_too_large", "message": f"request body over {limit} bytes"}, 413
    )


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _validation_message(exc: RequestValidationError) -> str:
    # never echo the input: a body may carry credentials
    parts = []
    for item in exc.errors():
        where = ".".join(str(p) for p in item.get("loc", ()) if p not in ("body", "query"))
        parts.append(f"{where or 'request'}: {item.get('msg', 'invalid')}")
    return "; ".join(parts)
