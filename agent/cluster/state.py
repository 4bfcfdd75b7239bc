"""Everything one aggregator instance holds: settings, discovery, the agents' client, readiness,
the election, metrics, and the node names learnt from the agents' answers."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Final

import httpx

from agent.cluster.client import AgentClient, AgentTls, CallFailure
from agent.cluster.discovery import AgentTarget, Discovery, kube_client, make_discovery
from agent.cluster.forwarding import LeaderClient
from agent.cluster.leader import Election, make_election
from agent.cluster.metrics import AggregatorMetrics
from agent.cluster.models import (
    ConnectivityEntry,
    NodeConnectivity,
    NodeEntry,
    NodeResult,
    failed_call,
)
from agent.cluster.pods.service import PodService
from agent.cluster.prepull.coordinator import PrepullCoordinator
from agent.cluster.readiness import AgentReadiness
from agent.node.models import PullTestBody
from agent.service.auth import TokenAuth, TokenFileError
from agent.service.config import PrepullSection, Settings
from agent.service.metrics import OTHER
from agent.service.ratelimit import RateLimiter

__all__ = ["AggregatorState"]

log = logging.getLogger("pullcheck.aggregator")

#: the ``endpoint`` labels of the aggregator's requests (the routes' names)
_ENDPOINTS: Final = frozenset(
    {"pulltest", "agents", "prepull", "connectivity", "pods", "openapi", "metrics"}
)


class AggregatorState:
    """One aggregator's state (the app's routes reach it through ``app.state.service``).

    ``transport`` replaces the network to the agents and the leader (tests mount in-process
    agents with ``httpx.ASGITransport``).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        discovery: Discovery | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        section = settings.aggregator
        self.auth = TokenAuth(settings.token_file, enabled=settings.auth)
        self.limiter = RateLimiter(
            settings.limits.rate_limit_per_minute, settings.limits.rate_limit_burst
        )
        self.discovery = discovery or make_discovery(section.discovery)
        self.metrics = AggregatorMetrics()
        self.node_names: dict[str, str] = {}  # agent url → node name learned from its answers
        self.client = AgentClient(
            token=self._token,
            max_connections=section.max_in_flight,
            transport=transport,
            tls=AgentTls(section.agent_tls.ca_file, section.agent_tls.server_name),
            plain_http_credentials=section.allow_plain_http_credentials,
        )
        self.readiness = AgentReadiness(self.client, concurrency=section.max_in_flight)
        self.election: Election = make_election(
            section.leader_election,
            listen=section.listen,
            client=lambda: kube_client(section.discovery),
            default_namespace=section.discovery.namespace,
            on_change=self.metrics.set_leader,
        )
        self.leader_client = LeaderClient(self.election, token=self._token, transport=transport)
        self.prepull: PrepullCoordinator | None = None  # while this replica leads
        self.pods = PodService(
            settings,
            client=self.client,
            targets=self.targets,
            label=self.label,
            registry=self.metrics.registry,
        )

    # --- the service (agent.service.dependencies.ServiceState) ---------------------------------

    def on_rejected(self, path: str, kind: str) -> None:
        """A request refused before its route ran: counted under the route's name."""
        self.metrics.observe_request(_endpoint_of(path), kind)

    def _token(self) -> str | None:
        """The token presented to agents and to the leader (None: auth is off)."""
        if not self.settings.auth:
            return None
        try:
            return self.auth.token()
        except TokenFileError as exc:  # the agents will answer 401, whose remedy names the token
            log.warning("cannot present the token: %s", exc)
            return None

    # --- pre-pull jobs ----------------------------------------------------------------------

    def coordinator(self) -> PrepullCoordinator:
        """A pre-pull coordinator for one term of leadership (its state is rebuilt each term)."""
        prepull = self.settings.aggregator.prepull
        return PrepullCoordinator(
            jobs_file=Path(prepull.jobs_file),
            missing_ok=prepull.jobs_file == PrepullSection().jobs_file,
            poll_interval=prepull.poll_interval,
            tick=prepull.tick,
            max_timeout=self.settings.limits.max_timeout,
            agents=self.discovery.agents,
            readiness=self.readiness,
            client=self.client,
            label=self.label,
            metrics=self.metrics,
        )

    async def run_prepull(self, stop: asyncio.Event) -> None:
        """The pre-pull jobs, for one term of leadership (``while_leading`` runs this)."""
        coordinator = self.prepull = self.coordinator()
        try:
            await coordinator.run(stop)
        finally:
            self.prepull = None

    def leading(self) -> PrepullCoordinator | None:
        """The coordinator when this replica leads; None when the leader is another one."""
        return self.prepull if self.election.leading else None

    async def close(self) -> None:
        await self.pods.aclose()
        await self.client.aclose()
        await self.leader_client.aclose()
        await self.discovery.aclose()

    # --- the nodes --------------------------------------------------------------------------

    def label(self, target: AgentTarget) -> str:
        return target.node or self.node_names.get(target.url) or target.label

    async def targets(self, nodes: set[str] | None) -> tuple[list[AgentTarget], list[str]]:
        """The agents to ask (all, or those of ``nodes``) and the requested nodes no agent is
        known for."""
        agents = await self.discovery.agents()
        if not nodes:
            return agents, []
        unknown = [a for a in agents if not (a.node or a.url in self.node_names)]
        if unknown:  # DNS discovery knows addresses only: ask those agents who they are
            await asyncio.gather(*(self._identify(a) for a in unknown))
        chosen = [a for a in agents if self.label(a) in nodes]
        found = {self.label(a) for a in chosen}
        return chosen, sorted(nodes - found)

    async def _identify(self, target: AgentTarget) -> None:
        answer = await self.client.health(target.url)
        if not isinstance(answer, CallFailure):
            self._learn(target, answer.node)

    def _learn(self, target: AgentTarget, node: str) -> None:
        if node:
            self.node_names[target.url] = node

    async def pulltest_entry(
        self, target: AgentTarget, test: PullTestBody, *, deadline: float, post: bool
    ) -> NodeEntry:
        """``target``'s result for ``test``, or why there is none; never raises."""
        answer = await self.client.pulltest(target.url, test, deadline=deadline, post=post)
        if isinstance(answer, CallFailure):
            return failed_call(self.label(target), target.url, answer)
        self._learn(target, answer.node)
        return NodeResult(**dict(answer), agent=target.url)

    async def connectivity_entry(
        self, target: AgentTarget, *, deadline: float
    ) -> ConnectivityEntry:
        """``target``'s connectivity probes, or why there are none; never raises."""
        answer = await self.client.connectivity(target.url, deadline=deadline)
        if isinstance(answer, CallFailure):
            return failed_call(self.label(target), target.url, answer)
        self._learn(target, answer.node)
        return NodeConnectivity(**dict(answer), agent=target.url)


def _endpoint_of(path: str) -> str:
    """The ``endpoint`` metric label of a request path (the routes' names; anything else is
    ``other``)."""
    parts = path.strip("/").split("/")
    name = parts[1] if parts[0] == "v1" and len(parts) > 1 else parts[0].removesuffix(".json")
    return name if name in _ENDPOINTS else OTHER
