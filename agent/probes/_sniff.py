"""Protocol sniffers: does a server speak plain HTTP, or TLS, whatever the endpoint says?"""

from __future__ import annotations

import asyncio
import ssl
import time

from agent.models import Endpoint
from agent.probes._addresses import is_ip_literal
from agent.probes._runner import ProbeRun
from agent.probes._streams import close_stream

__all__ = ["SNIFF_TIMEOUT", "plain_http_check", "speaks_plain_http", "speaks_tls", "tls_check"]

# seconds a sniff waits at most: a server that speaks the protocol answers at once
SNIFF_TIMEOUT = 3.0
_SNIFF_BYTES = 2048


async def plain_http_check(
    endpoint: Endpoint, address: str, run: ProbeRun, limit: float = SNIFF_TIMEOUT
) -> bool:
    """:func:`speaks_plain_http` as a phase of ``run`` (``plain-http check``)."""
    started = time.monotonic()
    timeout = min(run.ctx.timeout, limit)
    plain = await speaks_plain_http(address, endpoint.port, endpoint.host, timeout)
    detail = "server answers plain HTTP" if plain else "no plain-HTTP answer"
    run.phase("plain-http check", True, started, detail)
    return plain


async def tls_check(
    endpoint: Endpoint, address: str, run: ProbeRun, limit: float = SNIFF_TIMEOUT
) -> bool:
    """:func:`speaks_tls` as a phase of ``run`` (``tls check``)."""
    started = time.monotonic()
    tls = await speaks_tls(address, endpoint.port, endpoint.host, min(run.ctx.timeout, limit))
    run.phase(
        "tls check", True, started, "server speaks TLS" if tls else "server does not speak TLS"
    )
    return tls


async def speaks_plain_http(address: str, port: int, host: str, timeout: float) -> bool:
    """Does the server answer a plain ``GET /v2/`` with an HTTP response (and not an
    "HTTP request to an HTTPS server" complaint)?"""
    writer: asyncio.StreamWriter | None = None
    data = b""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address, port)
            writer.write(f"GET /v2/ HTTP/1.0\r\nHost: {host}\r\n\r\n".encode("ascii", "replace"))
            await writer.drain()
            while len(data) < _SNIFF_BYTES:
                chunk = await reader.read(_SNIFF_BYTES)
                if not chunk:
                    break
                data += chunk
    except (OSError, TimeoutError):
        return False
    finally:
        await close_stream(writer)
    if not data.startswith(b"HTTP/"):
        return False
    return b"HTTPS" not in data.upper()


async def speaks_tls(address: str, port: int, host: str, timeout: float) -> bool:
    """Does the server complete a TLS handshake (any certificate accepted)?"""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(
                address, port, ssl=context, server_hostname=None if is_ip_literal(host) else host
            )
    except (OSError, TimeoutError, ssl.SSLError):
        return False
    finally:
        await close_stream(writer)
    return True
