"""A tiny authoritative DNS server on a loopback address (asyncio UDP, dnspython messages).

It answers from an editable zone so a test can change the answers between two lookups: A/AAAA
records, NXDOMAIN for unknown names (with an SOA in the authority section, as CoreDNS sends),
NOERROR with no answer for known names without that type, SERVFAIL or silence on demand. Every
question is recorded as ``(name, type)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import cast

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

_SOA = "ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5"


@dataclass
class DnsZone:
    # absolute lowercase name → rdtype ("A"/"AAAA") → addresses; a name with {} exists (NODATA)
    records: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    servfail: bool = False  # answer every question with SERVFAIL
    silent: bool = False  # answer nothing (the client times out)
    queries: list[tuple[str, str]] = field(default_factory=list)
    ttl: int = 5

    def answer(self, query: dns.message.Message) -> dns.message.Message | None:
        question = query.question[0]
        name = question.name.to_text().lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        if self.silent:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        if name not in self.records:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(
                dns.rrset.from_text("cluster.local.", self.ttl, "IN", "SOA", _SOA)
            )
            return response
        addresses = self.records[name].get(rdtype, [])
        if addresses:
            response.answer.append(
                dns.rrset.from_text_list(question.name, self.ttl, "IN", rdtype, addresses)
            )
        return response


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, zone: DnsZone) -> None:
        self.zone = zone
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # the selector loop's datagram transport does not subclass DatagramTransport on 3.11
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            query = dns.message.from_wire(data)
        except Exception:  # not DNS: ignore like a real server would
            return
        response = self.zone.answer(query)
        if response is not None and self.transport is not None:
            self.transport.sendto(response.to_wire(), addr)


@dataclass
class RunningDns:
    zone: DnsZone
    host: str
    port: int

    def resolv_conf(self, search: str = "", ndots: int = 1) -> str:
        """resolv.conf text naming this server (its port goes to ``dns_port``)."""
        lines = [f"nameserver {self.host}"]
        if search:
            lines.append(f"search {search}")
        lines.append(f"options ndots:{ndots} timeout:1")
        return "\n".join(lines) + "\n"


@asynccontextmanager
async def serve_dns(zone: DnsZone, host: str = "127.0.0.1") -> AsyncIterator[RunningDns]:
    """Serve ``zone`` on ``host`` (loopback only) at an ephemeral UDP port."""
    if not host.startswith("127."):
        raise ValueError("the fake DNS server listens on 127.0.0.0/8 only")
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Protocol(zone), local_addr=(host, 0)
    )
    port = int(transport.get_extra_info("sockname")[1])
    try:
        yield RunningDns(zone=zone, host=host, port=port)
    finally:
        transport.close()
