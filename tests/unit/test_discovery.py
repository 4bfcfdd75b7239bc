"""Agent discovery against real loopback servers: a DNS server (dnspython, asyncio UDP) and a
fake kube-apiserver replaying real EndpointSlice/Status shapes (tests/fakes). Nothing leaves
127.0.0.0/8: the autouse guard fails any system-resolver lookup and any DNS query elsewhere."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.asyncquery
import httpx
import pytest
import yaml

from agent.cluster.discovery import (
    AgentTarget,
    Discovery,
    DiscoveryError,
    DnsDiscovery,
    EndpointSliceDiscovery,
    StaticDiscovery,
    make_discovery,
    parse_static_agent,
)
from agent.service.config import DiscoverySection
from tests.fakes.dns_server import DnsZone, RunningDns, serve_dns
from tests.fakes.kube_api import (
    FakeKubeApi,
    endpoint,
    endpoint_slice,
    make_kube_tls,
    parse_label_selector,
    serve_kube_api,
)

SERVICE = "pullcheck-agent.pullcheck.svc.cluster.local."
TOKEN = "aggregator-token"
AGGREGATOR = "system:serviceaccount:pullcheck:pullcheck-aggregator"


# --- guard: loopback only, never the system resolver ------------------------------------------


def _loopback(host: Any) -> None:
    if isinstance(host, bytes):
        host = host.decode()
    try:
        address = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        raise AssertionError(f"system resolver used for {host!r}") from None
    assert address.is_loopback, f"traffic to {host} (only 127.0.0.0/8 and ::1 allowed)"


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    real_getaddrinfo = socket.getaddrinfo
    real_udp, real_tcp = dns.asyncquery.udp, dns.asyncquery.tcp

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        _loopback(host)
        return real_getaddrinfo(host, *args, **kwargs)

    def by_name(name: Any, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"system resolver used for {name!r}")

    async def udp(query: Any, where: str, *args: Any, **kwargs: Any) -> Any:
        _loopback(where)
        return await real_udp(query, where, *args, **kwargs)

    async def tcp(query: Any, where: str, *args: Any, **kwargs: Any) -> Any:
        _loopback(where)
        return await real_tcp(query, where, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "gethostbyname", by_name)
    monkeypatch.setattr(socket, "gethostbyname_ex", by_name)
    monkeypatch.setattr(dns.asyncquery, "udp", udp)
    monkeypatch.setattr(dns.asyncquery, "tcp", tcp)


# --- AgentTarget and static -------------------------------------------------------------------


def test_target_url_and_label() -> None:
    v4 = AgentTarget("10.0.0.1", 8479)
    v6 = AgentTarget("fd00::1", 8479, node="node-a", scheme="https")
    assert (v4.url, v4.label) == ("http://10.0.0.1:8479", "10.0.0.1:8479")
    assert (v6.url, v6.label) == ("https://[fd00::1]:8479", "node-a")
    assert AgentTarget("::1", 1).label == "[::1]:1"
    assert AgentTarget("fe80::1%eth0", 1).url == "http://[fe80::1%25eth0]:1"


def test_static_entries() -> None:
    section = DiscoverySection(
        mode="static",
        agent_port=9000,
        agent_scheme="https",
        agents=[
            "10.0.0.1:8479",
            " node-b = 10.0.0.2:8479 ",
            "[FD00::0001]:8479",
            "node-d=[fd00::2]",
            "Agent.Example.TEST",
        ],
    )
    discovery = make_discovery(section)
    assert isinstance(discovery, StaticDiscovery)
    assert discovery._static == [
        AgentTarget("10.0.0.1", 8479, None, "https"),
        AgentTarget("10.0.0.2", 8479, "node-b", "https"),
        AgentTarget("fd00::1", 8479, None, "https"),
        AgentTarget("fd00::2", 9000, "node-d", "https"),
        AgentTarget("agent.example.test", 9000, None, "https"),
    ]


async def test_static_refresh_lists_sorted_agents() -> None:
    section = DiscoverySection(mode="static", agents=["node-b=10.0.0.2:1", "node-a=10.0.0.1:1"])
    discovery = make_discovery(section)
    agents = await discovery.agents()
    assert [a.label for a in agents] == ["node-a", "node-b"]
    assert discovery.last_error is None and discovery.last_refresh > 0


async def test_static_empty_says_so() -> None:
    discovery = make_discovery(DiscoverySection(mode="static"))
    assert await discovery.agents() == []
    assert discovery.last_error == "no agents configured (discovery.agents is empty)"


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("", "no host"),
        ("node-a=", "no host"),
        ("=10.0.0.1:8479", "empty node name"),
        ("Node A=10.0.0.1:8479", "is not a node name"),
        ("10.0.0.1:0", "port '0'"),
        ("10.0.0.1:65536", "port '65536'"),
        ("10.0.0.1:http", "port 'http'"),
        ("10.0.0.1:", "port ''"),
        (":8479", "no host before ':'"),
        ("10.0.0.300:8479", "is not an IPv4 address"),
        ("bad_host:8479", "neither an IP address nor a host name"),
        ("fd00::1:8479", "must be in brackets"),
        ("[fd00::1:8479", "missing ']'"),
        ("[10.0.0.1]:8479", "is not an IPv6 address"),
        ("[fd00::1]8479", "unexpected '8479'"),
        ("http://10.0.0.1:8479", "without a scheme"),
    ],
)
def test_static_bad_entry_is_named(entry: str, reason: str) -> None:
    with pytest.raises(ValueError, match=r"discovery\.agents entry") as info:
        parse_static_agent(entry)
    assert repr(entry) in str(info.value) and reason in str(info.value)


@pytest.mark.parametrize(
    "agents",
    [["10.0.0.1:8479", "node-b=10.0.0.1:8479"], ["node-a=10.0.0.1:1", "node-a=10.0.0.2:1"]],
)
def test_static_duplicates_are_refused(agents: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        make_discovery(DiscoverySection(mode="static", agents=agents))
    assert repr(agents[1]) in str(info.value) and repr(agents[0]) in str(info.value)


def test_make_discovery_sends_nothing() -> None:
    assert isinstance(make_discovery(DiscoverySection()), DnsDiscovery)
    assert isinstance(
        make_discovery(DiscoverySection(mode="endpointslices")), EndpointSliceDiscovery
    )


# --- DNS --------------------------------------------------------------------------------------


def _zone() -> DnsZone:
    return DnsZone(
        records={
            SERVICE: {"A": ["10.0.0.11", "10.0.0.12"], "AAAA": ["fd00::11"]},
            "v4only.pullcheck.svc.cluster.local.": {"A": ["10.0.0.21"]},
            "empty.pullcheck.svc.cluster.local.": {},
        }
    )


def _dns_section(tmp_path: Path, server: RunningDns, **overrides: Any) -> DiscoverySection:
    conf = tmp_path / "resolv.conf"
    conf.write_text(
        server.resolv_conf(
            search="pullcheck.svc.cluster.local svc.cluster.local cluster.local", ndots=5
        )
    )
    values: dict[str, Any] = {
        "mode": "dns",
        "service": "pullcheck-agent.pullcheck",  # found through the search list
        "resolv_conf": str(conf),
        "dns_port": server.port,
        "timeout": 2.0,
    }
    values.update(overrides)
    return DiscoverySection(**values)


async def test_dns_a_and_aaaa_records_are_agents(tmp_path: Path) -> None:
    zone = _zone()
    async with serve_dns(zone) as server:
        discovery = make_discovery(_dns_section(tmp_path, server))
        agents = await discovery.agents()
    assert [(a.url, a.node, a.label) for a in agents] == [
        ("http://10.0.0.11:8479", None, "10.0.0.11:8479"),
        ("http://10.0.0.12:8479", None, "10.0.0.12:8479"),
        ("http://[fd00::11]:8479", None, "[fd00::11]:8479"),
    ]
    assert discovery.last_error is None and discovery.last_refresh > 0
    # ndots:5 → the search list first; the first suffix gives NXDOMAIN, the second answers
    assert sorted(set(zone.queries)) == [
        ("pullcheck-agent.pullcheck.pullcheck.svc.cluster.local.", "A"),
        ("pullcheck-agent.pullcheck.pullcheck.svc.cluster.local.", "AAAA"),
        (SERVICE, "A"),
        (SERVICE, "AAAA"),
    ]


async def test_dns_one_family_only(tmp_path: Path) -> None:
    zone = _zone()
    async with serve_dns(zone, host="127.0.0.3") as server:
        section = _dns_section(tmp_path, server, service=SERVICE, ip_family="ipv6")
        agents = await make_discovery(section).agents()
    assert [a.address for a in agents] == ["fd00::11"]
    assert zone.queries == [(SERVICE, "AAAA")]


async def test_dns_v4_only_service(tmp_path: Path) -> None:
    async with serve_dns(_zone()) as server:
        section = _dns_section(tmp_path, server, service="v4only.pullcheck.svc.cluster.local.")
        discovery = make_discovery(section)
        agents = await discovery.agents()
    assert [a.address for a in agents] == ["10.0.0.21"] and discovery.last_error is None


async def test_dns_nxdomain_is_an_empty_list_with_the_reason(tmp_path: Path) -> None:
    async with serve_dns(_zone()) as server:
        section = _dns_section(tmp_path, server, service="missing.pullcheck.svc.cluster.local.")
        discovery = make_discovery(section)
        assert await discovery.agents() == []
    assert discovery.last_error is not None
    assert "missing.pullcheck.svc.cluster.local." in discovery.last_error
    assert "NXDOMAIN" in discovery.last_error
    assert discovery.last_refresh > 0


async def test_dns_no_records_is_an_empty_list_with_the_reason(tmp_path: Path) -> None:
    async with serve_dns(_zone()) as server:
        section = _dns_section(tmp_path, server, service="empty.pullcheck.svc.cluster.local.")
        discovery = make_discovery(section)
        assert await discovery.agents() == []
    assert discovery.last_error is not None and "no A or AAAA records" in discovery.last_error


async def test_dns_nxdomain_empties_a_previous_list(tmp_path: Path) -> None:
    zone = _zone()
    async with serve_dns(zone) as server:
        discovery = make_discovery(_dns_section(tmp_path, server, service=SERVICE))
        assert len(await discovery.agents()) == 3
        zone.records.pop(SERVICE)  # the Service was deleted: a definitive answer
        await discovery.refresh()
        assert await discovery.agents() == []
    assert discovery.last_error is not None and "NXDOMAIN" in discovery.last_error


async def test_dns_failure_keeps_the_last_good_list(tmp_path: Path) -> None:
    zone = _zone()
    async with serve_dns(zone) as server:
        discovery = make_discovery(_dns_section(tmp_path, server, service=SERVICE, timeout=0.3))
        good = await discovery.agents()
        assert len(good) == 3
        first_refresh = discovery.last_refresh

        zone.servfail = True
        await discovery.refresh()
        assert await discovery.agents() == good
        assert discovery.last_error is not None and "SERVFAIL" in discovery.last_error
        assert discovery.last_refresh == first_refresh

        zone.servfail, zone.silent = False, True  # the server stops answering
        await discovery.refresh()
        assert await discovery.agents() == good
        assert discovery.last_error is not None and "expired" in discovery.last_error

        zone.silent = False
        zone.records[SERVICE]["A"] = ["10.0.0.11"]
        await discovery.refresh()
        assert [a.address for a in await discovery.agents()] == ["10.0.0.11", "fd00::11"]
        assert discovery.last_error is None and discovery.last_refresh > first_refresh


async def test_dns_unreadable_resolv_conf_is_reported(tmp_path: Path) -> None:
    section = DiscoverySection(resolv_conf=str(tmp_path / "missing.conf"), dns_port=1)
    discovery = make_discovery(section)
    assert await discovery.agents() == []
    assert discovery.last_error is not None and "missing.conf" in discovery.last_error


# --- EndpointSlices ---------------------------------------------------------------------------


@pytest.fixture
def kube_api() -> Iterator[FakeKubeApi]:
    with serve_kube_api() as api:
        api.add_user(TOKEN, AGGREGATOR, namespaces=["pullcheck"])
        yield api


def _kubeconfig(tmp_path: Path, api: FakeKubeApi, token: str = TOKEN) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": api.url}}],
                "users": [{"name": "aggregator", "user": {"token": token}}],
                "contexts": [
                    {"name": "fake", "context": {"cluster": "fake", "user": "aggregator"}}
                ],
                "current-context": "fake",
            }
        )
    )
    return str(path)


def _kube_section(tmp_path: Path, api: FakeKubeApi, **overrides: Any) -> DiscoverySection:
    values: dict[str, Any] = {
        "mode": "endpointslices",
        "kubeconfig": _kubeconfig(tmp_path, api),
        "timeout": 5.0,
    }
    values.update(overrides)
    return DiscoverySection(**values)


def _dual_stack_slices() -> list[dict[str, Any]]:
    ports = (("metrics", 9100), ("http", 8479))
    v4 = endpoint_slice(
        "pullcheck-agent",
        [
            endpoint("10.0.0.1", "node-a", pod="pullcheck-agent-aaaaa"),
            endpoint("10.0.0.2", "node-b", ready=False, pod="pullcheck-agent-bbbbb"),
            endpoint("10.0.0.3", "node-c", ready=None, pod="pullcheck-agent-ccccc"),
            endpoint("10.0.0.4", "node-d", ready=False, terminating=True),
        ],
        ports=ports,
    )
    v6 = endpoint_slice(
        "pullcheck-agent",
        [
            endpoint("fd00::1", "node-a", pod="pullcheck-agent-aaaaa"),  # same pod as 10.0.0.1
            endpoint("fd00::5", "node-e", pod="pullcheck-agent-eeeee"),  # IPv6 only
        ],
        address_type="IPv6",
        ports=ports,
    )
    other_service = endpoint_slice("registry-mirror", [endpoint("10.0.0.99", "node-x")])
    other_namespace = endpoint_slice(
        "pullcheck-agent", [endpoint("10.0.9.1", "node-y")], namespace="elsewhere"
    )
    return [v6, other_service, v4, other_namespace]


async def test_endpointslices_ready_agents_with_node_names(
    tmp_path: Path, kube_api: FakeKubeApi
) -> None:
    kube_api.set_slices(_dual_stack_slices())
    discovery = make_discovery(_kube_section(tmp_path, kube_api))
    try:
        agents = await discovery.agents()
    finally:
        await discovery.aclose()
    assert [(a.node, a.url) for a in agents] == [
        ("node-a", "http://10.0.0.1:8479"),  # dual-stack pod: once, by IPv4, port "http"
        ("node-c", "http://10.0.0.3:8479"),  # conditions.ready unset → ready
        ("node-e", "http://[fd00::5]:8479"),
    ]
    assert [a.label for a in agents] == ["node-a", "node-c", "node-e"]
    assert discovery.last_error is None


async def test_endpointslices_one_list_request_per_refresh(
    tmp_path: Path, kube_api: FakeKubeApi
) -> None:
    kube_api.set_slices(_dual_stack_slices())
    discovery = make_discovery(_kube_section(tmp_path, kube_api))
    try:
        for _ in range(3):
            await discovery.refresh()
    finally:
        await discovery.aclose()
    requests = kube_api.requests
    assert len(requests) == 3
    for request in requests:
        assert request.method == "GET"
        assert request.path == "/apis/discovery.k8s.io/v1/namespaces/pullcheck/endpointslices"
        assert request.query == {"labelSelector": ["kubernetes.io/service-name=pullcheck-agent"]}
        assert (request.user, request.status) == (AGGREGATOR, 200)


async def test_endpointslices_ipv6_only_and_port_fallbacks(
    tmp_path: Path, kube_api: FakeKubeApi
) -> None:
    kube_api.set_slices(
        [
            endpoint_slice(
                "pullcheck-agent",
                [endpoint("fd00::7", "node-g")],
                address_type="IPv6",
                ports=[("probe", 7000), ("other", 7001)],
            ),
            endpoint_slice(
                "pullcheck-agent",
                [endpoint("fd00::8", "node-h")],
                address_type="IPv6",
                ports=None,
                name="pullcheck-agent-noport",
            ),
            endpoint_slice("pullcheck-agent", [endpoint("10.0.0.7", "node-g")]),
        ]
    )
    discovery = make_discovery(_kube_section(tmp_path, kube_api, ip_family="ipv6", agent_port=1))
    try:
        agents = await discovery.agents()
    finally:
        await discovery.aclose()
    assert [(a.node, a.address, a.port) for a in agents] == [
        ("node-g", "fd00::7", 7000),  # no port named "http": the first
        ("node-h", "fd00::8", 1),  # no ports: agent_port
    ]


async def test_endpointslices_none_ready_is_an_empty_list_with_the_reason(
    tmp_path: Path, kube_api: FakeKubeApi
) -> None:
    kube_api.set_slices(
        [endpoint_slice("pullcheck-agent", [endpoint("10.0.0.2", "node-b", ready=False)])]
    )
    discovery = make_discovery(_kube_section(tmp_path, kube_api))
    try:
        assert await discovery.agents() == []
        assert discovery.last_error is not None
        assert "no ready agents" in discovery.last_error
        assert "1 endpoints not ready" in discovery.last_error

        kube_api.set_slices([])
        await discovery.refresh()
        assert discovery.last_error is not None
        assert "no EndpointSlices labelled kubernetes.io/service-name=pullcheck-agent" in (
            discovery.last_error
        )
    finally:
        await discovery.aclose()


async def test_endpointslices_forbidden_keeps_the_last_good_list(
    tmp_path: Path, kube_api: FakeKubeApi
) -> None:
    kube_api.set_slices(_dual_stack_slices())
    discovery = make_discovery(_kube_section(tmp_path, kube_api))
    try:
        good = await discovery.agents()
        assert len(good) == 3
        kube_api.grants[AGGREGATOR].clear()  # the RoleBinding was removed
        await discovery.refresh()
        assert await discovery.agents() == good
    finally:
        await discovery.aclose()
    error = discovery.last_error
    assert error is not None
    assert "403 Forbidden" in error
    assert f'User "{AGGREGATOR}" cannot list resource "endpointslices"' in error
    assert "grant list on endpointslices.discovery.k8s.io in namespace pullcheck" in error
    assert kube_api.requests[-1].status == 403


async def test_endpointslices_wrong_token_is_unauthorized(
    tmp_path: Path, kube_api: FakeKubeApi
) -> None:
    section = _kube_section(tmp_path, kube_api)
    section = section.model_copy(
        update={"kubeconfig": _kubeconfig(tmp_path, kube_api, token="stale")}
    )
    discovery = make_discovery(section)
    try:
        assert await discovery.agents() == []
    finally:
        await discovery.aclose()
    assert discovery.last_error is not None and "401 Unauthorized" in discovery.last_error
    assert kube_api.requests[-1].user is None


async def test_endpointslices_in_cluster_https_and_token_rotation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = make_kube_tls(tmp_path / "pki")
    token_file = tmp_path / "token"
    token_file.write_text("first-token")
    with serve_kube_api(tls) as api:
        api.add_user("first-token", AGGREGATOR, namespaces=["pullcheck"])
        api.set_slices(_dual_stack_slices())
        host, port = "127.0.0.1", api.url.rsplit(":", 1)[1]
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
        section = DiscoverySection(
            mode="endpointslices", api_token_file=str(token_file), api_ca_file=str(tls.ca_file)
        )
        discovery = make_discovery(section)
        try:
            assert len(await discovery.agents()) == 3
            # the kubelet rotates the projected token; the API server stops taking the old one
            token_file.write_text("second-token\n")
            api.tokens = {"second-token": AGGREGATOR}
            await discovery.refresh()
            assert discovery.last_error is None
        finally:
            await discovery.aclose()
        statuses = [r.status for r in api.requests]
    assert statuses == [200, 401, 200]  # a 401 makes the client re-read the token file once


async def test_endpointslices_untrusted_certificate_keeps_the_list(
    tmp_path: Path,
) -> None:
    tls = make_kube_tls(tmp_path / "pki")
    other = make_kube_tls(tmp_path / "other")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    with serve_kube_api(tls) as api:
        api.add_user(TOKEN, AGGREGATOR, namespaces=["*"])
        section = DiscoverySection(
            mode="endpointslices",
            api_url=api.url,
            api_token_file=str(token_file),
            api_ca_file=str(other.ca_file),
        )
        discovery = make_discovery(section)
        try:
            assert await discovery.agents() == []
        finally:
            await discovery.aclose()
    assert discovery.last_error is not None
    assert "cannot list EndpointSlices from https://127.0.0.1" in discovery.last_error
    assert "CERTIFICATE_VERIFY_FAILED" in discovery.last_error
    assert api.requests == []


async def test_endpointslices_unreachable_api_keeps_the_list(
    tmp_path: Path, kube_api: FakeKubeApi
) -> None:
    kube_api.set_slices(_dual_stack_slices())
    section = _kube_section(tmp_path, kube_api)
    discovery = make_discovery(section)
    good = await discovery.agents()
    await discovery.aclose()
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = yaml.safe_load(Path(section.kubeconfig or "").read_text())
    config["clusters"][0]["cluster"]["server"] = dead
    Path(section.kubeconfig or "").write_text(yaml.safe_dump(config))
    await discovery.refresh()
    await discovery.aclose()
    assert await discovery.agents() == good
    assert discovery.last_error is not None
    assert f"cannot list EndpointSlices from {dead}: ConnectError" in discovery.last_error


async def test_endpointslices_outside_a_cluster_is_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    discovery = make_discovery(
        DiscoverySection(mode="endpointslices", api_token_file=str(token_file))
    )
    assert await discovery.agents() == []
    assert discovery.last_error is not None and "KUBERNETES_SERVICE_HOST" in discovery.last_error
    missing = make_discovery(
        DiscoverySection(
            mode="endpointslices",
            api_url="https://127.0.0.1:1",
            api_token_file=str(tmp_path / "nope"),
        )
    )
    await missing.refresh()
    assert missing.last_error is not None and "nope" in missing.last_error
    no_ca = make_discovery(
        DiscoverySection(
            mode="endpointslices",
            api_url="https://127.0.0.1:1",
            api_token_file=str(token_file),
            api_ca_file=str(tmp_path / "no-ca.crt"),
        )
    )
    await no_ca.refresh()
    assert no_ca.last_error is not None and "no-ca.crt" in no_ca.last_error


async def test_agents_waits_only_for_the_first_refresh() -> None:
    discovery = _Scripted(DiscoverySection(mode="static"), [DiscoveryError("down"), [A]])
    assert await discovery.agents() == []
    assert await discovery.agents() == []  # no lookup on the request path after the first
    assert discovery.calls == 1 and discovery.last_error == "down"
    await discovery.refresh()
    assert await discovery.agents() == [A] and discovery.calls == 2


# --- the fake API server itself replays real shapes -------------------------------------------


def test_fake_api_list_and_status_shapes(kube_api: FakeKubeApi) -> None:
    kube_api.set_slices(_dual_stack_slices())
    headers = {"Authorization": f"Bearer {TOKEN}"}
    path = "/apis/discovery.k8s.io/v1/namespaces/pullcheck/endpointslices"
    with httpx.Client(base_url=kube_api.url, trust_env=False) as client:
        listed = client.get(
            path,
            params={"labelSelector": "kubernetes.io/service-name in (pullcheck-agent)"},
            headers=headers,
        )
        forbidden = client.get(path.replace("pullcheck", "kube-system", 1), headers=headers)
        anonymous = client.get(path)
        unauthorized = client.get(path, headers={"Authorization": "Bearer nope"})
        bad = client.get(path, params={"labelSelector": "a in b"}, headers=headers)
    body = listed.json()
    assert listed.headers["content-type"] == "application/json"
    assert list(body) == ["kind", "apiVersion", "metadata", "items"]
    assert (body["kind"], body["apiVersion"]) == ("EndpointSliceList", "discovery.k8s.io/v1")
    assert body["metadata"]["resourceVersion"].isdigit()
    assert [item["addressType"] for item in body["items"]] == ["IPv6", "IPv4"]
    item = body["items"][1]
    assert "kind" not in item and "apiVersion" not in item
    assert item["metadata"]["labels"]["kubernetes.io/service-name"] == "pullcheck-agent"
    assert item["ports"][1] == {"name": "http", "protocol": "TCP", "port": 8479}
    assert item["endpoints"][0]["conditions"] == {
        "ready": True,
        "serving": True,
        "terminating": False,
    }
    assert item["endpoints"][0]["targetRef"]["kind"] == "Pod"
    assert "ready" not in item["endpoints"][2]["conditions"]
    assert forbidden.status_code == 403
    assert forbidden.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": (
            f'endpointslices.discovery.k8s.io is forbidden: User "{AGGREGATOR}" cannot list '
            'resource "endpointslices" in API group "discovery.k8s.io" in the namespace '
            '"kube-system"'
        ),
        "reason": "Forbidden",
        "details": {"group": "discovery.k8s.io", "kind": "endpointslices"},
        "code": 403,
    }
    assert anonymous.status_code == 403 and "system:anonymous" in anonymous.json()["message"]
    assert unauthorized.status_code == 401
    assert unauthorized.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }
    assert bad.status_code == 400 and bad.json()["reason"] == "BadRequest"


def test_fake_label_selector_grammar() -> None:
    assert parse_label_selector("") == []
    assert parse_label_selector("a=b, c!=d,e in (f, g),h notin (i),j,!k") == [
        ("a", "=", frozenset({"b"})),
        ("c", "!=", frozenset({"d"})),
        ("e", "in", frozenset({"f", "g"})),
        ("h", "notin", frozenset({"i"})),
        ("j", "exists", frozenset()),
        ("k", "!", frozenset()),
    ]
    with pytest.raises(ValueError, match="unable to parse requirement"):
        parse_label_selector("a in b")  # a set needs parentheses
    with pytest.raises(ValueError, match="unable to parse requirement"):
        parse_label_selector("=b")


# --- the refresh loop -------------------------------------------------------------------------


class _Scripted(Discovery):
    """Answers from a script: a list of targets or a DiscoveryError, one per refresh."""

    mode = "scripted"

    def __init__(self, section: DiscoverySection, script: list[Any]) -> None:
        super().__init__(section)
        self.script = script
        self.calls = 0
        self.closed = 0
        self.gate: asyncio.Event | None = None

    async def _discover(self) -> Any:
        from agent.cluster.discovery import _Found

        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        step = self.script[min(self.calls, len(self.script)) - 1]
        if isinstance(step, Exception):
            raise step
        return _Found(list(step))

    async def aclose(self) -> None:
        self.closed += 1


A = AgentTarget("10.0.0.1", 8479, "node-a")
B = AgentTarget("10.0.0.2", 8479, "node-b")


async def test_run_refreshes_until_stopped_and_keeps_the_last_good_list() -> None:
    section = DiscoverySection(mode="static", refresh=0.02)
    discovery = _Scripted(section, [[A, B], DiscoveryError("API down"), [B]])
    stop = asyncio.Event()
    task = asyncio.create_task(discovery.run(stop))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if discovery.calls >= 2 and discovery.last_error == "API down":
            assert await discovery.agents() == [A, B]  # kept through the failure
        if discovery.calls >= 3:
            break
    stop.set()
    await asyncio.wait_for(task, 1)
    assert discovery.calls >= 3 and discovery.closed == 1
    assert await discovery.agents() == [B] and discovery.last_error is None


async def test_run_stops_promptly_between_refreshes() -> None:
    discovery = _Scripted(DiscoverySection(mode="static", refresh=3600), [[A]])
    stop = asyncio.Event()
    task = asyncio.create_task(discovery.run(stop))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 1)
    assert discovery.calls == 1


def test_jitter_and_quick_retries_while_empty() -> None:
    discovery = _Scripted(DiscoverySection(mode="static", refresh=30), [[A]])
    delays = [discovery._next_delay() for _ in range(200)]
    assert all(27 <= d <= 33 for d in delays) and len(set(delays)) > 1
    discovery._record_failure("down")  # no agents yet: retry after ~1 s, ~2 s, ~4 s …
    assert 0.9 <= discovery._next_delay() <= 1.1
    discovery._record_failure("down")
    assert 1.8 <= discovery._next_delay() <= 2.2
    for _ in range(10):
        discovery._record_failure("down")
    assert 27 <= discovery._next_delay() <= 33


async def test_concurrent_refreshes_share_one_lookup() -> None:
    discovery = _Scripted(DiscoverySection(mode="static"), [[A]])
    discovery.gate = asyncio.Event()
    first = asyncio.create_task(discovery.agents())
    second = asyncio.create_task(discovery.refresh())
    await asyncio.sleep(0.01)
    discovery.gate.set()
    assert await first == [A]
    await second
    assert discovery.calls == 1
    assert await discovery.agents() == [A] and discovery.calls == 1  # cached afterwards


async def test_unexpected_errors_are_recorded_not_raised() -> None:
    discovery = _Scripted(DiscoverySection(mode="static"), [[A], RuntimeError("bug")])
    assert await discovery.agents() == [A]
    await discovery.refresh()
    assert await discovery.agents() == [A]
    assert discovery.last_error == "RuntimeError: bug"


def test_discovery_section_defaults() -> None:
    section = DiscoverySection()
    assert (section.mode, section.dns_port, section.ip_family, section.port_name) == (
        "dns",
        53,
        "any",
        "http",
    )
    assert section.kubeconfig is None and section.api_url is None
    assert section.api_token_file == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert json.loads(section.model_dump_json())["timeout"] == 10.0


async def test_endpointslices_skip_an_unusable_address(
    tmp_path: Path, kube_api: FakeKubeApi
) -> None:
    kube_api.set_slices(
        [
            endpoint_slice(
                "pullcheck-agent",
                [endpoint("not-an-ip", "node-z"), endpoint("10.0.0.1", "node-a")],
            )
        ]
    )
    discovery = make_discovery(_kube_section(tmp_path, kube_api))
    try:
        assert [a.label for a in await discovery.agents()] == ["node-a"]
    finally:
        await discovery.aclose()
    assert discovery.last_error is None
