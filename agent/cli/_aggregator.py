"""Talking to the aggregator from the CLI: one bounded client (``--url`` and ``--token-file``
are declared in :mod:`agent.cli._options`, so that parsing them imports no HTTP client).

Answers are parsed into the aggregator's models (:mod:`agent.cluster.models`). Every failure
becomes a :class:`~agent.cli._options.CommandError` that ``main()`` prints (one JSON object with
``--json``): the aggregator not answering, or answering what it never answers, is
``aggregator_unreachable`` (exit 1), an error status is the aggregator's own ``error`` kind
(exit 2 for a bad request or an unknown name, else 1). The token is sent, never printed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import click
import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from agent.cli._options import EXIT_FAILED, EXIT_USAGE, CommandError
from agent.service.errors import ErrorAnswer
from agent.validation import describe_errors

__all__ = ["Aggregator"]

_MAX_TOKEN_BYTES = 16 * 1024
_MAX_BODY_BYTES = 64 * 1024 * 1024  # one answer (every node's full result) or one ndjson line
_USAGE_STATUSES = frozenset({400, 404, 422})  # the request was wrong: a usage error

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def _read_token(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_TOKEN_BYTES + 1)
    except OSError as exc:
        raise click.UsageError(f"token file {path}: {exc.strerror or exc}") from None
    token = raw.strip()
    if len(raw) > _MAX_TOKEN_BYTES or not token:
        raise click.UsageError(f"token file {path}: expected one token of at most 16 KiB")
    if not all(0x21 <= byte <= 0x7E for byte in token):
        raise click.UsageError(f"token file {path}: the token has characters a header cannot hold")
    return token.decode()


def _base_url(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise click.UsageError(f"--url {url!r}: expected http(s)://HOST[:PORT]")
    return parsed


def _refused(status: int, body: ErrorAnswer) -> CommandError:
    kind = body.error or "aggregator_error"
    return CommandError(
        f"the aggregator answered HTTP {status} {kind}: {body.message}",
        kind,
        EXIT_USAGE if status in _USAGE_STATUSES else EXIT_FAILED,
    )


class Aggregator:
    """The aggregator at ``url``, called with the bearer token from ``token_file``."""

    def __init__(self, url: str, token_file: Path) -> None:
        self.url = str(_base_url(url)).rstrip("/")
        self._headers = {"Authorization": f"Bearer {_read_token(token_file)}"}

    def _unreachable(self, exc: Exception) -> CommandError:
        reason = str(exc) or type(exc).__name__
        return CommandError(f"aggregator at {self.url}: {reason}", "aggregator_unreachable")

    def _decode(self, raw: bytes, answer: TypeAdapter[T]) -> T:
        try:  # a newer aggregator's added fields are dropped, not refused
            return answer.validate_json(raw, extra="ignore")
        except ValidationError as exc:
            first = exc.errors(include_url=False)[:1]
            why = describe_errors(first, root="answer", show_input=False)[0]
            raise CommandError(
                f"aggregator at {self.url}: not a pullcheck aggregator's answer ({why})",
                "aggregator_unreachable",
            ) from None

    @contextmanager
    def _open(
        self, method: str, path: str, params: dict[str, str] | None, timeout: httpx.Timeout
    ) -> Iterator[httpx.Response]:
        try:
            with httpx.stream(
                method,
                f"{self.url}{path}",
                params=params,
                headers=self._headers,
                timeout=timeout,
                trust_env=False,
            ) as reply:
                if reply.status_code >= 400:
                    raw = _bounded(reply.iter_bytes())
                    raise _refused(reply.status_code, self._decode(raw, _ERROR))
                yield reply
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None

    def call(
        self,
        method: str,
        path: str,
        answer: type[M],
        params: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> M:
        """One request; its answer as ``answer`` (an error status raises CommandError)."""
        with self._open(method, path, params, httpx.Timeout(timeout)) as reply:
            return self._decode(_bounded(reply.iter_bytes()), TypeAdapter(answer))

    def lines(
        self, path: str, params: dict[str, str], line: TypeAdapter[T], wait: float
    ) -> Iterator[T]:
        """An ndjson answer, one ``line`` per line as it arrives.

        ``wait`` bounds the silence between two lines (a node may take its whole deadline).
        """
        timeout = httpx.Timeout(10.0, read=wait)
        with self._open("GET", path, params, timeout) as reply:
            for raw in _split_lines(reply.iter_bytes()):
                if raw.strip():
                    yield self._decode(raw, line)


_ERROR: TypeAdapter[ErrorAnswer] = TypeAdapter(ErrorAnswer)


def _bounded(chunks: Iterator[bytes]) -> bytes:
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > _MAX_BODY_BYTES:
            raise CommandError("the aggregator's answer is over 64 MiB", "aggregator_error")
    return bytes(body)


def _split_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    pending = bytearray()
    for chunk in chunks:
        pending += chunk
        while (end := pending.find(b"\n")) >= 0:
            yield bytes(pending[:end])
            del pending[: end + 1]
        if len(pending) > _MAX_BODY_BYTES:
            raise CommandError(
                "a line of the aggregator's answer is over 64 MiB", "aggregator_error"
            )
    if pending:
        yield bytes(pending)
