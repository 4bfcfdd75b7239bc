"""Agent discovery for the aggregator: which pullcheck agents exist, refreshed in the background.

``make_discovery(section)`` builds one :class:`Discovery` from ``aggregator.discovery``
(:class:`~agent.service.config.DiscoverySection`); the aggregator starts ``run(stop)`` once and
reads ``await agents()`` on every request. Requests never wait for DNS or the API server:
``agents()`` returns the cached list (only until the first refresh has finished does it wait for
one). A failed refresh (timeout, SERVFAIL, API error, unreachable server) keeps the last good
list and records ``last_error``; a definitive "there are none" (NXDOMAIN, no records, no ready
endpoints) empties the list and says why in ``last_error``.

Modes (``discovery.mode``):

``dns`` (default, no RBAC)
    A and AAAA records of the headless Service ``discovery.service``, each an agent on
    ``agent_port``. The nameservers, search list and ndots come from ``discovery.resolv_conf``
    (dnspython, port ``dns_port``), never the system resolver. The node is unknown; agents name
    their node in their answers. A and AAAA are asked in parallel; if either query fails, the
    refresh fails. A dual-stack Service lists each agent once per family and DNS cannot pair
    them: set ``ip_family`` to one family, or let the aggregator merge by node name.

``endpointslices``
    ONE list request per refresh, by the aggregator only (never by the N agents), for the
    EndpointSlices labelled ``kubernetes.io/service-name=<service_name>`` in ``namespace``. Ready
    endpoints (``conditions.ready`` true or unset) of IPv4 and IPv6 slices become targets with
    their first address (the only one the EndpointSlice controller writes), ``nodeName``, and the
    slice's port named ``port_name`` (else its first port, else ``agent_port``). An agent in both
    families is kept once, by its IPv4 address. Credentials: in-cluster service account (token
    re-read on 401) or ``kubeconfig``. The API server is reached directly (no HTTP(S)_PROXY).
    :func:`kube_client` builds that client; the aggregator's leader election uses it too.

    The least RBAC, a namespaced Role in ``discovery.namespace`` bound to the aggregator's
    ServiceAccount (``list`` only: this module never gets or watches)::

        - apiGroups: ["discovery.k8s.io"]
          resources: ["endpointslices"]
          verbs: ["list"]

``static``
    ``discovery.agents`` entries ``host:port`` or ``node=host:port`` (``[fd00::1]:8479`` for
    IPv6; the port defaults to ``agent_port``). A bad entry raises ``ValueError`` naming it.

"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.asyncresolver
import dns.exception
import dns.resolver
import httpx2
from lightkube import ApiError, AsyncClient, ConfigError, KubeConfig
from lightkube.config.models import Cluster, User
from lightkube.models.discovery_v1 import EndpointPort
from lightkube.resources.discovery_v1 import EndpointSlice

from agent import hostport
from agent.errors import PullcheckError
from agent.service.config import DiscoverySection

__all__ = [
    "AgentTarget",
    "Discovery",
    "DiscoveryError",
    "DnsDiscovery",
    "EndpointSliceDiscovery",
    "StaticDiscovery",
    "kube_client",
    "make_discovery",
    "parse_static",
    "parse_static_agent",
]

log = logging.getLogger(__name__)

_JITTER = 0.1  # run(): each wait is refresh * [0.9, 1.1]
_FIRST_RETRY = 1.0  # run(): with no agents and an error, retry after 1, 2, 4 … s (≤ refresh)
_SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_FAMILY_ORDER = {"IPv4": 0, "IPv6": 1}
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_NODE_NAME = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
_HOST_NAME = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*\.?", re.IGNORECASE)


@dataclass(frozen=True)
class AgentTarget:
    """One agent to fan out to."""

    address: str  # IP address (IPv6 without brackets) or, for static entries, a host name
    port: int
    node: str | None = None  # None when discovery cannot know it (DNS)
    scheme: str = "http"

    @property
    def url(self) -> str:
        """Base URL without a trailing slash: ``http://10.0.0.1:8479``, ``http://[fd00::1]:8479``."""
        return f"{self.scheme}://{hostport.join(self.address, self.port, in_url=True)}"

    @property
    def label(self) -> str:
        """What to call the agent in answers and logs: its node, else ``address:port``."""
        return self.node or hostport.join(self.address, self.port, in_url=True)


class DiscoveryError(PullcheckError):
    """A refresh could not produce a trustworthy list; the message says why."""


@dataclass
class _Found:
    targets: list[AgentTarget]
    note: str | None = None  # why the list is empty; becomes last_error
    extra: list[str] = field(default_factory=list)  # for the log only


class Discovery(abc.ABC):
    """The current list of agents, refreshed by :meth:`run` (or by hand with :meth:`refresh`).

    ``last_refresh`` is the wall-clock time (``time.time()``) of the last refresh that replaced
    the list (0.0: never); ``last_error`` is the error or note of the latest attempt, None when it
    found agents.
    """

    mode: str = ""

    def __init__(self, section: DiscoverySection) -> None:
        self.section = section
        self.last_error: str | None = None
        self.last_refresh: float = 0.0
        self._targets: list[AgentTarget] = []
        self._settled = False  # a refresh has finished (found, found none, or failed)
        self._failures = 0  # consecutive attempts that ended with no agents and an error
        self._lock = asyncio.Lock()

    async def agents(self) -> list[AgentTarget]:
        """The cached list (a copy). Only before the first refresh has finished does it wait for
        one (joining :meth:`run`'s); after that it never touches DNS or the API server."""
        if not self._settled:
            await self.refresh()
        return list(self._targets)

    async def refresh(self) -> None:
        """Look the agents up once. Never raises for a failed lookup: it records ``last_error``
        and keeps the last good list. A call while a refresh runs waits for that one instead."""
        if self._lock.locked():
            async with self._lock:
                return
        async with self._lock:
            try:
                found = await self._discover()
            except DiscoveryError as exc:
                self._record_failure(str(exc))
                return
            except Exception as exc:  # a bug or an unforeseen library error: keep the list
                log.exception("%s discovery failed unexpectedly", self.mode)
                self._record_failure(f"{type(exc).__name__}: {exc}")
                return
            finally:
                self._settled = True
            self._replace(found)

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh now, then every ``refresh`` seconds (±10 % jitter) until ``stop`` is set.

        While there are no agents and the last attempt reported an error, retries sooner
        (1, 2, 4 … seconds, at most ``refresh``). A refresh in progress is bounded by ``timeout``.
        Closes the discovery's connections on the way out.
        """
        try:
            while not stop.is_set():
                await self.refresh()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._next_delay())
        finally:
            await self.aclose()

    async def aclose(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Release connections (a later refresh reopens them)."""

    @abc.abstractmethod
    async def _discover(self) -> _Found:
        """One lookup. Raise :class:`DiscoveryError` when the answer cannot be trusted."""

    def _next_delay(self) -> float:
        base = self.section.refresh
        if self._failures:
            base = min(base, _FIRST_RETRY * 2 ** (self._failures - 1))
        return base * random.uniform(1 - _JITTER, 1 + _JITTER)

    def _record_failure(self, message: str) -> None:
        if message != self.last_error:
            log.warning(
                "%s discovery failed, keeping %d agents: %s", self.mode, len(self._targets), message
            )
        self.last_error = message
        if not self._targets:
            self._failures += 1

    def _replace(self, found: _Found) -> None:
        targets = sorted(set(found.targets), key=_sort_key)
        if targets != self._targets or found.note != self.last_error:
            old, new = set(self._targets), set(targets)
            details = "; ".join([*found.extra, found.note or ""]).strip("; ")
            log.info(
                "%s discovery: %d agents (+%d -%d)%s",
                self.mode,
                len(targets),
                len(new - old),
                len(old - new),
                f": {details}" if details else "",
            )
        self._targets = targets
        self.last_error = found.note
        self.last_refresh = time.time()
        self._failures = self._failures + 1 if found.note and not targets else 0


# --- static -----------------------------------------------------------------------------------


class StaticDiscovery(Discovery):
    """``discovery.agents``, parsed once (a bad entry raises ``ValueError`` here)."""

    mode = "static"

    def __init__(self, section: DiscoverySection) -> None:
        super().__init__(section)
        self._static = parse_static(section)

    async def _discover(self) -> _Found:
        if not self._static:
            return _Found([], note="no agents configured (discovery.agents is empty)")
        return _Found(list(self._static))


def parse_static_agent(
    entry: str, *, default_port: int = 8479, scheme: str = "http"
) -> AgentTarget:
    """``host``, ``host:port``, ``node=host:port``; IPv6 in brackets (``node=[fd00::1]:8479``)."""
    text = entry.strip()
    node: str | None = None
    if "://" in text:
        raise _bad(entry, "write host:port without a scheme (the scheme is discovery.agent_scheme)")
    if "=" in text:
        node, _, text = (part.strip() for part in text.partition("="))
        if not node:
            raise _bad(entry, "empty node name before '='")
        if len(node) > 253 or not _NODE_NAME.fullmatch(node):
            raise _bad(entry, f"{node!r} is not a node name (lowercase letters, digits, '-', '.')")
    if not text:
        raise _bad(entry, "no host")
    port_text: str | None
    if text.startswith("["):
        host, closing, rest = text[1:].partition("]")
        if not closing:
            raise _bad(entry, "missing ']' after the IPv6 address")
        try:
            address = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise _bad(entry, f"{host!r} in brackets is not an IPv6 address") from None
        if rest and not rest.startswith(":"):
            raise _bad(entry, f"unexpected {rest!r} after ']' (want [address]:port)")
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1:
        raise _bad(entry, "an IPv6 address must be in brackets, like [fd00::1]:8479")
    else:
        host, colon, after = text.partition(":")
        port_text = after if colon else None
        address = _check_host(entry, host)
    if port_text is None:
        port = default_port
    elif port_text.isdigit() and 1 <= int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise _bad(entry, f"port {port_text!r} is not a number from 1 to 65535")
    return AgentTarget(address=address, port=port, node=node, scheme=scheme)


def _bad(entry: str, reason: str) -> ValueError:
    return ValueError(f"discovery.agents entry {entry!r}: {reason}")


def _check_host(entry: str, host: str) -> str:
    if not host:
        raise _bad(entry, "no host before ':'")
    if re.fullmatch(r"[0-9.]+", host):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise _bad(entry, f"{host!r} is not an IPv4 address") from None
    if len(host) > 253 or not _HOST_NAME.fullmatch(host):
        raise _bad(entry, f"{host!r} is neither an IP address nor a host name")
    return host.lower()


def parse_static(section: DiscoverySection) -> list[AgentTarget]:
    targets: list[AgentTarget] = []
    seen: dict[tuple[str, int], str] = {}
    nodes: dict[str, str] = {}
    for entry in section.agents:
        target = parse_static_agent(
            entry, default_port=section.agent_port, scheme=section.agent_scheme
        )
        key = (target.address, target.port)
        if key in seen:
            raise _bad(entry, f"the same agent as {seen[key]!r}")
        if target.node is not None:
            if target.node in nodes:
                raise _bad(entry, f"node {target.node!r} is already {nodes[target.node]!r}")
            nodes[target.node] = entry
        seen[key] = entry
        targets.append(target)
    return targets


# --- DNS --------------------------------------------------------------------------------------


class DnsDiscovery(Discovery):
    """A and AAAA records of the headless Service ``discovery.service``."""

    mode = "dns"

    async def _discover(self) -> _Found:
        section = self.section
        resolver = self._resolver()
        rdtypes = {"any": ("A", "AAAA"), "ipv4": ("A",), "ipv6": ("AAAA",)}[section.ip_family]
        outcomes = await asyncio.gather(
            *(self._lookup(resolver, t) for t in rdtypes), return_exceptions=True
        )
        answers: list[_DnsAnswer] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            answers.append(outcome)
        addresses = list(dict.fromkeys(a for answer in answers for a in answer.addresses))
        targets = [
            AgentTarget(address=a, port=section.agent_port, scheme=section.agent_scheme)
            for a in addresses
        ]
        if targets:
            return _Found(targets)
        wanted = " or ".join(rdtypes)
        if all(answer.nxdomain for answer in answers):
            note = (
                f"{section.service}: no such name (NXDOMAIN from {section.resolv_conf}'s "
                "nameservers); is the headless Service deployed, with ready agents?"
            )
        else:
            note = f"{section.service}: no {wanted} records; are any agents ready?"
        return _Found([], note=note)

    def _resolver(self) -> dns.asyncresolver.Resolver:
        section = self.section
        try:
            resolver = dns.asyncresolver.Resolver(filename=section.resolv_conf, configure=True)
        except (dns.resolver.NoResolverConfiguration, ValueError) as exc:
            raise DiscoveryError(f"{section.resolv_conf}: {exc}") from None
        resolver.port = section.dns_port
        resolver.cache = None
        resolver.lifetime = section.timeout
        resolver.timeout = min(resolver.timeout, section.timeout)
        return resolver

    async def _lookup(self, resolver: dns.asyncresolver.Resolver, rdtype: str) -> _DnsAnswer:
        name = self.section.service
        try:
            answer = await resolver.resolve(name, rdtype, search=True, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return _DnsAnswer([], nxdomain=True)
        except dns.exception.DNSException as exc:
            raise DiscoveryError(f"{rdtype} {name}: {exc}") from None
        if answer.rrset is None:
            return _DnsAnswer([])
        return _DnsAnswer([str(ipaddress.ip_address(rdata.address)) for rdata in answer.rrset])


@dataclass
class _DnsAnswer:
    addresses: list[str]
    nxdomain: bool = False


# --- EndpointSlices ---------------------------------------------------------------------------


class EndpointSliceDiscovery(Discovery):
    """Ready endpoints of the agent Service's EndpointSlices: one list request per refresh."""

    mode = "endpointslices"

    def __init__(self, section: DiscoverySection) -> None:
        super().__init__(section)
        self._client: AsyncClient | None = None
        self._server = ""

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _discover(self) -> _Found:
        section = self.section
        client = self._connect()
        try:
            slices = [
                item
                async for item in client.list(
                    EndpointSlice,
                    namespace=section.namespace,
                    labels={_SERVICE_NAME_LABEL: section.service_name},
                )
            ]
        except ApiError as exc:
            raise DiscoveryError(self._api_error(exc)) from None
        except httpx2.HTTPError as exc:
            raise DiscoveryError(
                f"cannot list EndpointSlices from {self._server}: {type(exc).__name__}: {exc}"
            ) from None
        return _targets_from_slices(slices, section)

    def _connect(self) -> AsyncClient:
        if self._client is not None:
            return self._client
        client, self._server = kube_client(self.section)
        self._client = client
        return client

    def _api_error(self, exc: ApiError) -> str:
        section = self.section
        status = exc.status
        text = (
            f"listing EndpointSlices in {section.namespace} from {self._server}: "
            f"{status.code} {status.reason}: {status.message}"
        )
        if status.code == 403:
            text += (
                f" (grant list on endpointslices.discovery.k8s.io in namespace "
                f"{section.namespace} to the aggregator's ServiceAccount)"
            )
        elif status.code == 401:
            credentials = section.kubeconfig or section.api_token_file
            text += f" (are the credentials in {credentials} valid for this cluster?)"
        return text


def kube_client(section: DiscoverySection, namespace: str | None = None) -> tuple[AsyncClient, str]:
    """A lightkube client for the API that ``section`` names, and that API's URL.

    In a cluster: ``api_url`` (default ``https://$KUBERNETES_SERVICE_HOST:…``), the service
    account's token file (re-read on 401) and CA bundle; else ``kubeconfig``. Requests time out
    after ``section.timeout`` s and never go through a proxy. Sends nothing. Raises
    :class:`DiscoveryError` naming what is missing or unreadable.
    """
    try:
        config = _kube_config(section).get()
        if config is None:
            raise ConfigError(f"{section.kubeconfig}: no current-context")
        client = AsyncClient(
            config,
            namespace=namespace or section.namespace,
            timeout=httpx2.Timeout(section.timeout),
            trust_env=False,
        )
    except ConfigError as exc:
        raise DiscoveryError(f"Kubernetes client configuration: {exc}") from None
    except OSError as exc:  # a kubeconfig's CA bundle or client certificate is unreadable
        where = f" ({section.kubeconfig})" if section.kubeconfig else ""
        raise DiscoveryError(f"Kubernetes client configuration{where}: {exc}") from None
    return client, config.cluster.server


def _kube_config(section: DiscoverySection) -> KubeConfig:
    if section.kubeconfig is not None:
        return KubeConfig.from_file(section.kubeconfig)
    server = section.api_url
    if server is None:
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise ConfigError(
                "not in a cluster (KUBERNETES_SERVICE_HOST is unset); set discovery.api_url "
                "or discovery.kubeconfig"
            )
        server = f"https://{hostport.join(host, port, in_url=True)}"
    token_file = str(Path(section.api_token_file).absolute())
    if not Path(token_file).is_file():
        raise ConfigError(f"no service account token at {token_file}")
    ca_file = str(Path(section.api_ca_file).absolute())
    if not Path(ca_file).is_file():
        raise ConfigError(f"no cluster CA bundle at {ca_file}")
    return KubeConfig.from_one(
        cluster=Cluster(server=server, certificate_auth=ca_file),
        user=User(token_file=token_file),
        namespace=section.namespace,
    )


def _targets_from_slices(slices: Sequence[EndpointSlice], section: DiscoverySection) -> _Found:
    families = {"any": ("IPv4", "IPv6"), "ipv4": ("IPv4",), "ipv6": ("IPv6",)}[section.ip_family]
    targets: dict[tuple[str, ...], AgentTarget] = {}
    not_ready = 0
    skipped: list[str] = []
    ordered = sorted(
        slices,
        key=lambda s: (_FAMILY_ORDER.get(s.addressType, 9), (s.metadata and s.metadata.name) or ""),
    )
    for item in ordered:
        name = (item.metadata.name if item.metadata else None) or "?"
        if item.addressType not in families:
            skipped.append(f"slice {name}: addressType {item.addressType} not used")
            continue
        port = _pick_port(item.ports or [], section)
        for endpoint in item.endpoints or []:
            if endpoint.conditions is not None and endpoint.conditions.ready is False:
                not_ready += 1
                continue
            try:
                address = str(ipaddress.ip_address(endpoint.addresses[0]))
            except (IndexError, ValueError):
                skipped.append(f"slice {name}: endpoint address {endpoint.addresses!r} unusable")
                continue
            ref = endpoint.targetRef
            if ref is not None and ref.name:
                key: tuple[str, ...] = ("ref", ref.kind or "", ref.namespace or "", ref.name)
            elif endpoint.nodeName:
                key = ("node", endpoint.nodeName)
            else:
                key = ("address", endpoint.addresses[0], str(port))
            targets.setdefault(
                key,
                AgentTarget(
                    address=address,
                    port=port,
                    node=endpoint.nodeName,
                    scheme=section.agent_scheme,
                ),
            )
    if not_ready:
        skipped.append(f"{not_ready} endpoints not ready")
    note = None
    if not targets:
        where = f"{_SERVICE_NAME_LABEL}={section.service_name} in namespace {section.namespace}"
        if not slices:
            note = f"no EndpointSlices labelled {where}; is the agent Service deployed?"
        else:
            detail = "; ".join(skipped) or "no endpoints"
            note = f"no ready agents in the EndpointSlices labelled {where} ({detail})"
    return _Found(list(targets.values()), note=note, extra=skipped if targets else [])


def _pick_port(ports: Iterable[EndpointPort], section: DiscoverySection) -> int:
    usable = [p for p in ports if p.port is not None and (p.protocol or "TCP") == "TCP"]
    for port in usable:
        if port.name == section.port_name:
            return int(port.port or section.agent_port)
    return int(usable[0].port or section.agent_port) if usable else section.agent_port


# --- construction and helpers -----------------------------------------------------------------


def make_discovery(section: DiscoverySection) -> Discovery:
    """The discovery ``section.mode`` names. Sends nothing; static entries are checked here."""
    kinds: dict[str, type[Discovery]] = {
        "dns": DnsDiscovery,
        "endpointslices": EndpointSliceDiscovery,
        "static": StaticDiscovery,
    }
    return kinds[section.mode](section)


def _sort_key(target: AgentTarget) -> tuple[str, int, str, int]:
    family: int = 9
    text = target.address
    with contextlib.suppress(ValueError):
        ip = ipaddress.ip_address(target.address)
        family, text = ip.version, ip.exploded
    return (target.node or "", family, text, target.port)
