"""Talking to the aggregator from the CLI: ``--url``, ``--token-file`` and one bounded client.

Every failure becomes a :class:`~agent.cli._options.CommandError` that ``main()`` prints (one JSON
object with ``--json``): the aggregator not answering is ``aggregator_unreachable`` (exit 1), an
error status is the aggregator's own ``error`` kind (exit 2 for a bad request or an unknown name,
else 1). The token is sent, never printed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import httpx

from agent.cli._options import EXIT_FAILED, EXIT_USAGE, CommandError

__all__ = ["Aggregator", "token_option", "url_option"]

_MAX_TOKEN_BYTES = 16 * 1024
_MAX_BODY_BYTES = 64 * 1024 * 1024  # one answer (every node's full result) or one ndjson line
_USAGE_STATUSES = frozenset({400, 404, 422})  # the request was wrong: a usage error

url_option = click.option(
    "--url",
    envvar="PULLCHECK_AGGREGATOR_URL",
    default="http://127.0.0.1:8480",
    show_default=True,
    help="The aggregator [env PULLCHECK_AGGREGATOR_URL].",
)
token_option = click.option(
    "--token-file",
    envvar="PULLCHECK_TOKEN_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("/var/run/secrets/pullcheck/token"),
    show_default=True,
    help="File holding the bearer token [env PULLCHECK_TOKEN_FILE].",
)


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


def _refused(status: int, body: dict[str, Any]) -> CommandError:
    kind = body.get("error")
    kind = kind if isinstance(kind, str) and kind else "aggregator_error"
    message = str(body.get("message") or "")
    return CommandError(
        f"the aggregator answered HTTP {status} {kind}: {message}",
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

    def _decode(self, raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw)
        except ValueError:
            raise CommandError(
                f"aggregator at {self.url}: not a JSON answer", "aggregator_unreachable"
            ) from None
        if not isinstance(body, dict):
            raise CommandError(
                f"aggregator at {self.url}: not a JSON object", "aggregator_unreachable"
            )
        return body

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
                    raise _refused(reply.status_code, self._decode(_bounded(reply.iter_bytes())))
                yield reply
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None

    def call(
        self, method: str, path: str, params: dict[str, str] | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        """One request; the JSON object answered (an error status raises CommandError)."""
        with self._open(method, path, params, httpx.Timeout(timeout)) as reply:
            return self._decode(_bounded(reply.iter_bytes()))

    def lines(self, path: str, params: dict[str, str], wait: float) -> Iterator[dict[str, Any]]:
        """An ndjson answer, one JSON object per line as it arrives.

        ``wait`` bounds the silence between two lines (a node may take its whole deadline).
        """
        timeout = httpx.Timeout(10.0, read=wait)
        with self._open("GET", path, params, timeout) as reply:
            for line in _split_lines(reply.iter_bytes()):
                if line.strip():
                    yield self._decode(line)


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
