"""Everything one node agent holds: settings, token, rate limit, metrics, the runner, what it
learnt of its runtime and registries — and the background work the app's lifespan runs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, Literal, TypeVar

from agent.credentials import Credential, Keyring
from agent.cri import CriClient, RuntimeUnavailable, connect
from agent.node.metrics import AgentMetrics
from agent.node.models import ConnectivityAnswer
from agent.node.runner import PullTestRunner, TestKey, credential_fingerprint
from agent.pulltest import NodeSettings, PullTestRequest, node_name, run_probe
from agent.reference import Reference
from agent.service.auth import TokenAuth
from agent.service.config import Settings
from agent.service.errors import ApiError
from agent.service.ratelimit import RateLimiter

__all__ = ["AgentState", "node_settings_from"]

log = logging.getLogger("pullcheck.agent")

T = TypeVar("T")

_READY_TTL: Final = 5.0  # seconds a readiness answer is reused
# a "not ready" answer is asked again sooner: the agent is ready soon after its runtime is back
_NOT_READY_TTL: Final = 0.5


def node_settings_from(settings: Settings) -> NodeSettings:
    section = settings.agent
    return NodeSettings(
        endpoint=section.runtime_endpoint,
        resolv_conf=Path(section.resolv_conf),
        hosts_file=Path(section.hosts_file),
        registry_config_path=section.registry_config_path,
        ca_file=Path(section.ca_file) if section.ca_file else None,
        probe_timeout=section.probe_timeout,
        host_root=section.host_root,
    )


class AgentState:
    """Everything one agent instance holds (several may share a process, as in benchmarks).

    The :class:`~agent.service.dependencies.ServiceState` of the agent's app.
    """

    def __init__(
        self, settings: Settings, *, node: NodeSettings | None = None, name: str | None = None
    ) -> None:
        self.settings = settings
        self.node_name = name or node_name()
        self.node = dataclasses.replace(
            node or node_settings_from(settings), node_name=self.node_name
        )
        self.auth = TokenAuth(settings.token_file, enabled=settings.auth)
        limits = settings.limits
        self.limiter = RateLimiter(limits.rate_limit_per_minute, limits.rate_limit_burst)
        self.metrics = AgentMetrics(self.node_name)
        self.runner = PullTestRunner(
            self.node,
            concurrency=limits.pull_concurrency,
            queue=limits.pull_queue,
            ttl=limits.result_ttl,
            on_change=lambda active, waiting: self.metrics.set_queue_depth(waiting),
        )
        self.recent: OrderedDict[str, None] = OrderedDict()  # registries seen in allowed tests
        self.connectivity: tuple[float, bytes] | None = None
        self._connectivity_lock = asyncio.Lock()
        self._ready: tuple[float, bool, str] = (0.0, False, "not checked yet")

    def on_rejected(self, path: str, kind: str) -> None:
        """A request refused before its route ran: rate-limited ones count as rejected."""
        if kind == "rate_limited":
            self.metrics.observe_request("rejected")

    def test(
        self,
        ref: Reference,
        mode: Literal["pull", "resolve"],
        timeout: float,
        credential: Credential | None,
        keyring: Keyring | None,
        *,
        keep: bool,
    ) -> tuple[PullTestRequest, TestKey]:
        """The engine request for a test under this agent's guards, and its single-flight key
        (kept pre-pulls and removed-after tests never share a flight)."""
        limits = self.settings.limits
        request = PullTestRequest(
            image=ref.original,
            mode=mode,
            credential=credential,
            keyring=keyring,
            timeout=timeout,
            keep=keep,
            max_image_size=limits.max_image_size,
            min_free_space=limits.min_free_space,
        )
        flight = f"prepull-{mode}" if keep else mode
        return request, TestKey(ref.normalized, flight, credential_fingerprint(credential, keyring))

    # --- the runtime ------------------------------------------------------------------------

    async def cri(self, query: Callable[[CriClient], Awaitable[T]]) -> T:
        async with await connect(
            self.node.endpoint, timeout=self.node.cri_timeout, api_version=self.node.api_version
        ) as client:
            return await query(client)

    async def ask_runtime(self, query: Callable[[CriClient], Awaitable[T]]) -> T:
        """:meth:`cri` for a request: 503 ``runtime_unavailable`` when the runtime is not
        reachable."""
        try:
            return await self.cri(query)
        except RuntimeUnavailable as exc:
            raise ApiError(503, "runtime_unavailable", str(exc)) from None

    async def ready(self) -> tuple[bool, str]:
        checked, ok, reason = self._ready
        if time.monotonic() - checked < (_READY_TTL if ok else _NOT_READY_TTL):
            return ok, reason
        try:
            version = await self.cri(lambda c: c.version())
            ok, reason = True, f"{version.runtime_name} {version.runtime_version}"
        except RuntimeUnavailable as exc:
            ok, reason = False, str(exc)
        self.metrics.set_runtime_up(ok)
        self._ready = (time.monotonic(), ok, reason)
        return ok, reason

    # --- connectivity -----------------------------------------------------------------------

    def remember(self, registry: str) -> None:
        self.recent.pop(registry, None)
        self.recent[registry] = None
        while len(self.recent) > self.settings.agent.recent_registries:
            self.recent.popitem(last=False)

    def registries(self) -> list[str]:
        """Configured registries first, then those seen in recent allowed tests."""
        return list(dict.fromkeys([*self.settings.registries, *reversed(self.recent)]))

    async def probe_connectivity(self) -> bytes:
        """The :class:`ConnectivityAnswer` as JSON, probed again once ``connectivity_ttl``
        passed."""
        async with self._connectivity_lock:
            fresh = self.connectivity
            ttl = self.settings.agent.connectivity_ttl
            if fresh is not None and time.monotonic() - fresh[0] < ttl:
                return fresh[1]
            reports = await asyncio.gather(*(run_probe(r, self.node) for r in self.registries()))
            for report in reports:
                self.metrics.observe_probe_report(report)
            answer = ConnectivityAnswer(node=self.node_name, registries=list(reports))
            body = answer.model_dump_json(indent=2).encode()
            self.connectivity = (time.monotonic(), body)
            return body

    async def connectivity_loop(self, stop: asyncio.Event) -> None:
        """Keep registry metrics fresh without waiting for a caller."""
        interval = max(self.settings.agent.connectivity_ttl, 5.0)
        while not stop.is_set():
            try:
                await self.probe_connectivity()
                await self.ready()
            except Exception:  # a probe never raises; this is a last line of defence
                log.exception("connectivity probe failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
