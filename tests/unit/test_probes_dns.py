"""DNS probe against a real fake DNS server on 127.0.0.1 (UDP, dnspython messages)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.models import Cause, DnsEvidence
from agent.probes import probe_dns
from tests.unit.test_probes_support import (
    DnsServer,
    DnsZone,
    ResolverSpy,
    endpoint,
    forbid_system_resolver,  # noqa: F401  (fixture)
    make_ctx,
    start_dns,
)

pytestmark = pytest.mark.usefixtures("forbid_system_resolver")


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    zone = DnsZone(
        records={
            "dual.pullcheck.test.": {"A": ["127.0.0.1"], "AAAA": ["::1"]},
            "v4.pullcheck.test.": {"A": ["127.0.0.2", "127.0.0.3"]},
            "nodata.pullcheck.test.": {},
            "short.corp.test.": {"A": ["127.0.0.4"]},
        },
        servfail={"broken.pullcheck.test."},
        silent={"slow.pullcheck.test."},
    )
    server, stop = start_dns(zone)
    yield server
    stop()


def _evidence(result: object) -> DnsEvidence:
    evidence = getattr(result, "evidence", None)
    assert isinstance(evidence, DnsEvidence)
    return evidence


async def test_a_and_aaaa_queried_separately(tmp_path: Path, dns_server: DnsServer) -> None:
    ctx = make_ctx(tmp_path, dns=dns_server)
    result = await probe_dns(endpoint("dual.pullcheck.test", 5000), ctx)
    assert result.success and result.cause is None and result.probe == "dns"
    ev = _evidence(result)
    assert ev.source == "dns" and ev.nameservers == ["127.0.0.1"]
    assert ev.addresses == ["127.0.0.1", "::1"]
    assert {(a.rdtype, tuple(a.addresses), a.rcode, a.server) for a in ev.answers} == {
        ("A", ("127.0.0.1",), "NOERROR", "127.0.0.1"),
        ("AAAA", ("::1",), "NOERROR", "127.0.0.1"),
    }
    assert all(a.name == "dual.pullcheck.test." for a in ev.answers)
    assert [p.name for p in result.phases] == [
        "hosts-file",
        "A dual.pullcheck.test.",
        "AAAA dual.pullcheck.test.",
    ]
    assert ctx.state.addresses == ["127.0.0.1", "::1"]


async def test_v4_only_is_success(tmp_path: Path, dns_server: DnsServer) -> None:
    ctx = make_ctx(tmp_path, dns=dns_server)
    result = await probe_dns(endpoint("v4.pullcheck.test", 80), ctx)
    assert result.success
    ev = _evidence(result)
    assert sorted(ev.addresses) == ["127.0.0.2", "127.0.0.3"]  # rrset order is not kept
    aaaa = next(a for a in ev.answers if a.rdtype == "AAAA")
    assert aaaa.rcode == "NOERROR" and aaaa.addresses == []


async def test_nxdomain_names_the_server(tmp_path: Path, dns_server: DnsServer) -> None:
    ctx = make_ctx(tmp_path, dns=dns_server)
    result = await probe_dns(endpoint("nxdomain.pullcheck.test", 80), ctx)
    assert not result.success and result.cause == Cause.DNS_FAILURE
    assert result.error == "lookup nxdomain.pullcheck.test: NXDOMAIN from 127.0.0.1"
    assert {a.rcode for a in _evidence(result).answers} == {"NXDOMAIN"}
    assert ctx.state.addresses == [] and ctx.state.dns_error is result


async def test_nodata(tmp_path: Path, dns_server: DnsServer) -> None:
    result = await probe_dns(
        endpoint("nodata.pullcheck.test", 80), make_ctx(tmp_path, dns=dns_server)
    )
    assert result.cause == Cause.DNS_FAILURE
    assert "no A or AAAA records (NOERROR from 127.0.0.1)" in result.error


async def test_servfail(tmp_path: Path, dns_server: DnsServer) -> None:
    result = await probe_dns(
        endpoint("broken.pullcheck.test", 80), make_ctx(tmp_path, dns=dns_server)
    )
    assert result.cause == Cause.DNS_FAILURE
    assert (
        result.error == "lookup broken.pullcheck.test: SERVFAIL from 127.0.0.1 (server misbehaving)"
    )


async def test_timeout_capped_by_ctx(tmp_path: Path, dns_server: DnsServer) -> None:
    # resolv.conf says 5 s x 2 attempts; the probe's 0.5 s budget wins
    ctx = make_ctx(tmp_path, dns=dns_server, resolv_body="nameserver 127.0.0.1\n", timeout=0.5)
    result = await probe_dns(endpoint("slow.pullcheck.test", 80), ctx)
    assert result.cause == Cause.DNS_FAILURE
    assert result.error == "lookup slow.pullcheck.test: no answer from 127.0.0.1 within 0.5 s"
    assert {a.rcode for a in _evidence(result).answers} == {"TIMEOUT"}


async def test_resolv_timeout_option_used_when_smaller(
    tmp_path: Path, dns_server: DnsServer
) -> None:
    body = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
    ctx = make_ctx(tmp_path, dns=dns_server, resolv_body=body, timeout=10)
    result = await probe_dns(endpoint("slow.pullcheck.test", 80), ctx)
    assert "within 1.0 s" in result.error


async def test_search_list(tmp_path: Path, dns_server: DnsServer) -> None:
    body = "nameserver 127.0.0.1\nsearch corp.test\noptions timeout:1 attempts:1\n"
    ctx = make_ctx(tmp_path, dns=dns_server, resolv_body=body)
    result = await probe_dns(endpoint("short", 80), ctx)
    assert result.success and _evidence(result).addresses == ["127.0.0.4"]
    assert _evidence(result).answers[0].name == "short.corp.test."


async def test_hosts_file_first(tmp_path: Path, dns_server: DnsServer) -> None:
    ctx = make_ctx(tmp_path, dns=dns_server, hosts={"dual.pullcheck.test": "127.0.0.9"})
    before = len(dns_server.zone.queries)
    result = await probe_dns(endpoint("dual.pullcheck.test", 80), ctx)
    ev = _evidence(result)
    assert result.success and ev.source == "hosts-file" and ev.addresses == ["127.0.0.9"]
    assert len(dns_server.zone.queries) == before  # DNS not asked


async def test_ip_literal(tmp_path: Path) -> None:
    result = await probe_dns(endpoint("::1", 5000), make_ctx(tmp_path))
    ev = _evidence(result)
    assert result.success and ev.source == "literal" and ev.addresses == ["::1"]


async def test_no_nameservers(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, resolv_body="search x.test\n")
    result = await probe_dns(endpoint("a.pullcheck.test", 80), ctx)
    assert result.cause == Cause.DNS_FAILURE
    assert "no nameservers in" in result.error and ctx.resolv_conf in result.error


async def test_missing_resolv_conf(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    ctx.resolv_conf = str(tmp_path / "absent.conf")
    result = await probe_dns(endpoint("a.pullcheck.test", 80), ctx)
    assert result.cause == Cause.DNS_FAILURE and "cannot read" in result.error


async def test_unreachable_nameserver(tmp_path: Path) -> None:
    # nothing listens on the discard port: ICMP port unreachable
    result = await probe_dns(endpoint("a.pullcheck.test", 80), make_ctx(tmp_path))
    assert result.cause == Cause.DNS_FAILURE and "127.0.0.1" in result.error


async def test_system_resolver_never_used(
    tmp_path: Path,
    dns_server: DnsServer,
    forbid_system_resolver: ResolverSpy,  # noqa: F811
) -> None:
    from agent.probes import ProbeContext, probe_endpoint

    ctx = make_ctx(tmp_path, dns=dns_server)
    assert isinstance(ctx, ProbeContext)
    report = await probe_endpoint(endpoint("absent.pullcheck.test", 5000), ctx)
    assert not report.success and report.cause == Cause.DNS_FAILURE
    assert [p.probe for p in report.probes] == ["dns"]
    assert report.summary == "lookup absent.pullcheck.test: NXDOMAIN from 127.0.0.1"
    assert forbid_system_resolver.calls == []
    assert ("absent.pullcheck.test.", "A") in dns_server.zone.queries
