"""The FastAPI dependencies both HTTP APIs declare on their routers: the bearer token, the query
rules, the per-client rate limit, and JSON bodies read after the token.

Generic over the state an app keeps on ``app.state`` (:class:`ServiceState`: ``auth``,
``limiter``, ``metrics`` and an ``on_rejected(path, kind)`` hook told of every refusal made here
or by the request guard, for metrics); :func:`install_service` puts it there with the error
handlers and the guard. :func:`protected_router` builds a router behind the token whose schema
documents what these dependencies refuse with.

**Auth is in one place**, :func:`require_token` — ``Security(HTTPBearer(auto_error=False))``
checked with :class:`~agent.service.auth.TokenAuth` — declared on the routers that need it
(:data:`PROTECTED`; health routers stay public), so both OpenAPI schemas show the bearer scheme.
A request without a valid token gets 401 whatever else is wrong with it, because of this order:

1. the request guard, before routing: 414 target, 431 headers (sizes only, nothing learnt);
2. routing; its 404/405 go through the same token check (:func:`install_service` makes the
   token the gate of those answers), so a caller without it learns no path;
3. :func:`require_token` → 401; :func:`checked_query` → 400 for a parameter given twice or not
   declared by the route; :func:`rate_limit` → 429 (router dependencies, in that order);
4. the route's parameters (400), and its body through :class:`JsonBody` — 413 from the guard
   while it is read, then 400. FastAPI reads and validates a body *declared* on a route, or on
   any of its dependencies, before it runs one dependency (malformed JSON would be a 400 before
   the 401), so no route declares one: :class:`JsonBody` is a dependency that depends on
   :func:`require_token`, reads the body itself and declares its schema with ``openapi_extra``.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any, Final, Generic, Protocol, TypeVar, runtime_checkable

from fastapi import APIRouter, Depends, FastAPI, Request, Security, params
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError

from agent.service.auth import CHALLENGE, TokenAuth
from agent.service.config import Limits
from agent.service.errors import ApiError, error_responses, install_error_handlers, shown
from agent.service.guard import CLOSE, install_guard
from agent.service.metrics import ServiceMetrics
from agent.service.ratelimit import RateLimiter

__all__ = [
    "PROTECTED",
    "PUBLIC",
    "RATE_LIMITED",
    "JsonBody",
    "ServiceState",
    "checked_query",
    "client_of",
    "install_service",
    "protected_router",
    "rate_limit",
    "require_token",
    "single_valued_query",
    "state_of",
]

ModelT = TypeVar("ModelT", bound=BaseModel)

#: the security scheme both schemas show (the result is checked by :func:`require_token`)
_BEARER: Final = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="The token of the server's `token_file` (the aggregator presents it to agents).",
)


@runtime_checkable
class ServiceState(Protocol):
    """What an app keeps on ``app.state`` for these dependencies."""

    @property
    def auth(self) -> TokenAuth: ...

    @property
    def limiter(self) -> RateLimiter: ...

    @property
    def metrics(self) -> ServiceMetrics:
        """What ``/metrics`` renders (:mod:`agent.service.observability`)."""

    def on_rejected(self, path: str, kind: str) -> None:
        """Told of each refusal by the guard or a dependency here (a metric, say)."""


def install_service(app: FastAPI, state: ServiceState, limits: Limits) -> FastAPI:
    """What every app of both processes gets: ``state`` on ``app.state``, the error handlers
    (routing's 404/405 behind the token) and the request guard in front of everything."""
    if not isinstance(state, ServiceState):
        raise TypeError(f"{type(state).__name__} is not a ServiceState")
    app.state.service = state
    install_error_handlers(app, gate=_routing_gate)
    return install_guard(app, limits, on_reject=state.on_rejected)


def state_of(request: Request) -> ServiceState:
    # checked once by install_service (a runtime protocol check costs ~50 µs a request)
    state: ServiceState | None = getattr(request.app.state, "service", None)
    if state is None:
        raise TypeError("the app has no service state: build it with install_service()")
    return state


def client_of(request: Request) -> str:
    """Who is asking (the rate limit's key, the logs' ``client``)."""
    return request.client.host if request.client else "unknown"


# --- the token ----------------------------------------------------------------------------------


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
) -> None:
    """401 unless the request carries the token (exactly one ``Authorization`` header)."""
    with _reported(request):
        refusal = _token_refusal(request, credentials)
        if refusal is not None:
            raise refusal


def _token_refusal(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> ApiError | None:
    """The 401 for a request without the valid token; None when it may go on."""
    single = len(request.headers.getlist("authorization")) == 1
    presented = credentials.credentials if credentials is not None and single else None
    if state_of(request).auth.accepts(presented):
        return None
    headers = {"WWW-Authenticate": CHALLENGE, **CLOSE}
    return ApiError(401, "unauthorized", "a valid bearer token is required", headers)


async def _routing_gate(request: Request) -> ApiError | None:
    """404/405 only with the token, except a public route's 405 (``DELETE /healthz``)."""
    route = request.scope.get("route")  # the route whose path matched, for a 405
    if isinstance(route, APIRoute) and not _needs_token(route):
        return None
    refusal = _token_refusal(request, await _BEARER(request))
    if refusal is not None:
        state_of(request).on_rejected(request.scope["path"], refusal.kind)
    return refusal


def _needs_token(route: APIRoute) -> bool:
    return any(getattr(d, "dependency", None) is require_token for d in route.dependencies)


# --- query parameters and the rate limit --------------------------------------------------------


async def checked_query(request: Request) -> None:
    """400 for a query parameter given twice or not declared by the route (named, never its
    values)."""
    with _reported(request):
        _single_valued(request)
        route = request.scope.get("route")
        declared = _declared_query(route) if isinstance(route, APIRoute) else frozenset()
        unknown = sorted(set(request.query_params) - declared)
        if unknown:
            names = ", ".join(shown(name) for name in unknown)
            raise ApiError(400, "bad_request", f"unknown query parameter(s): {names}")


async def single_valued_query(request: Request) -> None:
    """400 for a query parameter given twice (public routes accept any other)."""
    with _reported(request):
        _single_valued(request)


async def rate_limit(request: Request) -> None:
    """429 with ``Retry-After`` once this client is over its rate."""
    with _reported(request):
        wait = state_of(request).limiter.acquire(client_of(request))
        if wait > 0:
            retry = {"Retry-After": RateLimiter.retry_after(wait)}
            raise ApiError(429, "rate_limited", "too many requests from this client", retry)


def _single_valued(request: Request) -> None:
    seen: set[str] = set()
    for name, _value in request.query_params.multi_items():
        if name in seen:
            message = f"query parameter {shown(name)!r} given more than once"
            raise ApiError(400, "bad_request", message, CLOSE)
        seen.add(name)


def _declared_query(route: APIRoute) -> frozenset[str]:
    """The query parameters ``route`` and its dependencies declare (a walk of a few nodes)."""
    return frozenset(_query_names(route.dependant))


def _query_names(dependant: Dependant) -> Iterator[str]:
    yield from (field.alias for field in dependant.query_params)
    for sub in dependant.dependencies:
        yield from _query_names(sub)


@contextmanager
def _reported(request: Request) -> Iterator[None]:
    """Tell the state's ``on_rejected`` of a refusal raised inside."""
    try:
        yield
    except ApiError as refusal:
        state_of(request).on_rejected(request.scope["path"], refusal.kind)
        raise


#: the dependencies of every route that needs the token, in the order they run
PROTECTED: Final[list[params.Depends]] = [Security(require_token), Depends(checked_query)]
#: the per-client rate limit, after :data:`PROTECTED`
RATE_LIMITED: Final[params.Depends] = Depends(rate_limit)
#: the dependencies of a public route (health)
PUBLIC: Final[list[params.Depends]] = [Depends(single_valued_query)]


def protected_router(
    *tags: str,
    rate_limited: bool = True,
    errors: Iterable[int] = (),
    responses: Mapping[int | str, dict[str, Any]] | None = None,
) -> APIRouter:
    """A router whose routes need the token (:data:`PROTECTED`) and count against the client's
    rate (:data:`RATE_LIMITED`, unless ``rate_limited`` is false). Its schema documents what those
    refuse with (400, 401, and 429 when rate limited), the routes' own ``errors`` (statuses of
    :class:`~agent.service.errors.ErrorAnswer`) and ``responses``, which win over both."""
    statuses = {400, 401, *errors} | ({429} if rate_limited else set())
    return APIRouter(
        tags=list(tags),
        dependencies=[*PROTECTED, RATE_LIMITED] if rate_limited else PROTECTED,
        responses={**error_responses(*sorted(statuses)), **(responses or {})},
    )


# --- bodies -------------------------------------------------------------------------------------


class JsonBody(Generic[ModelT]):
    """A dependency giving a route its JSON body as ``model``, read only after the token.

    Declare it as a parameter, ``body: Annotated[Model, Depends(BODY)]``, and its schema with
    ``openapi_extra=BODY.openapi``. Invalid input is the same 400 a declared body gets (the
    fields named, never their values); a body that is not ``application/json`` is invalid.
    """

    def __init__(self, model: type[ModelT]) -> None:
        self.model = model
        schema = model.model_json_schema()  # a flat model: no $defs to place in the document
        content = {"application/json": {"schema": schema}}
        self.openapi: dict[str, Any] = {"requestBody": {"required": True, "content": content}}

    async def __call__(
        self, request: Request, _token: Annotated[None, Security(require_token)]
    ) -> ModelT:
        raw = await request.body()  # the guard's 413 comes from here
        if not raw:
            raise _invalid([{"type": "missing", "loc": (), "msg": "Field required"}])
        value: Any = raw
        if _is_json(request.headers.get("content-type")):
            try:
                value = json.loads(raw)
            except (ValueError, RecursionError) as exc:  # also not UTF-8, or nested too deep
                where = exc.pos if isinstance(exc, json.JSONDecodeError) else 0
                raise _invalid(
                    [{"type": "json_invalid", "loc": (where,), "msg": _DECODE}]
                ) from None
        try:
            return self.model.model_validate(value, from_attributes=True)
        except ValidationError as exc:
            raise _invalid(exc.errors(include_url=False, include_input=False)) from None


_DECODE: Final = "JSON decode error"


def _is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/*+json``, as FastAPI takes a declared body."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _invalid(errors: list[Any]) -> RequestValidationError:
    return RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors])
