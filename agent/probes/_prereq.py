"""What a probe needs from the earlier steps of the chain, computed on demand when run alone."""

from __future__ import annotations

from agent.models import Endpoint
from agent.probes._context import ProbeContext
from agent.probes.dns import probe_dns

__all__ = ["host_key", "target_address"]


def host_key(host: str) -> str:
    return host.lower().rstrip(".")


async def target_address(endpoint: Endpoint, ctx: ProbeContext) -> str | tuple[str, str]:
    """The address to talk to: the one the tcp probe connected to, else the first resolved one
    (running the dns probe when nothing was resolved yet).

    Returns the address, or ``("dns", error)`` when resolution failed.
    """
    state = ctx.state
    if state.connected:
        return state.connected
    if state.addresses is None:
        await probe_dns(endpoint, ctx)
    if not state.addresses:
        error = (
            state.dns_error.error if state.dns_error else f"lookup {endpoint.host}: no addresses"
        )
        return ("dns", error)
    address = state.addresses[0]
    state.host_addresses.setdefault(host_key(endpoint.host), address)
    return address
