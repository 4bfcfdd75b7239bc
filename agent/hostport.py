"""``host:port`` text: split and join, with brackets for IPv6 literals.

:func:`split` is the strict form pullcheck uses for what it parses itself (hosts.toml servers,
listen addresses); :func:`split_go` is Go's ``net.SplitHostPort`` exactly, for the places where
pullcheck must judge text the way kubelet or containerd (Go programs) do.
"""

from __future__ import annotations

from agent.errors import InvalidInput

__all__ = ["InvalidHostPort", "bracket", "join", "split", "split_go"]

_MAX_PORT = 65535


class InvalidHostPort(InvalidInput, ValueError):
    """Text that is not ``host[:port]``; the message quotes it and names the fault."""


def split(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` (or, with ``default_port``, ``host``, ``[v6]`` or a bare IPv6
    literal) as (host without brackets, port). The port must be 1-65535; raises
    :class:`InvalidHostPort`."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise InvalidHostPort(f"invalid host {text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise InvalidHostPort(f"invalid host {text!r}")
        port = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:  # no port, or a bare IPv6 literal (which cannot carry one)
        host, port = text, None
    if port is None:
        if default_port is None:
            raise InvalidHostPort(f"missing port in {text!r}")
        return host, default_port
    if not port.isdigit() or not 0 < int(port) <= _MAX_PORT:
        raise InvalidHostPort(f"invalid port in {text!r}")
    return host, int(port)


def split_go(hostport: str) -> tuple[str, str] | None:
    """Go's ``net.SplitHostPort``: (host, port as written), ``None`` where Go returns an error.

    Kept apart from :func:`split` because kubelet's keyring and containerd's loopback rule
    depend on Go's exact quirks ("host:" has an empty port, ``[::1]`` has none, no range check).
    """
    colon = hostport.rfind(":")
    if colon < 0:
        return None
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0 or close + 1 != colon:
            return None
        host, after_open, after_close = hostport[1:close], 1, close + 1
    else:
        host, after_open, after_close = hostport[:colon], 0, 0
        if ":" in host:
            return None
    if "[" in hostport[after_open:] or "]" in hostport[after_close:]:
        return None
    return host, hostport[colon + 1 :]


def bracket(host: str, *, in_url: bool = False) -> str:
    """``host``, an IPv6 literal in brackets; ``in_url`` percent-encodes a zone (RFC 6874)."""
    if ":" not in host:
        return host
    return f"[{host.replace('%', '%25')}]" if in_url else f"[{host}]"


def join(host: str, port: int | str, *, in_url: bool = False) -> str:
    """``host:port`` with an IPv6 literal bracketed (see :func:`bracket` for ``in_url``)."""
    return f"{bracket(host, in_url=in_url)}:{port}"
