"""HTTP plumbing shared by the agent and the aggregator: errors, body limit, request model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.reference import InvalidReference, Reference, parse
from agent.server.auth import TokenAuth
from agent.server.config import Settings
from agent.server.limits import RateLimiter

__all__ = [
    "ApiError",
    "BodyLimit",
    "CheckedTest",
    "PullTestBody",
    "authorize",
    "check_test",
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


class PrepullBody(BaseModel):
    """``POST /v1/prepull`` on an agent: one image of a pre-pull job."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1, max_length=1024)
    policy: Literal["IfNotPresent", "Always"] = "IfNotPresent"
    timeout: float | None = Field(default=None, gt=0)
    docker_config: dict[str, Any] | str | None = None


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


@dataclass(frozen=True)
class CheckedTest:
    reference: Reference
    mode: Literal["pull", "resolve"]
    timeout: float


def check_test(
    settings: Settings, image: str, mode: str | None, timeout: float | None
) -> CheckedTest:
    """The policy every pull-test request passes first: a valid reference, in the allowlist,
    no pull when read-only (and resolve by default then), a timeout within the bound."""
    try:
        reference = parse(image)
    except InvalidReference as exc:
        raise ApiError(400, "invalid_reference", f"{image!r}: {exc.reason}") from None
    if not settings.allows(reference.name):
        raise ApiError(403, "not_allowed", f"{reference.name} is not in the registry allowlist")
    chosen = mode or ("resolve" if settings.read_only else "pull")
    if chosen == "pull" and settings.read_only:
        raise ApiError(403, "read_only", "pullcheck is read-only here: use mode=resolve")
    limits = settings.limits
    budget = timeout if timeout is not None else limits.default_timeout
    if budget > limits.max_timeout:
        raise ApiError(400, "bad_request", f"timeout: at most {limits.max_timeout:g} s")
    return CheckedTest(reference, "pull" if chosen == "pull" else "resolve", budget)


def authorize(
    request: Request,
    auth: TokenAuth,
    limiter: RateLimiter,
    allowed_query: frozenset[str],
    *,
    limited: bool = True,
) -> None:
    """Bearer token, no unknown query parameters, the client's rate limit — in that order."""
    if not auth.check(request.headers.get("authorization")):
        raise ApiError(
            401,
            "unauthorized",
            "a valid bearer token is required",
            {"WWW-Authenticate": 'Bearer realm="pullcheck"'},
        )
    unknown = sorted(set(request.query_params) - allowed_query)
    if unknown:
        raise ApiError(400, "bad_request", f"unknown query parameter(s): {', '.join(unknown)}")
    if limited:
        wait = limiter.acquire(client_of(request))
        if wait > 0:
            raise ApiError(
                429,
                "rate_limited",
                "too many requests from this client",
                {"Retry-After": RateLimiter.retry_after(wait)},
            )
