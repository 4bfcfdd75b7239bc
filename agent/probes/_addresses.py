"""Names, addresses and URLs of an endpoint, as the probes write and compare them."""

from __future__ import annotations

import ipaddress

from agent import hostport
from agent.models import Endpoint

__all__ = ["host_key", "is_ip_literal", "url_for"]


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def host_key(host: str) -> str:
    """A host name as the chain's address map keys it: lower case, no trailing dot."""
    return host.lower().rstrip(".")


def url_for(endpoint: Endpoint, path: str, query: str = "") -> str:
    """An absolute URL on ``endpoint``; the port is omitted when it is the scheme's default."""
    default = 443 if endpoint.scheme == "https" else 80
    netloc = (
        hostport.bracket(endpoint.host)
        if endpoint.port == default
        else hostport.join(endpoint.host, endpoint.port)
    )
    return f"{endpoint.scheme}://{netloc}{path}" + (f"?{query}" if query else "")
