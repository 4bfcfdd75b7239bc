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
import contextlib
import ipaddress
import time

from agent.models import Cause, Endpoint, Phase, ProbeResult, TcpEvidence
from agent.probes._context import ProbeContext
from agent.probes._net import classify, format_host_port
from agent.probes._prereq import host_key
from agent.probes._result import ResultBuilder
from agent.probes.dns import probe_dns

__all__ = ["probe_tcp"]


async def probe_tcp(endpoint: Endpoint, ctx: ProbeContext) -> ProbeResult:
    """Connect to each address in ``ctx.state.addresses`` (resolving first when needed)."""
    where = format_host_port(endpoint.host, endpoint.port)
    result = ResultBuilder("tcp", where, ctx)
    state = ctx.state
    if state.addresses is None:
        await probe_dns(endpoint, ctx)
    if not state.addresses:
        error = (
            state.dns_error.error if state.dns_error else f"lookup {endpoint.host}: no addresses"
        )
        return result.fail(Cause.DNS_FAILURE, error)

    addresses = list(state.addresses)
    outcomes = await asyncio.gather(*(_connect(a, endpoint.port, ctx.timeout) for a in addresses))
    connected: str | None = None
    first_failure: tuple[str, Cause, str] | None = None
    for address, (phase, failure) in zip(addresses, outcomes, strict=True):
        result.phases.append(phase)
        if failure is None:
            connected = connected or address
        elif first_failure is None:
            first_failure = (address, *failure)

    if connected is not None:
        state.connected = connected
        state.host_addresses[host_key(endpoint.host)] = connected
        return result.ok(_evidence(connected, endpoint.port))

    assert first_failure is not None
    address, cause, reason = first_failure
    tried = ", ".join(addresses)
    if cause == Cause.CONNECTION_REFUSED and reason == "connection refused":
        error = f"TCP connect to {where} ({tried}) refused"
    elif cause == Cause.TIMEOUT:
        error = f"TCP connect to {where} ({tried}) timed out after {ctx.timeout:.3g} s"
    else:
        error = f"TCP connect to {where} ({tried}) failed: {reason}"
    return result.fail(cause, error, _evidence(address, endpoint.port))


async def _connect(
    address: str, port: int, timeout: float
) -> tuple[Phase, tuple[Cause, str] | None]:
    started = time.monotonic()
    name = f"connect {format_host_port(address, port)}"
    writer: asyncio.StreamWriter | None = None
    failure: tuple[Cause, str] | None = None
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(address, port)
    except Exception as exc:  # classified below; a probe never raises
        failure = classify(exc)
    duration = round((time.monotonic() - started) * 1000.0, 3)
    if writer is not None:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
    detail = f"{_family(address)}: " + ("connected" if failure is None else failure[1])
    return Phase(name=name, ok=failure is None, duration_ms=duration, detail=detail), failure


def _family(address: str) -> str:
    return "ipv6" if isinstance(ipaddress.ip_address(address), ipaddress.IPv6Address) else "ipv4"


def _evidence(address: str, port: int) -> TcpEvidence:
    return TcpEvidence(address=address, port=port, family="ipv6" if ":" in address else "ipv4")
