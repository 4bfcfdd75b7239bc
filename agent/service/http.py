"""HTTP plumbing shared by the agent and the aggregator: errors, the request guard, request
models, the test policy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.redaction import redact_text
from agent.reference import InvalidReference, Reference, parse
from agent.service.auth import CHALLENGE, PUBLIC_PATHS, TokenAuth
from agent.service.config import Limits, Settings
from agent.service.ratelimit import RateLimiter

__all__ = [
    "MAX_HEADERS",
    "ApiError",
    "CheckedTest",
    "RequestGuard",
    "authorize",
    "check_test",
    "client_of",
    "install_error_handlers",
    "install_guard",
]

#: more header fields than this → 431
MAX_HEADERS: Final = 100
_SHOWN_NAME: Final = 64  # characters of a parameter name an error message repeats


class ApiError(Exception):
    """An error answered as ``{"error": kind, "message": …}`` with an HTTP status."""

    def __init__(
        self, status: int, kind: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers


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

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # routing's own answers (404 unknown path, 405 wrong method) in the same shape
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = {404: "no such endpoint", 405: "method not allowed here"}.get(
            exc.status_code, str(exc.detail)
        )
        return JSONResponse(
            {"error": kind, "message": message}, exc.status_code, headers=exc.headers
        )


def install_guard(
    app: FastAPI,
    limits: Limits,
    auth: TokenAuth,
    *,
    on_reject: Callable[[str, str], None] | None = None,
) -> FastAPI:
    """Put :class:`RequestGuard` in front of ``app`` (outermost of its middleware)."""
    app.add_middleware(RequestGuard, limits=limits, auth=auth, on_reject=on_reject)
    return app


class RequestGuard:
    """What every request passes before routing, validation or any handler, in this order:

    1. a request target (raw path and query) over ``limits.max_url_bytes`` → 414; header fields
       over ``limits.max_header_bytes`` in all, or more than :data:`MAX_HEADERS` → 431;
    2. the bearer token, except on :data:`~agent.service.auth.PUBLIC_PATHS` → 401 (so a caller
       without the token learns nothing of the parameter rules);
    3. a query parameter given twice → 400 naming it (never its values);
    4. the body, read here whole (chunked or not) up to ``limits.max_body_bytes`` → 413
       ``body_too_large`` (a larger ``Content-Length`` is refused unread), then replayed.

    Refusals are ``{"error": kind, "message": …}`` like :class:`ApiError`, with ``Connection:
    close``; ``on_reject(path, kind)`` is told of each (metrics).
    """

    def __init__(
        self,
        app: ASGIApp,
        limits: Limits,
        auth: TokenAuth,
        on_reject: Callable[[str, str], None] | None = None,
    ) -> None:
        self.app, self.limits, self.auth, self.on_reject = app, limits, auth, on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self._check(scope)
            body = await self._read_body(scope, receive)
        except ApiError as refusal:
            if self.on_reject is not None:
                self.on_reject(str(scope.get("path", "")), refusal.kind)
            # the connection is closed after a refusal: a body left unread must not be taken
            # for the next request, nor be read to its end
            headers = {**(refusal.headers or {}), "Connection": "close"}
            answer = {"error": refusal.kind, "message": refusal.message}
            await JSONResponse(answer, refusal.status, headers=headers)(scope, receive, send)
            return
        if body is not None:  # None: the client went away while sending it
            await self.app(scope, _replay(body, receive), send)

    def _check(self, scope: Scope) -> None:
        limits = self.limits
        query: bytes = scope.get("query_string", b"")
        path: bytes = scope.get("raw_path") or scope["path"].encode()
        target = len(path) + (len(query) + 1 if query else 0)
        if target > limits.max_url_bytes:
            raise ApiError(414, "uri_too_long", f"request target over {limits.max_url_bytes} bytes")
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        if len(headers) > MAX_HEADERS:
            raise ApiError(431, "headers_too_large", f"more than {MAX_HEADERS} header fields")
        if sum(len(name) + len(value) for name, value in headers) > limits.max_header_bytes:
            raise ApiError(
                431, "headers_too_large", f"header fields over {limits.max_header_bytes} bytes"
            )
        if scope["path"] not in PUBLIC_PATHS:
            presented = [v for n, v in headers if n == b"authorization"]
            if not self.auth.check(presented[0].decode("latin-1") if len(presented) == 1 else None):
                raise ApiError(
                    401,
                    "unauthorized",
                    "a valid bearer token is required",
                    {"WWW-Authenticate": CHALLENGE},
                )
        seen: set[str] = set()
        for name, _value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if name in seen:
                message = f"query parameter {_shown(name)!r} given more than once"
                raise ApiError(400, "bad_request", message)
            seen.add(name)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        limit = self.limits.max_body_bytes
        too_large = ApiError(413, "body_too_large", f"request body over {limit} bytes")
        for name, value in scope.get("headers", []):
            if name == b"content-length" and _over(value.strip(), limit):
                raise too_large
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _over(digits: bytes, limit: int) -> bool:
    """Whether a Content-Length value states more than ``limit`` bytes (its digits compared
    before any conversion: a value of thousands of digits is no work)."""
    if not digits.isdigit():
        return False  # not a length: the protocol layer refuses it
    digits = digits.lstrip(b"0") or b"0"
    return len(digits) > len(str(limit)) or int(digits) > limit


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body read already, then what the client sends."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _shown(name: str) -> str:
    """A caller's parameter name as an error message may repeat it: short and redacted."""
    return redact_text(name[:_SHOWN_NAME])


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
    limiter: RateLimiter,
    allowed_query: frozenset[str],
    *,
    limited: bool = True,
) -> None:
    """No unknown query parameters, then the client's rate limit (the token was checked by
    :class:`RequestGuard` before routing)."""
    unknown = sorted(set(request.query_params) - allowed_query)
    if unknown:
        names = ", ".join(_shown(name) for name in unknown)
        raise ApiError(400, "bad_request", f"unknown query parameter(s): {names}")
    if limited:
        wait = limiter.acquire(client_of(request))
        if wait > 0:
            raise ApiError(
                429,
                "rate_limited",
                "too many requests from this client",
                {"Retry-After": RateLimiter.retry_after(wait)},
            )
