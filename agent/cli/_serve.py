"""Running an ASGI app with uvicorn for ``pullcheck agent`` / ``pullcheck aggregator``.

The HTTP/1.1 protocol is h11 with a bounded request head. With uvicorn's default, httptools, a
header section of any size is buffered before the app sees it (only a URL over 64 KiB is refused,
by the URL parser's 16-bit offsets); h11 refuses a head still incomplete past
``h11_max_incomplete_event_size`` (uvicorn answers a plain 400 and logs no request line). A head
that arrives whole in one read (at most the transport's 256 KiB) is parsed and reaches the request
guard, which answers 414/431. The bound is the guard's limits plus the framing of the request line
and of :data:`~agent.service.guard.MAX_HEADERS` headers, so no head the guard would accept is cut.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Final, Literal

import click

from agent import _imports  # noqa: F401 - first: keeps modules the servers never use out

# isort: split
import uvicorn
from fastapi import FastAPI

from agent import hostport
from agent.service.auth import TokenFileError
from agent.service.config import ConfigError, Limits, Settings, load_settings
from agent.service.guard import MAX_HEADERS
from agent.service.logs import configure_logging, uvicorn_log_config

# request line ("METHOD ", " HTTP/1.1\r\n"), each header's ": " and CRLF, the final CRLF
_HEAD_FRAMING: Final = 64 + 4 * MAX_HEADERS + 2

EventLoop = Literal["auto", "asyncio"]


def load(config_file: Path | None) -> Settings:
    try:
        return load_settings(config_file)
    except ConfigError as exc:
        raise click.UsageError(f"configuration: {exc}") from None


def split_listen(listen: str) -> tuple[str, int]:
    try:
        host, port = hostport.split(listen)
    except ValueError:
        raise click.UsageError(f"listen address {listen!r}: expected HOST:PORT") from None
    return host or "0.0.0.0", port


def max_request_head(limits: Limits) -> int:
    """Bytes of request line and headers the protocol layer buffers at most."""
    return limits.max_url_bytes + limits.max_header_bytes + _HEAD_FRAMING


def check_tls(tls: tuple[str, str] | None) -> None:
    """A usage error naming the files when the certificate and key cannot serve HTTPS."""
    if tls is None:
        return
    cert, key = tls
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except OSError as exc:
        reason = exc.strerror or getattr(exc, "reason", None) or type(exc).__name__
        raise click.UsageError(f"TLS certificate {cert} / key {key}: {reason}") from None


def uvicorn_config(
    app: FastAPI,
    host: str,
    port: int,
    log_level: str,
    limits: Limits,
    tls: tuple[str, str] | None = None,
    loop: EventLoop = "auto",
) -> uvicorn.Config:
    """How both servers run: JSON logs, no proxy headers, h11 with a bounded request head;
    HTTPS when ``tls`` gives a certificate (chain) file and its key file (PEM). ``loop``:
    uvicorn's choice (uvloop when installed) or the standard library's asyncio loop (the
    agent's: 2.4 MiB less resident, no libuv worker threads, as many requests per second with
    h11 — docs/benchmarks.md)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=uvicorn_log_config(log_level),
        proxy_headers=False,
        server_header=False,
        date_header=False,
        http="h11",
        ws="none",  # no WebSocket routes: the websockets library stays unloaded
        loop=loop,
        h11_max_incomplete_event_size=max_request_head(limits),
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
    )


def serve(
    build: Callable[[], FastAPI],
    listen: str,
    log_level: str,
    limits: Limits,
    *,
    tls: tuple[str, str] | None = None,
    loop: EventLoop = "auto",
) -> None:
    """Serve the app built by ``build()`` until SIGTERM/SIGINT (over HTTPS with ``tls``)."""
    configure_logging(log_level)
    host, port = split_listen(listen)
    check_tls(tls)
    try:
        app = build()
    except (TokenFileError, ConfigError) as exc:
        raise click.UsageError(str(exc)) from None
    uvicorn.Server(uvicorn_config(app, host, port, log_level, limits, tls, loop)).run()
