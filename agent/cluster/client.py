"""The aggregator's side of the agent API: one typed client, one typed failure.

:class:`AgentClient` asks a node agent (``/healthz``, ``/readyz``, ``/v1/images``,
``/v1/pulltest``, ``/v1/prepull``, ``/v1/connectivity``) and parses its answer into the node's
models (:mod:`agent.node.models`, the engine's :class:`~agent.models.PullTestResult`). Whatever
goes wrong is answered, never raised, as one :class:`CallFailure`:

``unreachable``  no connection, or it broke (refused, reset, closed mid-answer);
``timeout``      no whole answer within the call's deadline;
``refused``      an error status with the agent's ``{"error": kind, "message": …}``;
``garbage``      something answered, but not what a pullcheck agent answers (not JSON, not the
                 model, or over :data:`MAX_ANSWER_BYTES`).

:class:`JsonClient` is what every such client needs (the aggregator also forwards to its leading
replica with it, :mod:`agent.cluster.forwarding`): it owns the ``httpx.AsyncClient`` (at most
``max_connections`` calls at once; one small connection pool per peer, whose kept-alive
connections expire after 2 s, before the peer's uvicorn drops them after 5 s; ``trust_env=False``:
no proxy from the environment), the bearer token, a deadline per call, a bounded read, and one
retry when a kept-alive connection turns out stale.

One pool per peer, not one pool for all: httpx's pool looks for a connection by scanning every
connection it holds for every queued request, so one pool over 1,000 agents spent seconds of CPU
per fan-out (``bench/bench_aggregator_1000.py``); a pool per agent holds a handful.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from agent.models import PullTestResult
from agent.node.models import (
    ConnectivityAnswer,
    HealthAnswer,
    ImagesAnswer,
    PrepullBody,
    PullOutcome,
    PullTestBody,
    ReadyAnswer,
)
from agent.redaction import redact_text
from agent.service.config import ConfigError
from agent.service.errors import ErrorAnswer
from agent.validation import describe_errors

__all__ = [
    "MAX_ANSWER_BYTES",
    "PLAIN_HTTP_CREDENTIALS",
    "AgentClient",
    "AgentTls",
    "AgentTlsError",
    "CallFailure",
    "FailureKind",
    "JsonClient",
    "Readyz",
    "Reply",
]

#: the largest answer read from a peer (a node's full result is a few hundred KiB)
MAX_ANSWER_BYTES: Final = 8 * 1024 * 1024
_KEEPALIVE_EXPIRY: Final = 2.0  # seconds; agents (uvicorn) drop idle connections after 5 s
_PER_PEER: Final = 8  # connections to one peer (readiness, tests, pre-pulls at once)
_FORGET_PEER: Final = 60.0  # seconds after its last call a peer's (empty) pool is dropped
_REASON_LIMIT: Final = 300  # characters of a failure's message
# a kept-alive connection the peer had just closed: the request never reached it
_STALE_CONNECTION: Final = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)

#: the error kind of a call refused because it would send credentials over plain HTTP
PLAIN_HTTP_CREDENTIALS: Final = "plain_http_credentials"
_CREDENTIAL_FIELDS: Final = ("creds", "auth", "docker_config")

_IDENTIFY_DEADLINE: Final = 2.0
_READY_DEADLINE: Final = 3.0
_IMAGES_DEADLINE: Final = 30.0

M = TypeVar("M", bound=BaseModel)


class FailureKind(StrEnum):
    """What went wrong with a call (see the module doc)."""

    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    REFUSED = "refused"
    GARBAGE = "garbage"


@dataclass(frozen=True)
class CallFailure:
    """Why a call got no usable answer; ``message`` is one redacted, bounded line."""

    kind: FailureKind
    message: str
    status: int | None = None  # the HTTP status, when something answered
    error: str | None = None  # the peer's error kind, when it refused

    @property
    def reason(self) -> str:
        """One line for a person: the message, after the status and kind of a refusal."""
        if self.kind is FailureKind.REFUSED:
            return f"HTTP {self.status} {self.error}" + (
                f": {self.message}" if self.message else ""
            )
        return self.message


@dataclass(frozen=True)
class Reply:
    """A whole answer: its status and body (at most ``MAX_ANSWER_BYTES``)."""

    status: int
    body: bytes


@dataclass(frozen=True)
class Readyz:
    """An agent's ``/readyz``: the answer and its status (200 when ready, else 503)."""

    answer: ReadyAnswer
    status: int


class _TooLarge(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _carries_credentials(body: BaseModel) -> bool:
    """Whether a request body holds credentials (a pull test's or a pre-pull's)."""
    return any(getattr(body, name, None) is not None for name in _CREDENTIAL_FIELDS)


def _plain(url: str) -> bool:
    return not url.lower().startswith("https://")


def _line(text: str) -> str:
    return redact_text(" ".join(text.split()))[:_REASON_LIMIT]


def _garbage(status: int, why: str) -> CallFailure:
    """Something answered ``status``, but not with what was asked for (``why``)."""
    message = f"HTTP {status}, not a pullcheck agent's answer ({why})"
    return CallFailure(FailureKind.GARBAGE, _line(message), status=status)


def _refusal(reply: Reply) -> CallFailure | None:
    """The peer's error answer, when ``reply`` is one (an error status with an error body)."""
    if reply.status < 400:
        return None
    try:
        body = ErrorAnswer.model_validate_json(reply.body)
    except ValidationError:
        return None
    return CallFailure(
        FailureKind.REFUSED, _line(body.message), status=reply.status, error=_line(body.error)
    )


def _parse(reply: Reply, model: type[M]) -> M | CallFailure:
    """``reply`` as ``model``: an error answer is ``refused``; anything else that is not the
    model is ``garbage`` (the first validation problem says why, never the input). Fields the
    model does not know are dropped, not refused: a newer agent adds fields (a rolling update
    reaches the agents first) and must not look like something else answering."""
    if reply.status != 200 and (refused := _refusal(reply)) is not None:
        return refused
    try:
        return model.model_validate_json(reply.body, extra="ignore")
    except ValidationError as exc:
        first = exc.errors(include_url=False)[:1]
        return _garbage(reply.status, describe_errors(first, root="answer", show_input=False)[0])


@dataclass(frozen=True)
class AgentTls:
    """How agents reached over HTTPS are verified: the CA bundle their certificates chain to
    (None: the system trust store) and the name their certificate carries (None: the address
    dialled). Agents are reached by pod IP, so a certificate issued for the agents' Service
    (``pullcheck-agent.pullcheck.svc``) is checked against that name, sent as SNI."""

    ca_file: str | None = None
    server_name: str | None = None

    def context(self) -> ssl.SSLContext:
        """A verifying client context; :class:`AgentTlsError` naming the file it cannot read."""
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
            raise AgentTlsError(f"agent CA bundle {self.ca_file}: {reason}") from None


class AgentTlsError(ConfigError):
    """The CA bundle for the agents' certificates cannot be read or is not PEM."""


class _PeerPools(httpx.AsyncBaseTransport):
    """One small connection pool (an ``httpx.AsyncHTTPTransport``) per peer
    (scheme, host, port), sharing one TLS context; a peer not called for
    :data:`_FORGET_PEER` seconds is forgotten (its kept-alive connections expired long before)."""

    def __init__(self, tls: AgentTls | None = None) -> None:
        self._tls = tls or AgentTls()
        self._pools: dict[tuple[str, str, int | None], httpx.AsyncHTTPTransport] = {}
        self._used: dict[tuple[str, str, int | None], float] = {}  # last call started
        self._active: dict[tuple[str, str, int | None], int] = {}  # calls still running
        self._ssl: ssl.SSLContext | None = None
        self._pruned = time.monotonic()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        key = (url.scheme, url.host, url.port)
        pool = self._pools.get(key)
        if pool is None:
            await self._prune()
            pool = self._pools[key] = httpx.AsyncHTTPTransport(
                verify=self._context(),
                trust_env=False,
                limits=httpx.Limits(
                    max_connections=_PER_PEER,
                    max_keepalive_connections=_PER_PEER,
                    keepalive_expiry=_KEEPALIVE_EXPIRY,
                ),
            )
        if url.scheme == "https" and self._tls.server_name:
            # the agents' certificate names the Service, not each pod's address
            request.extensions = {**request.extensions, "sni_hostname": self._tls.server_name}
        self._used[key] = time.monotonic()
        self._active[key] = self._active.get(key, 0) + 1
        try:
            return await pool.handle_async_request(request)
        finally:
            self._active[key] -= 1

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:  # built once, only when the first pool is: agents may be https
            self._ssl = self._tls.context()
        return self._ssl

    async def _prune(self) -> None:
        now = time.monotonic()
        if now - self._pruned < _FORGET_PEER:
            return
        self._pruned = now
        stale = [
            key
            for key, used in self._used.items()
            if now - used > _FORGET_PEER and not self._active.get(key)
        ]
        for key in stale:
            del self._used[key], self._active[key]
            await self._pools.pop(key).aclose()

    async def aclose(self) -> None:
        pools = list(self._pools.values())
        self._pools.clear()
        self._used.clear()
        self._active.clear()
        for pool in pools:
            await pool.aclose()


class JsonClient:
    """Requests to peers under a deadline each; a :class:`Reply` or a :class:`CallFailure`.

    ``token`` gives the bearer token to present (None: none); ``transport`` replaces the network
    (tests mount ASGI apps with ``httpx.ASGITransport``).
    """

    def __init__(
        self,
        *,
        token: Callable[[], str | None] | None = None,
        max_connections: int = 64,
        transport: httpx.AsyncBaseTransport | None = None,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        tls: AgentTls | None = None,
    ) -> None:
        if max_connections < 1 or max_answer_bytes < 1:
            raise ValueError("max_connections and max_answer_bytes must be at least 1")
        self._tls = tls
        self._token = token
        self._gate = asyncio.Semaphore(max_connections)  # calls at once, over all peers
        self._transport = transport
        self._max_answer = max_answer_bytes
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            transport = self._transport or _PeerPools(self._tls)
            self._client = httpx.AsyncClient(
                transport=transport,
                trust_env=False,
                timeout=None,  # noqa: S113 - every call runs under its own deadline
            )
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        token = self._token() if self._token is not None else None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return headers | dict(extra or {})

    async def request(
        self,
        method: Literal["GET", "POST"],
        url: str,
        *,
        deadline: float,
        params: Mapping[str, str] | None = None,
        body: BaseModel | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply | CallFailure:
        """One request to ``url``, its answer read whole within ``deadline`` seconds."""
        content = None if body is None else body.model_dump_json(exclude_none=True).encode()
        sent = self._headers(headers)
        if content is not None:
            sent["Content-Type"] = "application/json"
        try:
            async with asyncio.timeout(deadline):
                try:
                    return await self._exchange(method, url, params, content, sent)
                except _STALE_CONNECTION:
                    # the peer had just closed a kept-alive connection, so the request never
                    # reached it; every call here is idempotent (tests are shared, pre-pulls
                    # skip what is present): once more. httpx retries only failed connects.
                    return await self._exchange(method, url, params, content, sent)
        except TimeoutError:
            return CallFailure(FailureKind.TIMEOUT, f"no answer within {deadline:g} s")
        except _TooLarge as exc:
            return _garbage(exc.status, f"an answer over {self._max_answer} bytes")
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return CallFailure(FailureKind.UNREACHABLE, _line(str(exc) or type(exc).__name__))

    async def _exchange(
        self,
        method: str,
        url: str,
        params: Mapping[str, str] | None,
        content: bytes | None,
        headers: dict[str, str],
    ) -> Reply:
        client = self._http()
        request = client.build_request(method, url, params=params, content=content, headers=headers)
        async with self._gate:
            return await self._read(client, request)

    async def _read(self, client: httpx.AsyncClient, request: httpx.Request) -> Reply:
        response = await client.send(request, stream=True)
        try:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self._max_answer:
                raise _TooLarge(response.status_code)
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > self._max_answer:
                    raise _TooLarge(response.status_code)
        finally:
            await response.aclose()
        return Reply(response.status_code, bytes(body))


class AgentClient(JsonClient):
    """The node agents' API, typed: each method answers the node's model or a failure.

    ``url`` is an agent's base URL (``http://10.0.0.1:8479``); ``deadline`` bounds the whole
    call in seconds. A body carrying credentials (``creds``, ``auth``, ``docker_config``) goes
    only to an ``https://`` agent unless ``plain_http_credentials``: otherwise the call is
    ``refused`` here, before anything is sent (error :data:`PLAIN_HTTP_CREDENTIALS`).
    """

    def __init__(
        self,
        *,
        token: Callable[[], str | None] | None = None,
        max_connections: int = 64,
        transport: httpx.AsyncBaseTransport | None = None,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        tls: AgentTls | None = None,
        plain_http_credentials: bool = False,
    ) -> None:
        super().__init__(
            token=token,
            max_connections=max_connections,
            transport=transport,
            max_answer_bytes=max_answer_bytes,
            tls=tls,
        )
        self.plain_http_credentials = plain_http_credentials

    async def _get(
        self, url: str, path: str, model: type[M], deadline: float, **params: str
    ) -> M | CallFailure:
        reply = await self.request("GET", f"{url}{path}", deadline=deadline, params=params or None)
        return reply if isinstance(reply, CallFailure) else _parse(reply, model)

    async def _post(
        self, url: str, path: str, body: BaseModel, model: type[M], deadline: float
    ) -> M | CallFailure:
        if not self.plain_http_credentials and _carries_credentials(body) and _plain(url):
            return CallFailure(
                FailureKind.REFUSED,
                f"refused to send credentials to the agent at {_line(url)} over plain HTTP",
                error=PLAIN_HTTP_CREDENTIALS,
            )
        reply = await self.request("POST", f"{url}{path}", deadline=deadline, body=body)
        return reply if isinstance(reply, CallFailure) else _parse(reply, model)

    async def health(
        self, url: str, *, deadline: float = _IDENTIFY_DEADLINE
    ) -> HealthAnswer | CallFailure:
        """``/healthz``: alive, and which node the agent serves."""
        return await self._get(url, "/healthz", HealthAnswer, deadline)

    async def ready(self, url: str, *, deadline: float = _READY_DEADLINE) -> Readyz | CallFailure:
        """``/readyz``: whether the node's container runtime answers (200 or 503 both answer)."""
        reply = await self.request("GET", f"{url}/readyz", deadline=deadline)
        if isinstance(reply, CallFailure):
            return reply
        answer = _parse(reply, ReadyAnswer)
        return answer if isinstance(answer, CallFailure) else Readyz(answer, reply.status)

    async def images(
        self, url: str, *, deadline: float = _IMAGES_DEADLINE
    ) -> ImagesAnswer | CallFailure:
        """``/v1/images``: the images on the node (CRI ListImages)."""
        return await self._get(url, "/v1/images", ImagesAnswer, deadline)

    async def pulltest(
        self, url: str, test: PullTestBody, *, deadline: float, post: bool = False
    ) -> PullTestResult | CallFailure:
        """A pull test on the node: ``GET /v1/pulltest?image=…&mode=…&timeout=…``, or with
        ``post`` ``POST /v1/pulltest`` with ``test`` as the body (credentials go only there)."""
        if post:
            return await self._post(url, "/v1/pulltest", test, PullTestResult, deadline)
        if test.creds is not None or test.auth is not None or test.docker_config is not None:
            raise ValueError("credentials go in a POST body, never in a URL")
        params = {"image": test.image}
        if test.mode:
            params["mode"] = test.mode
        if test.timeout is not None:
            params["timeout"] = f"{test.timeout:g}"
        return await self._get(url, "/v1/pulltest", PullTestResult, deadline, **params)

    async def prepull(
        self, url: str, body: PrepullBody, *, deadline: float
    ) -> PullOutcome | CallFailure:
        """``POST /v1/prepull``: one image of a pre-pull job onto the node."""
        return await self._post(url, "/v1/prepull", body, PullOutcome, deadline)

    async def connectivity(self, url: str, *, deadline: float) -> ConnectivityAnswer | CallFailure:
        """``/v1/connectivity``: the node's probes of its registries."""
        return await self._get(url, "/v1/connectivity", ConnectivityAnswer, deadline)
