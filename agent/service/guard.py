"""The request guard: the sizes every request must keep, checked before routing.

An ASGI middleware (outermost of the app's own), so nothing — routing, validation, a handler —
sees a request before its head was measured:

1. a request target (raw path and query) over ``limits.max_url_bytes`` → 414 ``uri_too_long``;
   header fields over ``limits.max_header_bytes`` in all, or more than :data:`MAX_HEADERS` →
   431 ``headers_too_large`` — answered at once;
2. the body: whoever reads it (a route's body dependency, after the bearer token was checked)
   gets 413 ``body_too_large`` once it passes ``limits.max_body_bytes``, chunked or not — a
   larger ``Content-Length`` is refused before a byte is read. A body nobody reads is never
   buffered, and a caller without the token gets its 401 without the body being read.

Starlette's own ``RequestBodyLimitMiddleware`` is not used: it answers 413 even when the app
answered without reading the body, which would tell a caller without the token about the limit.

Refusals are :class:`~agent.service.errors.ApiError` answers with ``Connection: close`` (a body
left unread must not be taken for the next request); ``on_reject(path, kind)`` is told of each.
A client that goes away while sending its body gets nothing (and the logs no traceback).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Final

from fastapi import FastAPI
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.service.config import Limits
from agent.service.errors import ApiError

__all__ = ["CLOSE", "MAX_HEADERS", "OnReject", "RequestGuard", "install_guard"]

#: more header fields than this → 431
MAX_HEADERS: Final = 100
#: the header of every refusal after which the connection must not be reused
CLOSE: Final = {"Connection": "close"}

#: told of every refusal: the request's path and the error's kind
OnReject = Callable[[str, str], None]


def install_guard(app: FastAPI, limits: Limits, *, on_reject: OnReject | None = None) -> FastAPI:
    """Put :class:`RequestGuard` in front of ``app`` (outermost of its middleware)."""
    app.add_middleware(RequestGuard, limits=limits, on_reject=on_reject)
    return app


class RequestGuard:
    """The request-size checks above, as ASGI middleware."""

    def __init__(self, app: ASGIApp, limits: Limits, on_reject: OnReject | None = None) -> None:
        self.app, self.limits, self.on_reject = app, limits, on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self._check_head(scope)
        except ApiError as refusal:
            self._rejected(scope, refusal)
            await refusal.answer()(scope, receive, send)
            return
        # a client gone while sending its body: there is nobody to answer
        with contextlib.suppress(ClientDisconnect):
            await self.app(scope, self._bounded(scope, receive), send)

    def _rejected(self, scope: Scope, refusal: ApiError) -> None:
        if self.on_reject is not None:
            self.on_reject(str(scope.get("path", "")), refusal.kind)

    def _check_head(self, scope: Scope) -> None:
        limits = self.limits
        query: bytes = scope.get("query_string", b"")
        path: bytes = scope.get("raw_path") or scope["path"].encode()
        target = len(path) + (len(query) + 1 if query else 0)
        if target > limits.max_url_bytes:
            message = f"request target over {limits.max_url_bytes} bytes"
            raise ApiError(414, "uri_too_long", message, CLOSE)
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        if len(headers) > MAX_HEADERS:
            raise ApiError(
                431, "headers_too_large", f"more than {MAX_HEADERS} header fields", CLOSE
            )
        if sum(len(name) + len(value) for name, value in headers) > limits.max_header_bytes:
            message = f"header fields over {limits.max_header_bytes} bytes"
            raise ApiError(431, "headers_too_large", message, CLOSE)

    def _bounded(self, scope: Scope, receive: Receive) -> Receive:
        """``receive`` that raises the 413 once the body read passes the limit."""
        limit = self.limits.max_body_bytes
        declared = [v.strip() for n, v in scope.get("headers", []) if n == b"content-length"]
        size = 0

        def too_large() -> ApiError:
            refusal = ApiError(413, "body_too_large", f"request body over {limit} bytes", CLOSE)
            self._rejected(scope, refusal)
            return refusal

        async def bounded() -> Message:
            nonlocal size
            if any(_over(value, limit) for value in declared):
                raise too_large()
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    raise too_large()
            return message

        return bounded


def _over(digits: bytes, limit: int) -> bool:
    """Whether a Content-Length value states more than ``limit`` bytes (its digits compared
    before any conversion: a value of thousands of digits is no work)."""
    if not digits.isdigit():
        return False  # not a length: the protocol layer refuses it
    digits = digits.lstrip(b"0") or b"0"
    return len(digits) > len(str(limit)) or int(digits) > limit
