"""DNS probe: resolve the endpoint's host the way containerd's Go resolver does on the node.

Order: IP literal → hosts file (``ctx.hosts_file``) → the nameservers of ``ctx.resolv_conf``
(search list and ``ndots`` applied, A and AAAA queried separately and concurrently). Queries go
only to the nameservers in that file, never through the system resolver. Each query waits at most
resolv.conf's ``timeout`` (capped by ``ctx.timeout``), is retried ``attempts`` times over the
nameservers (SERVFAIL/REFUSED/timeouts move on to the next one), and the whole lookup is bounded
by ``ctx.timeout``.

Causes: ``dns_failure`` (NXDOMAIN, no records, SERVFAIL, timeout, no nameservers, unreadable
resolv.conf); anything unexpected is classified by the runner.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Literal

from agent import _imports  # noqa: F401 - first: no DNS-over-HTTPS stack, no httpx CLI

# isort: split
import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from agent.models import Cause, DnsAnswer, DnsEvidence, Endpoint, Phase, ProbeResult
from agent.probes._addresses import host_key, is_ip_literal
from agent.probes._context import ProbeContext
from agent.probes._resolvconf import (
    ResolvConf,
    hosts_file_lookup,
    parse_resolv_conf,
    search_names,
)
from agent.probes._runner import ProbeRun, run_probe
from agent.timing import ms_since

__all__ = ["probe_dns"]

RdType = Literal["A", "AAAA"]
# how bad an outcome is, for choosing which one to report when nothing resolved
_SEVERITY = {"TIMEOUT": 4, "ERROR": 3, "NXDOMAIN": 1, "NOERROR": 0}


@dataclass
class _Outcome:
    name: str
    rdtype: RdType
    rcode: str = ""  # NOERROR, NXDOMAIN, SERVFAIL, REFUSED, ..., TIMEOUT, ERROR
    server: str = ""
    addresses: list[str] = field(default_factory=list)
    duration_ms: float = 0.0
    detail: str = ""  # human text for failures

    @property
    def severity(self) -> int:
        return _SEVERITY.get(self.rcode, 2)  # other rcodes (SERVFAIL, REFUSED, …) rank 2


async def probe_dns(endpoint: Endpoint, ctx: ProbeContext) -> ProbeResult:
    """Resolve ``endpoint.host``; on success ``ctx.state.addresses`` holds the addresses."""
    host = endpoint.host
    result = await run_probe("dns", host, ctx, lambda run: _resolve(host, ctx, run))
    addresses = result.evidence.addresses if isinstance(result.evidence, DnsEvidence) else []
    if result.success:
        ctx.state.addresses = list(addresses)
        ctx.state.dns_error = None
        if addresses:
            ctx.state.host_addresses.setdefault(host_key(host), addresses[0])
    else:
        ctx.state.addresses = []
        ctx.state.dns_error = result
    return result


async def _resolve(host: str, ctx: ProbeContext, run: ProbeRun) -> ProbeResult:
    run.action = f"lookup {host}"
    evidence = run.evidence = DnsEvidence(host=host, resolv_conf=ctx.resolv_conf)
    started = time.monotonic()
    if is_ip_literal(host):
        evidence.source = "literal"
        evidence.addresses = [host]
        run.phase("literal", True, started, host)
        return run.ok(evidence)

    found = hosts_file_lookup(ctx.hosts_file, host)
    run.phase(
        "hosts-file", True, started, ", ".join(found) if found else f"not in {ctx.hosts_file}"
    )
    if found:
        evidence.source = "hosts-file"
        evidence.addresses = found
        return run.ok(evidence)

    started = time.monotonic()
    conf = parse_resolv_conf(ctx.resolv_conf)
    evidence.nameservers = list(conf.nameservers)
    if conf.error:
        run.phase("resolv.conf", False, started, conf.error)
        return run.fail(Cause.DNS_FAILURE, f"lookup {host}: {conf.error}", evidence)
    if not conf.nameservers:
        message = (
            f"no nameservers in {ctx.resolv_conf} (containerd's Go resolver would then try "
            "127.0.0.1:53 and [::1]:53)"
        )
        run.phase("resolv.conf", False, started, message)
        return run.fail(Cause.DNS_FAILURE, f"lookup {host}: {message}", evidence)

    deadline = time.monotonic() + ctx.timeout
    outcomes: list[_Outcome] = []
    for name in search_names(host, conf):
        pair = await asyncio.gather(
            _query(name, "A", conf, ctx, deadline), _query(name, "AAAA", conf, ctx, deadline)
        )
        for outcome in pair:
            outcomes.append(outcome)
            evidence.answers.append(
                DnsAnswer(
                    rdtype=outcome.rdtype,
                    name=outcome.name,
                    addresses=outcome.addresses,
                    rcode=outcome.rcode,
                    server=outcome.server,
                    duration_ms=outcome.duration_ms,
                )
            )
            run.phases.append(_phase(outcome))
        addresses = [a for outcome in pair for a in outcome.addresses]
        if addresses:
            evidence.addresses = list(dict.fromkeys(addresses))
            return run.ok(evidence)
        if time.monotonic() >= deadline:
            break
    return run.fail(Cause.DNS_FAILURE, f"lookup {host}: {_failure_text(outcomes)}", evidence)


def _phase(outcome: _Outcome) -> Phase:
    ok = outcome.rcode == "NOERROR" and bool(outcome.addresses)
    if outcome.addresses:
        detail = f"{outcome.rcode} from {outcome.server}: {', '.join(outcome.addresses)}"
    elif outcome.detail:
        detail = outcome.detail
    else:
        detail = f"{outcome.rcode} from {outcome.server}"
    return Phase(
        name=f"{outcome.rdtype} {outcome.name}",
        ok=ok,
        duration_ms=outcome.duration_ms,
        detail=detail,
    )


def _failure_text(outcomes: list[_Outcome]) -> str:
    if not outcomes:
        return "no query could be sent"
    worst = max(outcomes, key=lambda o: o.severity)
    if worst.rcode == "NOERROR":
        servers = sorted({o.server for o in outcomes if o.server})
        return f"no A or AAAA records (NOERROR from {', '.join(servers)})"
    return worst.detail or f"{worst.rcode} from {worst.server}"


async def _query(
    name: str, rdtype: RdType, conf: ResolvConf, ctx: ProbeContext, deadline: float
) -> _Outcome:
    """Ask the nameservers in order (``attempts`` rounds) until one gives a definitive answer."""
    started = time.monotonic()
    per_query = min(conf.timeout, ctx.timeout)
    last: _Outcome | None = None
    request = dns.message.make_query(name, dns.rdatatype.from_text(rdtype))
    for _ in range(conf.attempts):
        for server in conf.nameservers:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            wait = min(per_query, remaining)
            outcome = await _ask(request, name, rdtype, server, wait, ctx.dns_port)
            if outcome.rcode in ("NOERROR", "NXDOMAIN"):
                outcome.duration_ms = ms_since(started)
                return outcome
            last = outcome
    if last is None:
        last = _Outcome(
            name,
            rdtype,
            "TIMEOUT",
            conf.nameservers[0],
            detail=f"no time left to query {conf.nameservers[0]}",
        )
    last.duration_ms = ms_since(started)
    return last


async def _ask(
    request: dns.message.Message, name: str, rdtype: RdType, server: str, wait: float, port: int
) -> _Outcome:
    try:
        response = await dns.asyncquery.udp(
            request, server, timeout=wait, port=port, ignore_unexpected=True
        )
        if response.flags & dns.flags.TC:
            response = await dns.asyncquery.tcp(request, server, timeout=wait, port=port)
    except dns.exception.Timeout:
        return _Outcome(
            name, rdtype, "TIMEOUT", server, detail=f"no answer from {server} within {wait:.1f} s"
        )
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        return _Outcome(name, rdtype, "ERROR", server, detail=f"query to {server} failed: {reason}")
    except dns.exception.DNSException as exc:
        return _Outcome(name, rdtype, "ERROR", server, detail=f"bad response from {server}: {exc}")
    rcode = dns.rcode.to_text(response.rcode())
    want = dns.rdatatype.from_text(rdtype)
    addresses = [
        str(rdata.address) for rrset in response.answer if rrset.rdtype == want for rdata in rrset
    ]
    outcome = _Outcome(name, rdtype, rcode, server, addresses)
    if rcode == "NXDOMAIN":
        outcome.detail = f"NXDOMAIN from {server}"
    elif rcode == "SERVFAIL":
        outcome.detail = f"SERVFAIL from {server} (server misbehaving)"
    elif rcode != "NOERROR":
        outcome.detail = f"{rcode} from {server}"
    return outcome
