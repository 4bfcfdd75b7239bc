"""Readiness of the discovered agents, as the aggregator last saw it (``GET /readyz``).

Discovery says which agents exist; this says which of them can work now. An agent is

``ready``        its ``/readyz`` answered 200 ``{"ready": true, …}`` (the node's container runtime
                 answers over CRI);
``unready``      it answered ``{"ready": false, "runtime": reason}`` (the runtime is down): the
                 node exists and is waiting;
``unreachable``  no answer (refused, timed out), or not a pullcheck agent's answer;
``unknown``      not asked yet.

:meth:`AgentReadiness.run` keeps it current on every replica: each round it asks the agents
never asked, the not-ready ones every ``recheck`` seconds and the ready ones every
``ready_recheck`` seconds, at most ``concurrency`` at once (an agent caches its own readiness
for 5 s, so a check is cheap). The pre-pull coordinator asks unknown agents at once with
:meth:`AgentReadiness.check`; concurrent checks of one agent share one request. The counts per
state are exported as ``pullcheck_aggregator_agents{state}`` after every round.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from agent.cluster.client import AgentClient, CallFailure
from agent.cluster.discovery import AgentTarget
from agent.cluster.models import AgentState, NodeFailure, not_ready, unreachable

__all__ = ["AgentReadiness", "AgentState", "Readiness"]

_TIMEOUT = 3.0  # seconds for one /readyz
_ROUND = 1.0  # seconds between rounds of run()
_RECHECK = 5.0  # seconds between checks of an agent that is not ready
_READY_RECHECK = 30.0  # seconds between checks of a ready agent
_REASON_LIMIT = 300


@dataclass(frozen=True)
class Readiness:
    state: AgentState = AgentState.UNKNOWN
    reason: str = ""  # why it is not ready, in one line
    checked: float = 0.0  # time.monotonic() of the check; 0.0: never


class AgentReadiness:
    """The latest readiness of each agent, by URL."""

    def __init__(
        self,
        client: AgentClient,
        *,
        concurrency: int = 64,
        timeout: float = _TIMEOUT,
        recheck: float = _RECHECK,
        ready_recheck: float = _READY_RECHECK,
    ) -> None:
        self._client = client
        self._gate = asyncio.Semaphore(concurrency)
        self._timeout = timeout
        self._recheck = recheck
        self._ready_recheck = ready_recheck
        self._seen: dict[str, Readiness] = {}
        self._inflight: dict[str, asyncio.Future[Readiness]] = {}

    def get(self, target: AgentTarget) -> Readiness:
        return self._seen.get(target.url, Readiness())

    def failure(self, target: AgentTarget, node: str) -> NodeFailure | None:
        """Why ``target`` (on ``node``) cannot work now; None when ready or not asked yet."""
        seen = self.get(target)
        if seen.state is AgentState.UNREADY:
            return not_ready(node, target.url, seen.reason)
        if seen.state is AgentState.UNREACHABLE:
            return unreachable(node, target.url, f"/readyz: {seen.reason}")
        return None

    def counts(self, targets: Iterable[AgentTarget]) -> dict[str, int]:
        """``discovered`` plus one count per :class:`AgentState` over ``targets``."""
        found = list(targets)
        counts = {"discovered": len(found), **{state.value: 0 for state in AgentState}}
        for target in found:
            counts[self.get(target).state.value] += 1
        return counts

    def due(self, targets: Iterable[AgentTarget], now: float | None = None) -> list[AgentTarget]:
        """Agents to ask now: never asked, not ready for ``recheck`` s, ready for
        ``ready_recheck`` s."""
        moment = time.monotonic() if now is None else now
        wanted = []
        for target in targets:
            seen = self.get(target)
            if seen.state is AgentState.UNKNOWN:
                wanted.append(target)
                continue
            period = self._ready_recheck if seen.state is AgentState.READY else self._recheck
            if moment - seen.checked >= period:
                wanted.append(target)
        return wanted

    def retain(self, targets: Iterable[AgentTarget]) -> None:
        """Forget agents that discovery no longer lists."""
        keep = {t.url for t in targets}
        for url in [u for u in self._seen if u not in keep]:
            del self._seen[url]

    async def check(self, targets: Iterable[AgentTarget]) -> None:
        """Ask each agent's ``/readyz`` now (one request per agent, however many callers)."""
        await asyncio.gather(*(self._check_one(t) for t in targets))

    async def _check_one(self, target: AgentTarget) -> Readiness:
        running = self._inflight.get(target.url)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[Readiness] = asyncio.get_running_loop().create_future()
        self._inflight[target.url] = future
        try:
            async with self._gate:
                seen = await self._ask(target)
            self._seen[target.url] = seen
            future.set_result(seen)
            return seen
        except asyncio.CancelledError:
            future.cancel()  # callers sharing this check see the cancellation too
            raise
        except Exception as exc:  # a bug: every caller gets it
            future.set_exception(exc)
            future.exception()  # retrieved here, so a lone caller is not "never retrieved"
            raise
        finally:
            del self._inflight[target.url]

    async def _ask(self, target: AgentTarget) -> Readiness:
        answer = await self._client.ready(target.url, deadline=self._timeout)
        if isinstance(answer, CallFailure):
            return self._seen_now(AgentState.UNREACHABLE, answer.reason)
        if answer.status == 200 and answer.answer.ready:
            return self._seen_now(AgentState.READY, "")
        runtime = answer.answer.runtime or "no reason given"
        return self._seen_now(AgentState.UNREADY, f"HTTP {answer.status}: {runtime}")

    @staticmethod
    def _seen_now(state: AgentState, reason: str) -> Readiness:
        text = " ".join(reason.split())[:_REASON_LIMIT]
        return Readiness(state, text, time.monotonic())

    async def run(
        self,
        stop: asyncio.Event,
        agents: Callable[[], Awaitable[list[AgentTarget]]],
        export: Callable[[dict[str, int]], None],
        *,
        interval: float = _ROUND,
    ) -> None:
        """Until ``stop``: each round, ask the agents that are due and ``export`` the counts."""
        while not stop.is_set():
            targets = await agents()
            self.retain(targets)
            await self.check(self.due(targets))
            export(self.counts(targets))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
