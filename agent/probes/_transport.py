"""The probes' HTTP client: stock httpx transports that connect only to resolved addresses.

Name resolution is the DNS probe's job only. Each request goes to the address the chain resolved
for its host (``EndpointState.host_addresses``): the URL handed to httpx's own transport names
that address, while the ``Host`` header (set from the name when the request was built) and TLS
SNI and certificate verification (httpcore's ``sni_hostname`` extension) use the name, exactly as
containerd sends them. A name missing from the map fails the request
(:class:`UnresolvedHostError`) instead of falling back to the system resolver.

Why a transport per host name: httpcore's pool reuses a connection by (scheme, address, port),
so two names on one address would otherwise share a connection made with the other's SNI.
"""

from __future__ import annotations

import contextlib
import functools
import ssl
from collections.abc import AsyncIterator, Callable, Mapping

from agent import _imports  # noqa: F401 - first: no httpx CLI, no DNS-over-HTTPS stack

# isort: split
import httpx

from agent.errors import PullcheckError
from agent.models import Endpoint
from agent.probes._addresses import host_key, is_ip_literal
from agent.probes._context import ProbeContext
from agent.probes._tls_context import build_ssl_context

__all__ = ["MAX_BODY", "UnresolvedHostError", "open_client", "read_capped"]

MAX_BODY = 4 * 1024 * 1024  # bytes of a body read: error codes, manifests (registries cap 4 MiB)
_CONNECTIONS_PER_HOST = 4


class UnresolvedHostError(PullcheckError, OSError):
    """The HTTP client was asked for a host the DNS probe has not resolved."""


class _ResolvedTransport(httpx.AsyncBaseTransport):
    """Routes each request to its host's resolved address through a stock
    :class:`httpx.AsyncHTTPTransport` (one per scheme and host name, see the module docstring).

    ``tls`` gives the TLS configuration; it is asked for on the first https request only: a
    plain-HTTP registry needs no trust store (loading the system's costs ~20 ms of CPU).
    """

    def __init__(self, tls: Callable[[], ssl.SSLContext], addresses: Mapping[str, str]) -> None:
        self._tls = tls
        self._addresses = addresses
        self._transports: dict[tuple[str, str], httpx.AsyncHTTPTransport] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        name = request.url.host
        if is_ip_literal(name):
            return await self._transport(request.url.scheme, name).handle_async_request(request)
        address = self._addresses.get(host_key(name))
        if address is None:
            raise UnresolvedHostError(
                f"{name} was not resolved by the DNS probe (the system resolver is never used)"
            )
        routed = httpx.Request(
            request.method,
            request.url.copy_with(host=address),
            headers=request.headers,  # Host: the name, as built from the original URL
            stream=request.stream,
            extensions={**request.extensions, "sni_hostname": name},
        )
        return await self._transport(request.url.scheme, name).handle_async_request(routed)

    def _transport(self, scheme: str, name: str) -> httpx.AsyncHTTPTransport:
        key = (scheme, host_key(name))
        transport = self._transports.get(key)
        if transport is None:
            transport = httpx.AsyncHTTPTransport(
                verify=self._tls() if scheme == "https" else False,  # False: no TLS, no store
                trust_env=False,
                limits=httpx.Limits(max_connections=_CONNECTIONS_PER_HOST),
                retries=0,
            )
            self._transports[key] = transport
        return transport

    async def aclose(self) -> None:
        for transport in self._transports.values():
            await transport.aclose()
        self._transports.clear()


@contextlib.asynccontextmanager
async def open_client(endpoint: Endpoint, ctx: ProbeContext) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for ``endpoint`` (and its token realm) that connects only to resolved
    addresses in ``ctx.state.host_addresses``. Raises
    :class:`~agent.probes._tls_context.TlsConfigError` for bad CA or client certificate files."""
    tls = functools.partial(build_ssl_context, endpoint, ctx)
    if endpoint.scheme == "https" or ctx.cafile or endpoint.ca_files or endpoint.client_certs:
        tls()  # a CA or certificate file that does not load fails here, as it fails containerd
    transport = _ResolvedTransport(tls, ctx.state.host_addresses)
    async with httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(ctx.timeout),
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": ctx.user_agent},
    ) as client:
        yield client


async def read_capped(response: httpx.Response, limit: int = MAX_BODY) -> bytes:
    """Up to ``limit`` bytes of a streamed response body; closes the response."""
    body = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) >= limit:
                break
    finally:
        await response.aclose()
    return bytes(body[:limit])
