"""Watching a Kubernetes resource the way client-go's reflector does, with bounded memory.

:class:`Reflector` lists the objects (in pages of ``page_size``), then watches from the list's
``resourceVersion`` with ``allowWatchBookmarks=true`` and a server-side ``timeoutSeconds``; it
follows the version of every event and BOOKMARK, so that a stream that ends (the server's
timeout, a restart, a broken connection) is resumed where it stopped, without a list. A
``410 Gone`` — as a status or as an ``ERROR`` event (``too old resource version``) — means the
version left the server's window: it lists again. Other errors wait (exponential back-off with
jitter, capped) and resume. Nothing is kept but the last version: each page of a list and each
event goes to the sink as it arrives, and a watch line over ``max_line_bytes`` is an error.

lightkube's own ``watch()`` neither asks for bookmarks nor lists again after a 410 (it resumes
from "now", missing every change in between), so the requests are made here, over the HTTP
client lightkube builds from the same configuration (kubeconfig, in-cluster token, CA).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import httpx2
from lightkube import AsyncClient
from lightkube.config.client_adapter import AsyncClient as _http_client
from lightkube.config.client_adapter import ConnectionParams

__all__ = [
    "Backoff",
    "Change",
    "Listed",
    "Reflector",
    "Synced",
    "WatchError",
    "http_client",
    "resource_path",
]

log = logging.getLogger("pullcheck.kube.watch")

Json = dict[str, Any]

_MAX_LINE: Final = 4 * 1024 * 1024  # an object is at most ~1.5 MiB in etcd; a line a bit more
_READ_GRACE: Final = 30.0  # seconds a read may wait beyond the server's timeoutSeconds
# a watch that ends this soon without one event is an error (client-go's "very short watch"):
# resuming at once would spin against a server or proxy that closes every stream
_SHORT_WATCH: Final = 1.0
_STATUS_LIMIT: Final = 300  # characters of a server message kept


@dataclass(frozen=True)
class Listed:
    """One page of a (re)list: the objects as they are now. ``first``: the list's first page
    (a list that failed half-way starts again with a first page)."""

    objects: list[Json]
    first: bool = False


@dataclass(frozen=True)
class Synced:
    """A (re)list is complete: objects not in its pages are gone."""

    resource_version: str


@dataclass(frozen=True)
class Change:
    """One watch event."""

    type: Literal["ADDED", "MODIFIED", "DELETED"]
    object: Json


Sink = Callable[[Listed | Synced | Change], Awaitable[None]]


class WatchError(Exception):
    """A list or watch request failed: ``status`` (None: no answer) and the server's message."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _Gone(Exception):
    """410: the resourceVersion is too old."""


def resource_path(plural: str, namespace: str | None = None, group: str = "") -> str:
    """The collection's path: ``/api/v1/pods``, ``/api/v1/namespaces/ns/pods``,
    ``/apis/events.k8s.io/v1/…``."""
    root = f"/apis/{group}/v1" if group else "/api/v1"
    return f"{root}/namespaces/{namespace}/{plural}" if namespace else f"{root}/{plural}"


def http_client(
    kube: AsyncClient, *, watch_timeout: int, connect: float = 10.0
) -> httpx2.AsyncClient:
    """An HTTP client for the API server ``kube`` talks to (its URL, credentials and CA), whose
    reads wait as long as a watch may stay quiet. No proxy from the environment."""
    timeout = httpx2.Timeout(connect, read=watch_timeout + _READ_GRACE)
    return _http_client(kube.config, ConnectionParams(timeout=timeout, trust_env=False))


@dataclass
class Backoff:
    """Seconds to wait after the n-th failure in a row: ``initial`` x 2^n, at most ``maximum``,
    times a random factor in [0.5, 1] so replicas do not retry in step."""

    initial: float = 1.0
    maximum: float = 30.0
    failures: int = field(default=0, init=False)

    def next(self) -> float:
        delay = min(self.maximum, self.initial * 2.0 ** min(self.failures, 30))
        self.failures += 1
        jitter: float = random.uniform(0.5, 1.0)
        return delay * jitter

    def reset(self) -> None:
        self.failures = 0


class Reflector:
    """List-then-watch of one collection (``path`` from :func:`resource_path`) into a sink.

    ``http`` is an ``httpx2.AsyncClient`` for the API server (:func:`http_client`).
    ``on_restart(reason)`` is told each restart: ``relist`` (every list, the first included),
    ``expired`` (410), ``error`` (a failed request, before the back-off), ``end`` (the stream
    ended; resumed at once).
    """

    def __init__(
        self,
        http: httpx2.AsyncClient,
        path: str,
        *,
        watch_timeout: int = 300,
        page_size: int = 500,
        max_line_bytes: int = _MAX_LINE,
        backoff: Backoff | None = None,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        if watch_timeout < 1 or page_size < 1 or max_line_bytes < 1024:
            raise ValueError("watch_timeout, page_size and max_line_bytes out of range")
        self._http = http
        self._path = path
        self._watch_timeout = watch_timeout
        self._page_size = page_size
        self._max_line = max_line_bytes
        self._backoff = backoff or Backoff()
        self._on_restart = on_restart or (lambda _reason: None)
        self.version: str | None = None  # the last resourceVersion seen (None: list first)
        self.last_error = ""

    async def run(self, sink: Sink) -> None:
        """List and watch until cancelled; never returns otherwise, never raises an API error."""
        while True:
            try:
                if self.version is None:
                    self._on_restart("relist")
                    self.version = await self._list(sink)
                started = time.monotonic()
                if not await self._watch(sink) and time.monotonic() - started < _SHORT_WATCH:
                    raise WatchError(
                        f"watch {self._path}: very short watch: it ended within "
                        f"{_SHORT_WATCH:g} s without an event"
                    )
                self._on_restart("end")
            except _Gone:
                log.info("watch of %s: resourceVersion expired (410), listing again", self._path)
                self._on_restart("expired")
                self.version = None
            except WatchError as exc:
                self.last_error = str(exc)
                self._on_restart("error")
                delay = self._backoff.next()
                log.warning("watch of %s failed (%s); retrying in %.1f s", self._path, exc, delay)
                await asyncio.sleep(delay)
            except Exception:  # a bug in the sink must not end the watch for good: list again
                self.last_error = "the consumer of the watch failed"
                self._on_restart("error")
                self.version = None
                delay = self._backoff.next()
                log.exception("watch of %s: the sink failed; listing again in %.1f s", self._path,
                              delay)  # fmt: skip
                await asyncio.sleep(delay)

    # --- list -----------------------------------------------------------------------------

    async def _list(self, sink: Sink) -> str:
        token = ""
        while True:
            params = {"limit": str(self._page_size)}
            if token:
                params["continue"] = token
            body = await self._get_json(params)
            metadata = _mapping(body.get("metadata"))
            items = body.get("items") or []
            if not isinstance(items, list):
                raise WatchError(f"list {self._path}: items is not a list")
            first = not params.get("continue")
            await sink(Listed([item for item in items if isinstance(item, dict)], first=first))
            token = str(metadata.get("continue") or "")
            if not token:
                version = str(metadata.get("resourceVersion") or "")
                if not version:
                    raise WatchError(f"list {self._path}: no resourceVersion in the answer")
                await sink(Synced(version))
                self._backoff.reset()
                return version

    async def _get_json(self, params: dict[str, str]) -> Json:
        try:
            response = await self._http.get(self._path, params=params)
        except httpx2.HTTPError as exc:
            raise WatchError(f"list {self._path}: {type(exc).__name__}: {exc}") from None
        if response.status_code == 410:
            raise _Gone
        if response.status_code != 200:
            raise WatchError(_status_text("list", self._path, response), response.status_code)
        try:
            body = response.json()
        except ValueError:
            raise WatchError(f"list {self._path}: the answer is not JSON") from None
        if not isinstance(body, dict):
            raise WatchError(f"list {self._path}: the answer is not an object")
        return body

    # --- watch ----------------------------------------------------------------------------

    async def _watch(self, sink: Sink) -> int:
        """Follow one watch stream until it ends; how many events (bookmarks included) came."""
        assert self.version is not None
        received = 0
        params = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": self.version,
            "timeoutSeconds": str(self._watch_timeout),
        }
        try:
            async with self._http.stream("GET", self._path, params=params) as response:
                if response.status_code == 410:
                    raise _Gone
                if response.status_code != 200:
                    await response.aread()
                    raise WatchError(
                        _status_text("watch", self._path, response), response.status_code
                    )
                async for line in _lines(response.aiter_bytes(), self._max_line, self._path):
                    await self._event(line, sink)
                    received += 1
                    self._backoff.reset()
        except httpx2.HTTPError as exc:
            raise WatchError(f"watch {self._path}: {type(exc).__name__}: {exc}") from None
        return received

    async def _event(self, line: bytes, sink: Sink) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            raise WatchError(f"watch {self._path}: a line is not JSON") from None
        kind = event.get("type") if isinstance(event, dict) else None
        obj = event.get("object") if isinstance(event, dict) else None
        if not isinstance(obj, dict):
            raise WatchError(f"watch {self._path}: an event without an object")
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise _Gone
            message = str(obj.get("message") or "")[:_STATUS_LIMIT]
            raise WatchError(f"watch {self._path}: error event {code}: {message}", code)
        version = _mapping(obj.get("metadata")).get("resourceVersion")
        if kind == "BOOKMARK":
            if version:
                self.version = str(version)
            return
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            raise WatchError(f"watch {self._path}: unknown event type {str(kind)[:40]!r}")
        await sink(Change(kind, obj))
        if version:
            self.version = str(version)


def _mapping(value: Any) -> Json:
    """``value`` when it is a JSON object, else an empty one (a hostile or broken answer)."""
    return value if isinstance(value, dict) else {}


async def _lines(chunks: AsyncIterator[bytes], limit: int, path: str) -> AsyncIterator[bytes]:
    """Newline-separated lines of a stream, each at most ``limit`` bytes."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        while (end := buffer.find(b"\n")) >= 0:
            line, buffer = buffer[:end], buffer[end + 1 :]
            if line.strip():
                yield line
        if len(buffer) > limit:
            raise WatchError(f"watch {path}: a line over {limit} bytes")
    if buffer.strip():
        yield buffer


def _status_text(verb: str, path: str, response: httpx2.Response) -> str:
    """``list /api/v1/pods: HTTP 403 Forbidden: pods is forbidden: User …`` (the Status's
    message, bounded)."""
    message = ""
    try:
        body = response.json()
        if isinstance(body, dict):
            message = str(body.get("message") or "")
    except ValueError:
        message = ""
    reason = response.reason_phrase or ""
    text = f"{verb} {path}: HTTP {response.status_code} {reason}".rstrip()
    return f"{text}: {message[:_STATUS_LIMIT]}" if message else text
