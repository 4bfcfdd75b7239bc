"""Automatic diagnosis: every container failing to pull, tested once per image x node x pull
secrets, its verdict published as an Event on the pod, in metrics and on ``GET /v1/pods``.

The watch (:class:`~agent.kube.watch.Reflector`) feeds :meth:`PodDiagnoser.observe`, which keeps
a small record per failing container (never the pod): a pod whose containers no longer wait on a
pull drops out, as does a deleted one or one a re-list no longer shows. Work is keyed by what
decides a verdict before any secret is read — namespace, image, node and the names of the pod's
pull secrets — so the replicas of one Deployment on one node are one piece of work; a worker
reads one of those pods and its secrets, and the verdict comes from :class:`VerdictCache`, keyed
by image, node and a keyed hash of the credentials: one test per TTL however many pods wait.
Fresh tests pass a cluster-wide rate limit, at most ``max_concurrent_tests`` at once (the
workers); at most ``max_pending`` pieces of work wait, at most ``max_tracked`` containers are
tracked (the oldest go first).

An Event is written when a container's verdict is new or changed, and again (counted on the same
Event, :class:`~agent.kube.events.EventRecorder`) at most once per ``dedup_ttl``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final, Protocol

import httpx2
from lightkube import ApiError
from lightkube.resources.core_v1 import Pod

from agent.cluster.pods.dedup import DedupKey, VerdictCache
from agent.cluster.pods.metrics import PodMetrics
from agent.cluster.pods.models import PodDiagnosis
from agent.cluster.pods.pulltests import NodeTester
from agent.cluster.pods.tracking import ContainerKey, Entry, Tracked, Verdict, WorkKey
from agent.kube.client import KubeApiError
from agent.kube.events import EventRecorder, Involved
from agent.kube.watch import Change, Listed, Synced
from agent.models import PullTestResult
from agent.node.runner import credential_fingerprint
from agent.pods.secrets import MAX_SECRETS, SecretReader, SecretsCheck, pull_secrets
from agent.pods.waiting import PodKey, field_path, node_of, pod_key, waiting_on_pull
from agent.reference import InvalidReference, parse
from agent.service.config import PodDiagnosisSection
from agent.service.logs import log_event
from agent.service.ratelimit import RateLimiter

__all__ = ["REASON", "PodDiagnoser", "PodReader", "Verdict"]

log = logging.getLogger("pullcheck.aggregator.pods")

#: the Event reason of a verdict
REASON: Final = "PullcheckDiagnosis"
_TEXT_LIMIT: Final = 400  # characters of a summary or remedy in an Event (the message ≤ 1 KiB)
_SECRET_CAUSES: Final = frozenset({"unauthorized", "forbidden", "repository_not_found"})


class PodReader(SecretReader, Protocol):
    """What the diagnosis reads (:class:`agent.kube.client.KubeReader` is one)."""

    async def get_pod(self, namespace: str, name: str) -> Pod: ...


class PodDiagnoser:
    """One leader's diagnosis state (rebuilt each term). ``recorder`` None: no Events."""

    def __init__(
        self,
        section: PodDiagnosisSection,
        *,
        reader: PodReader,
        tester: NodeTester,
        recorder: EventRecorder | None,
        metrics: PodMetrics,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._section = section
        self._reader = reader
        self._tester = tester
        self._recorder = recorder
        self._metrics = metrics
        self._clock = clock
        self._cache: VerdictCache[Verdict] = VerdictCache(section.dedup_ttl)
        self._limiter = RateLimiter(section.tests_per_minute, section.max_concurrent_tests)
        self._tracked = Tracked()
        self._pending: OrderedDict[WorkKey, None] = OrderedDict()
        self._wake = asyncio.Event()
        # per watched namespace (None: all), the tracked pods a re-list has shown so far
        self._listing: dict[str | None, set[PodKey]] = {}

    # --- what the watch sees --------------------------------------------------------------

    async def observe(self, item: Listed | Synced | Change, namespace: str | None = None) -> None:
        """The sink of the watch of ``namespace`` (None: every namespace)."""
        if isinstance(item, Listed):
            if item.first:  # a list that failed half-way left what it had seen: start anew
                self._listing.pop(namespace, None)
            seen = self._listing.setdefault(namespace, set())
            for pod in item.objects:
                key = self._observe(pod)
                if key is not None:
                    seen.add(key)
        elif isinstance(item, Synced):
            seen = self._listing.pop(namespace, set())
            for gone in self._tracked.pods(namespace):
                if gone not in seen:
                    self._drop_pod(gone)
        elif item.type == "DELETED":
            key = pod_key(item.object)
            if key is not None:
                self._drop_pod(key)
        else:
            self._observe(item.object)
        self._update_gauge()

    def _observe(self, pod: dict[str, object]) -> PodKey | None:
        """Track the pod's failing containers, drop the others; its key when it has some."""
        key = pod_key(pod)
        if key is None:
            return None
        waiting = waiting_on_pull(pod)
        current = {w.container for w in waiting}
        for container in self._tracked.of_pod(key):
            if container[2] not in current:
                self._tracked.drop(container)  # pulling fine now (or gone from the spec)
        if not waiting:
            return None
        metadata = pod.get("metadata")
        uid = str(metadata.get("uid") or "") if isinstance(metadata, dict) else ""
        node = node_of(pod)
        secrets = _secret_names(pod)
        now = self._clock()
        for item in waiting:
            container = (key.namespace, key.name, item.container)
            work = (key.namespace, item.image, node, secrets)
            entry = self._tracked.get(container)
            if entry is None or (entry.uid, entry.image, entry.node) != (uid, item.image, node):
                entry = Entry(uid, item.image, node, item.reason, item.init, work, now, now)
                self._tracked.put(container, entry)
                self._enqueue(work)
            else:
                retried = item.reason == "ErrImagePull" and entry.reason != "ErrImagePull"
                entry.reason, entry.last_seen = item.reason, now
                self._tracked.seen(container, work)
                if retried or entry.verdict is None:
                    self._enqueue(work)  # kubelet pulled again: is the verdict still right?
        self._tracked.evict(self._section.max_tracked)
        return key

    def _drop_pod(self, key: PodKey) -> None:
        for container in self._tracked.of_pod(key):
            self._tracked.drop(container)

    def _enqueue(self, work: WorkKey) -> None:
        if work in self._pending:
            return
        if len(self._pending) >= self._section.max_pending:
            self._metrics.observe_test("skipped")
            return
        self._pending[work] = None
        self._wake.set()

    def _update_gauge(self) -> None:
        self._metrics.set_failing(self._tracked.causes())

    # --- what GET /v1/pods shows ----------------------------------------------------------

    def diagnoses(self, namespace: str | None = None) -> list[PodDiagnosis]:
        return [
            PodDiagnosis(
                namespace=ns,
                pod=pod,
                container=container,
                image=entry.image,
                node=entry.node,
                reason=entry.reason,
                cause=entry.cause,
                summary=entry.verdict.summary if entry.verdict else "",
                remedy=entry.verdict.remedy if entry.verdict else "",
                first_seen=entry.first_seen,
                last_seen=entry.last_seen,
            )
            for (ns, pod, container), entry in sorted(self._tracked.items())
            if namespace is None or ns == namespace
        ]

    # --- the work -------------------------------------------------------------------------

    async def work(self, stop: asyncio.Event) -> None:
        """``max_concurrent_tests`` workers until ``stop`` is set."""
        workers = [
            asyncio.create_task(self._worker(stop))
            for _ in range(self._section.max_concurrent_tests)
        ]
        try:
            await stop.wait()
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            work, _ = self._pending.popitem(last=False)
            try:
                await self.settle(work)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop the diagnosis; the work is dropped
                log.exception("pod diagnosis failed")

    async def settle(self, work: WorkKey) -> None:
        """Test one piece of work (through the cache) and publish its verdict."""
        _namespace, image, node, _secrets = work
        try:
            pod = await self._one_pod(work)
        except KubeApiError as exc:
            remedy = "give the aggregator this permission (components/pod-diagnosis RBAC)"
            await self._apply(work, _error(image, str(exc), remedy))
            return
        if pod is None:
            return
        secrets = await pull_secrets(pod, self._reader)
        key = DedupKey(_normalized(image), node, credential_fingerprint(None, secrets.keyring))
        verdict, how = await self._cache.get(key, lambda: self._test(node, image, secrets))
        self._metrics.observe_test(how)
        if how == "fresh":
            self._metrics.observe_verdict(None if verdict.ok else verdict.cause, verdict.registry)
            log_event(log, "pod_diagnosis", image=image, node=node, cause=verdict.cause)
        if verdict.cause == "error":
            self._cache.forget(key)  # pullcheck's own trouble, not the pull's: try again later
        await self._apply(work, verdict)

    async def _one_pod(self, work: WorkKey) -> Pod | None:
        """One still existing pod of ``work`` as the API has it now (None: all are gone)."""
        for container in self._tracked.of_work(work):
            try:
                return await self._reader.get_pod(work[0], container[1])
            except KubeApiError as exc:
                if exc.kind != "not_found":
                    raise
                self._drop_pod(PodKey(container[0], container[1]))
        return None

    async def _test(self, node: str, image: str, secrets: SecretsCheck) -> Verdict:
        while (wait := self._limiter.acquire("cluster")) > 0:
            await asyncio.sleep(wait)
        outcome = await self._tester.run(node, image, secrets.keyring)
        if isinstance(outcome, str):
            return _error(image, outcome, "")
        return _verdict(outcome, secrets)

    async def _apply(self, work: WorkKey, verdict: Verdict) -> None:
        now = time.monotonic()
        for container in self._tracked.of_work(work):
            current = self._tracked.get(container)
            if current is None or current.work != work:
                continue  # dropped or changed while an earlier container's Event was written
            entry = self._tracked.judge(container, verdict)
            due = (
                verdict.message != entry.published
                or now - entry.published_at >= self._section.dedup_ttl
            )
            if due and await self._publish(container, entry, verdict):
                entry.published, entry.published_at = verdict.message, now
        self._update_gauge()

    async def _publish(self, container: ContainerKey, entry: Entry, verdict: Verdict) -> bool:
        if self._recorder is None:
            return True
        namespace, pod, name = container
        involved = Involved(
            "Pod", namespace, pod, entry.uid, field_path=field_path(name, entry.init)
        )
        try:
            result = await self._recorder.record(
                involved,
                reason=REASON,
                message=verdict.message,
                key=name,
                type="Normal" if verdict.ok else "Warning",
            )
        except (ApiError, httpx2.HTTPError, OSError) as exc:
            self._metrics.observe_event("failed")
            log_event(
                log,
                "pod_event_failed",
                level=logging.WARNING,
                namespace=namespace,
                pod=pod,
                error=type(exc).__name__,
            )
            return False
        self._metrics.observe_event(result)
        return True


def _secret_names(pod: dict[str, object]) -> tuple[str, ...]:
    spec = pod.get("spec")
    refs = spec.get("imagePullSecrets") if isinstance(spec, dict) else None
    if not isinstance(refs, list):
        return ()
    names = [r.get("name") for r in refs[:MAX_SECRETS] if isinstance(r, dict)]
    return tuple(n for n in names if isinstance(n, str))


def _normalized(image: str) -> str:
    try:
        return parse(image).normalized
    except InvalidReference:
        return image


def _registry(image: str) -> str:
    try:
        return parse(image).domain
    except InvalidReference:
        return ""


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _TEXT_LIMIT else text[: _TEXT_LIMIT - 1] + "…"


def _error(image: str, summary: str, remedy: str) -> Verdict:
    return Verdict("error", _clip(summary), _clip(remedy), _registry(image))


def _verdict(result: PullTestResult, secrets: SecretsCheck) -> Verdict:
    registry = _registry(result.image)
    if result.success:
        summary = f"node {result.node} pulled {result.image} with the pod's pull secrets"
        return Verdict("ok", _clip(summary), "kubelet's next retry should succeed", registry)
    cause = result.cause.value if result.cause is not None else "unknown"
    summary, remedy = result.summary, result.remedy
    matched = secrets.for_image(result.image)
    if matched.status == "no_match" and cause in _SECRET_CAUSES:
        names = ", ".join(secrets.usable)
        summary = (
            f"{summary}; the pod's pull secrets ({names}) have no entry for {matched.registry}"
        )
        remedy = f"{matched.fix} to the pull secret: {matched.detail}"
    problems = [p.detail for p in secrets.problems]
    if problems and cause in _SECRET_CAUSES:
        summary = f"{summary}; pull secrets: {problems[0]}"
    return Verdict(cause, _clip(summary), _clip(remedy), registry)
