"""TCP probe: connect to every resolved address of the endpoint (IPv4 and IPv6), one phase each.

Success means at least one address accepted the connection — Go's dialer (containerd) also moves
on to the next address — but every address is tried and reported, so a dead family shows up.
The connected address (first in resolution order) is what the later probes talk to.

Causes: ``connection_refused`` (RST; also "no route to host"/"network unreachable", which are
active rejections that fail just as fast), ``timeout`` (no answer within ``ctx.timeout``),
``dns_failure`` (run alone and the host does not resolve), ``unknown``. When addresses fail
differently, the cause of the first address (in resolution order) is reported.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from typing import Literal

from agent import hostport
from agent.models import Cause, Endpoint, Phase, ProbeResult, TcpEvidence
from agent.probes._addresses import host_key
from agent.probes._classify import classify
from agent.probes._context import ProbeContext
from agent.probes._runner import ProbeRun, run_probe
from agent.probes._streams import close_stream
from agent.timing import ms_since

__all__ = ["probe_tcp"]


async def probe_tcp(endpoint: Endpoint, ctx: ProbeContext) -> ProbeResult:
    """Connect to each address in ``ctx.state.addresses`` (resolving first when needed)."""
    where = hostport.join(endpoint.host, endpoint.port)
    return await run_probe("tcp", where, ctx, lambda run: _connect_all(endpoint, ctx, run))


async def _connect_all(endpoint: Endpoint, ctx: ProbeContext, run: ProbeRun) -> ProbeResult:
    where = run.target
    run.action = f"TCP connect to {where}"
    addresses = await run.addresses(endpoint)
    outcomes = await asyncio.gather(*(_connect(a, endpoint.port, ctx.timeout) for a in addresses))
    connected: str | None = None
    first_failure: tuple[str, Cause, str] | None = None
    for address, (phase, failure) in zip(addresses, outcomes, strict=True):
        run.phases.append(phase)
        if failure is None:
            connected = connected or address
        elif first_failure is None:
            first_failure = (address, *failure)

    if connected is not None:
        ctx.state.connected = connected
        ctx.state.host_addresses[host_key(endpoint.host)] = connected
        return run.ok(_evidence(connected, endpoint.port))

    assert first_failure is not None
    address, cause, reason = first_failure
    tried = ", ".join(addresses)
    if cause == Cause.CONNECTION_REFUSED and reason == "connection refused":
        error = f"TCP connect to {where} ({tried}) refused"
    elif cause == Cause.TIMEOUT:
        error = f"TCP connect to {where} ({tried}) timed out after {ctx.timeout:.3g} s"
    else:
        error = f"TCP connect to {where} ({tried}) failed: {reason}"
    return run.fail(cause, error, _evidence(address, endpoint.port))


async def _connect(
    address: str, port: int, timeout: float
) -> tuple[Phase, tuple[Cause, str] | None]:
    started = time.monotonic()
    name = f"connect {hostport.join(address, port)}"
    writer: asyncio.StreamWriter | None = None
    failure: tuple[Cause, str] | None = None
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(address, port)
    except OSError as exc:  # refused, unreachable, timed out (TimeoutError is an OSError)
        failure = classify(exc)
    duration = ms_since(started)
    await close_stream(writer)
    detail = f"{_family(address)}: " + ("connected" if failure is None else failure[1])
    return Phase(name=name, ok=failure is None, duration_ms=duration, detail=detail), failure


def _family(address: str) -> Literal["ipv4", "ipv6"]:
    return "ipv6" if isinstance(ipaddress.ip_address(address), ipaddress.IPv6Address) else "ipv4"


def _evidence(address: str, port: int) -> TcpEvidence:
    return TcpEvidence(address=address, port=port, family=_family(address))
