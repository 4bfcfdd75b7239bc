"""The aggregator's side of pre-pull jobs: schedules, new nodes, restarts, and the agents.

* Jobs come from a YAML file (a ConfigMap) reloaded on change; a bad file is rejected with the
  reason while the previous jobs keep running.
* A scheduled job starts at its cron time (in its time zone) after a random stagger, so many
  clusters with the same schedule do not hit a registry together; ``on_new_node`` jobs start for
  a node within a tick of its agent appearing and answering ``/readyz``.
* A job covers every node its selector matches among the discovered agents, ready or not. Pulls
  go to ready agents only; the pairs of a node whose agent is not ready (runtime down) or does
  not answer are shown pending with that cause, counted in ``images_total``, and pulled once the
  agent is ready (for a job that has run, or resumed, since this replica started leading).
* Work goes to the agents (``POST /v1/prepull``) through
  :func:`agent.cluster.prepull.scheduler.run_job`, which keeps the node and per-registry caps,
  retries and rate-limit pauses.
* Nothing is persisted: on start every job's state is rebuilt from the nodes' images (CRI
  ListImages through the agents); pairs already present are done, missing ones are pulled, so a
  wave cut short by a restart resumes. Each new run asks the nodes' image lists again, so an
  image removed since (kubelet's image garbage collection) is pulled again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path

from agent.cluster.client import AgentClient, CallFailure
from agent.cluster.discovery import AgentTarget
from agent.cluster.metrics import AggregatorMetrics
from agent.cluster.models import failed_call, unreachable
from agent.cluster.prepull.jobs import JobSource, next_run
from agent.cluster.prepull.models import Job, JobFile, JobStatus, NodeImageStatus, Phase
from agent.cluster.prepull.registry_caps import RegistryCaps
from agent.cluster.prepull.scheduler import run_job, start_delay
from agent.cluster.readiness import AgentReadiness, AgentState
from agent.node.models import PrepullBody, PullOutcome
from agent.reference import parse

__all__ = ["PrepullCoordinator"]

log = logging.getLogger("pullcheck.prepull")

_GRACE = 15.0  # seconds an agent may take beyond a pull's own timeout
_IMAGES_DEADLINE = 30.0  # seconds for one node's image list


def _listed(image: str, present: set[str]) -> bool:
    """``image`` is among a node's references (as written or normalised)."""
    return image in present or parse(image).normalized in present


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class _JobState:
    job: Job
    statuses: dict[tuple[str, str], NodeImageStatus] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    next_run: datetime | None = None
    last_started: str | None = None
    last_finished: str | None = None
    # nodes that were not ready (or not there) when it ran get its images once they are ready
    follow_up: bool = False

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()


class PrepullCoordinator:
    def __init__(
        self,
        *,
        jobs_file: Path,
        missing_ok: bool,
        poll_interval: float,
        tick: float,
        agents: Callable[[], Awaitable[list[AgentTarget]]],
        client: AgentClient,
        label: Callable[[AgentTarget], str],
        readiness: AgentReadiness | None = None,
        max_timeout: float | None = None,
        metrics: AggregatorMetrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.source = JobSource(
            jobs_file, interval=poll_interval, missing_ok=missing_ok, max_timeout=max_timeout
        )
        self.tick = tick
        self._agents = agents
        self._client = client
        self.readiness = readiness if readiness is not None else AgentReadiness(client)
        self._label = label
        self._keys: dict[str, str] = {}  # agent url -> the name its pairs are kept under
        self.metrics = metrics
        self.rng = rng or random.Random()
        self.caps = RegistryCaps()
        self.jobs: dict[str, _JobState] = {}
        self.discovered: dict[str, AgentTarget] = {}  # node name -> agent, every one listed
        self.known: dict[str, AgentTarget] = {}  # node name -> agent, ready at the latest tick
        self._recovered = False

    # --- jobs -------------------------------------------------------------------------------

    def _apply(self, jobs: JobFile) -> None:
        wanted = {job.name: job for job in jobs.jobs}
        for name in list(self.jobs):
            if name not in wanted:
                removed = self.jobs.pop(name)
                if removed.task is not None:
                    removed.task.cancel()
                log.info("prepull job removed", extra={"fields": {"job": name}})
        now = datetime.now(UTC)
        for name, job in wanted.items():
            state = self.jobs.get(name)
            if state is None:
                self.jobs[name] = _JobState(job=job, next_run=next_run(job, now))
                continue
            if state.job != job:
                state.job = job
                state.next_run = next_run(job, now)
                # images or nodes may have changed: drop pairs the job no longer has
                keep = set(job.images)
                for key in [k for k in state.statuses if k[1] not in keep]:
                    del state.statuses[key]  # in place: a running wave writes to this dict
        self._export_all()

    def status(self, name: str, *, nodes: bool = True) -> JobStatus | None:
        state = self.jobs.get(name)
        if state is None:
            return None
        job = state.job
        targets = self._targets(job)
        matched = set(targets)
        counts = {phase.value: 0 for phase in Phase}
        for (node, _image), item in state.statuses.items():
            if node in matched:
                counts[item.phase.value] += 1
        total = len(targets) * len(job.images)
        counts["pending"] += max(0, total - sum(counts.values()))
        entries: list[NodeImageStatus] = []
        if nodes:
            for node in targets:
                for image in job.images:
                    stored = state.statuses.get((node, image))
                    entry = stored if stored is not None else self._waiting(node, image)
                    shown = self._shown(node)
                    entries.append(
                        entry if shown == node else entry.model_copy(update={"node": shown})
                    )
        return JobStatus(
            name=job.name,
            schedule=job.schedule,
            timezone=job.timezone,
            on_new_node=job.on_new_node,
            policy=job.policy,
            running=state.running,
            next_run=state.next_run.isoformat() if state.next_run else None,
            last_started=state.last_started,
            last_finished=state.last_finished,
            images_total=total,
            images_ready=counts["done"],
            paused_registries=self.caps.paused_rfc3339(job.name),
            wave={**counts, "parallel_nodes": job.pacing.parallel_nodes(max(len(targets), 1))},
            nodes=entries,
        )

    def _waiting(self, node: str, image: str) -> NodeImageStatus:
        """A pair with no pull yet: pending, with why its node cannot pull now (if it cannot)."""
        target = self.discovered.get(node)
        failure = self.readiness.failure(target, node) if target is not None else None
        if failure is not None:
            return NodeImageStatus(
                node=node,
                image=image,
                cause=failure.cause,
                summary=failure.summary,
                remedy=failure.remedy,
            )
        if target is not None and self.readiness.get(target).state is AgentState.UNKNOWN:
            return NodeImageStatus(
                node=node, image=image, summary="waiting for the agent's /readyz"
            )
        return NodeImageStatus(node=node, image=image)

    def statuses(self) -> list[JobStatus]:
        return [s for n in sorted(self.jobs) if (s := self.status(n, nodes=False)) is not None]

    # --- nodes ------------------------------------------------------------------------------

    def _targets(self, job: Job) -> list[str]:
        """Nodes the job covers: its selector over every discovered agent, ready or not."""
        names = job.nodes.names
        if job.nodes.labels:  # no discovery mode knows node labels yet: nothing matches
            return []
        return sorted(
            n
            for n in self.discovered
            if any(fnmatchcase(n, g) or fnmatchcase(self._shown(n), g) for g in names)
        )

    def _ready_targets(self, job: Job) -> list[str]:
        return [n for n in self._targets(job) if n in self.known]

    def _key(self, target: AgentTarget) -> str:
        """The name a node's pairs are kept under: the one it was first seen with. DNS discovery
        knows addresses only and the node's name is learnt from an answer later (any cluster
        request); re-keying then would orphan the pairs of a running wave, which never ends."""
        return self._keys.setdefault(target.url, self._label(target))

    def _shown(self, key: str) -> str:
        """The node's name as known now (its learnt name once there is one)."""
        target = self.discovered.get(key)
        return self._label(target) if target is not None else key

    async def _refresh_nodes(self) -> list[str]:
        """Nodes whose agents became ready since the last call (new ones asked at once)."""
        agents = await self._agents()
        current = {self._key(t): t for t in agents}
        for name in [n for n in self.discovered if n not in current]:
            # a node that left the cluster: forget it and its pairs
            for state in self.jobs.values():
                for key in [k for k in state.statuses if k[0] == name]:
                    del state.statuses[key]
        listed = {t.url for t in agents}
        for url in [u for u in self._keys if u not in listed]:
            del self._keys[url]  # back later: named afresh
        self.discovered = current
        await self.readiness.check(self.readiness.due(current.values()))
        ready = {
            name: target
            for name, target in current.items()
            if self.readiness.get(target).state is AgentState.READY
        }
        fresh = [name for name in ready if name not in self.known]
        self.known = ready
        return fresh

    async def _present(self, node: str) -> set[str]:
        """References present on ``node`` (tags and digests, normalised), from ListImages."""
        answer = await self._client.images(self.known[node].url, deadline=_IMAGES_DEADLINE)
        if isinstance(answer, CallFailure):
            return set()
        found: set[str] = set()
        for image in answer.images:
            found.update(image.repo_tags)
            found.update(image.repo_digests)
        return found

    async def _recover(self, nodes: list[str]) -> None:
        """Mark pairs present on ``nodes`` done, for every job; start jobs with work left."""
        present = dict(
            zip(nodes, await asyncio.gather(*(self._present(n) for n in nodes)), strict=True)
        )
        for state in self.jobs.values():
            for node in self._targets(state.job):
                if node not in present:
                    continue
                for image in state.job.images:
                    key = (node, image)
                    if key in state.statuses and state.statuses[key].phase is Phase.DONE:
                        continue
                    if _listed(image, present[node]):
                        state.statuses[key] = NodeImageStatus(
                            node=node,
                            image=image,
                            phase=Phase.DONE,
                            skipped=True,
                            summary="present on the node",
                            updated_at=_now_iso(),
                        )
            self._export(state)

    # --- running ----------------------------------------------------------------------------

    def start(self, name: str, nodes: list[str] | None = None, *, delay: float = 0.0) -> bool:
        """Start a run of job ``name`` (on ``nodes``, default all matching); False if running."""
        state = self.jobs.get(name)
        if state is None or state.running:
            return False
        targets = self._ready_targets(state.job) if nodes is None else nodes
        state.task = asyncio.create_task(self._run(state, targets, delay))
        return True

    async def _run(self, state: _JobState, nodes: list[str], delay: float) -> None:
        job = state.job
        if delay > 0:
            await asyncio.sleep(delay)
        state.last_started = _now_iso()
        state.follow_up = True
        log.info("prepull run started", extra={"fields": {"job": job.name, "nodes": len(nodes)}})
        # a new run pulls again what failed or is missing on its nodes: done pairs whose image
        # the node no longer lists (kubelet's image garbage collection) included; with Always
        # every pair goes to the agent, which re-checks the tag's digest (and skips if current)
        chosen = set(nodes)
        asked = [n for n in nodes if n in self.known]
        present = dict(
            zip(asked, await asyncio.gather(*(self._present(n) for n in asked)), strict=True)
        )
        for key, item in list(state.statuses.items()):
            node, image = key
            if node not in chosen:
                continue
            gone = node in present and not _listed(image, present[node])
            if item.phase is not Phase.DONE or job.policy == "Always" or gone:
                del state.statuses[key]
        try:
            await run_job(
                job,
                nodes,
                self._executor,
                rng=self.rng,
                statuses=state.statuses,
                on_update=lambda item: self._updated(state, item),
                registry_caps=self.caps,
            )
        finally:
            state.last_finished = _now_iso()
            self._export(state)
            summary = self.status(job.name, nodes=False)
            wave = summary.wave if summary is not None else {}
            log.info("prepull run finished", extra={"fields": {"job": job.name, **wave}})

    def _updated(self, state: _JobState, item: NodeImageStatus) -> None:
        if self.metrics is not None and item.phase in (Phase.DONE, Phase.FAILED):
            self.metrics.observe_prepull_pull(
                state.job.name, "success" if item.phase is Phase.DONE else "failure", item.cause
            )
        self._export(state)

    def _export(self, state: _JobState) -> None:
        if self.metrics is None:
            return
        status = self.status(state.job.name, nodes=False)
        if status is not None:
            self.metrics.set_prepull(
                status.name, status.images_ready, status.images_total, status.wave
            )

    def _export_all(self) -> None:
        for state in self.jobs.values():
            self._export(state)

    async def _executor(self, node: str, image: str, job: Job) -> PullOutcome:
        target = self.known.get(node)
        if target is None:
            listed = self.discovered.get(node)
            failure = self.readiness.failure(listed, node) if listed is not None else None
            gone = failure or unreachable(node, "", "discovery no longer lists its agent")
            return gone.outcome()
        docker_config: str | None = None
        if job.docker_config:
            try:
                docker_config = Path(job.docker_config).read_text()
            except OSError as exc:
                return PullOutcome(
                    ok=False,
                    cause="unauthorized",
                    summary=f"docker_config {job.docker_config}: {exc.strerror}",
                )
        body = PrepullBody(
            image=image, policy=job.policy, timeout=job.timeout, docker_config=docker_config
        )
        answer = await self._client.prepull(target.url, body, deadline=job.timeout + _GRACE)
        if isinstance(answer, CallFailure):
            return failed_call(node, target.url, answer).outcome()
        return answer

    async def run(self, stop: asyncio.Event) -> None:
        """Reload jobs, recover state, fire schedules and new-node runs until ``stop``."""
        self.source.check_now()
        self._apply(self.source.current)
        watcher = asyncio.create_task(self.source.run(stop, self._apply))
        try:
            while not stop.is_set():
                try:
                    await self._tick()
                except Exception:  # one bad tick must not end the jobs
                    log.exception("prepull tick failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.tick)
        finally:
            watcher.cancel()
            for state in self.jobs.values():
                if state.task is not None:
                    state.task.cancel()
            await asyncio.gather(
                watcher,
                *(s.task for s in self.jobs.values() if s.task is not None),
                return_exceptions=True,
            )

    async def _tick(self) -> None:
        fresh = await self._refresh_nodes()
        if fresh:
            await self._recover(fresh)
        first = not self._recovered and bool(self.known)
        if first:
            self._recovered = True
            # after a restart (or a change of leader) a job whose images are on some nodes but
            # not all was cut short mid-wave: it resumes; one with nothing anywhere has not run
            # yet and waits for its schedule
            for state in self.jobs.values():
                if any(s.phase is Phase.DONE for s in state.statuses.values()):
                    state.follow_up = True
        now = datetime.now(UTC)
        for name, state in self.jobs.items():
            if state.next_run is not None and now >= state.next_run:
                state.next_run = next_run(state.job, now)
                if not self.start(name, delay=start_delay(state.job, self.rng)):
                    log.info(
                        "scheduled run skipped: still running", extra={"fields": {"job": name}}
                    )
        for name, state in self.jobs.items():
            # ready nodes the job has not covered yet: new ones for on_new_node jobs, and for a
            # job that has run (or resumed) those that were not ready or not there back then
            if state.running or not (state.job.on_new_node or state.follow_up):
                continue
            pending = [n for n in self._ready_targets(state.job) if self._node_missing(state, n)]
            if pending:
                self.start(name, pending)

    def _node_missing(self, state: _JobState, node: str) -> bool:
        return any((node, image) not in state.statuses for image in state.job.images)
