"""The errors of both HTTP APIs: one exception, one answer shape, the handlers that give it.

Every error answer is ``{"error": kind, "message": …}`` (:class:`ErrorAnswer`): an
:class:`ApiError` raised anywhere (a dependency, a route, the request guard while the body is
read), invalid input as 400 ``bad_request`` naming the fields — never echoing the input, a body
may carry credentials — and routing's own 404/405.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from agent.redaction import redact_text
from agent.validation import describe_errors, join_problems

__all__ = [
    "ApiError",
    "ErrorAnswer",
    "RoutingGate",
    "error_responses",
    "install_error_handlers",
    "shown",
]

_SHOWN_NAME: Final = 64  # characters of a caller's name (a parameter) an error message repeats

#: what each refusal of the shared plumbing means, for the OpenAPI schema
_MEANING: Final = {
    400: "Invalid input: the message names the parameter or field (never its value).",
    401: "A valid bearer token is required.",
    403: "Refused by policy: not in the registry allowlist, or read-only.",
    413: "The request body is over the configured limit.",
    429: "Rate limited: retry after the Retry-After header's seconds.",
}


class ErrorAnswer(BaseModel):
    """Every error answer of both APIs."""

    error: str  # a stable kind: bad_request, unauthorized, not_allowed, rate_limited, …
    message: str  # one line for a person


class ApiError(HTTPException):
    """An error answered as ``{"error": kind, "message": …}`` with an HTTP status.

    A Starlette ``HTTPException``, so FastAPI passes one raised while it reads a body (the
    request guard's 413) on to the handlers unchanged.
    """

    def __init__(
        self, status: int, kind: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(status, message, headers)
        self.status, self.kind, self.message = status, kind, message

    def __str__(self) -> str:
        return self.message

    def answer(self) -> JSONResponse:
        return JSONResponse(
            ErrorAnswer(error=self.kind, message=self.message).model_dump(),
            self.status,
            headers=self.headers,
        )


#: decides whether a caller may get routing's 404/405 (None) or is refused instead
RoutingGate = Callable[[Request], Awaitable[ApiError | None]]


def install_error_handlers(app: FastAPI, *, gate: RoutingGate) -> None:
    """``{"error": kind, "message": …}`` for every error, 400 (not 422) for invalid input;
    routing's 404/405 only for callers ``gate`` lets through (the others get its refusal)."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return exc.answer()

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return ApiError(400, "bad_request", _validation_message(exc)).answer()

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code in _ROUTING:
            refusal = await gate(request)
            if refusal is not None:
                return refusal.answer()
        kind, message = _ROUTING.get(exc.status_code, ("http_error", str(exc.detail)))
        return ApiError(exc.status_code, kind, message, exc.headers).answer()


_ROUTING: Final = {
    404: ("not_found", "no such endpoint"),
    405: ("method_not_allowed", "method not allowed here"),
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route or router: ``statuses`` with their meaning, and every other
    client error (``4XX``: routing's 404/405, …) — all of them :class:`ErrorAnswer` bodies.

    FastAPI documents these under the route's ``response_class`` media type: a route answering
    another type (``/metrics``) takes ``response_class=Response`` and declares its own 200.
    """
    documented: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorAnswer, "description": _MEANING[status]} for status in statuses
    }
    documented["4XX"] = {"model": ErrorAnswer, "description": "Any other refusal."}
    return documented


def shown(name: str) -> str:
    """A caller's name (a query parameter's) as an error message may repeat it: short and
    redacted."""
    return redact_text(name[:_SHOWN_NAME])


def _validation_message(exc: RequestValidationError) -> str:
    # never echo the input: a body may carry credentials
    problems = describe_errors(
        exc.errors(), root="request", sources=("body", "query"), show_input=False
    )
    return join_problems(problems)
