"""One leader among the aggregator replicas, for the scheduled work (pre-pull jobs, later watchers).

Leader election over a ``coordination.k8s.io/v1`` Lease with the semantics of client-go's
``tools/leaderelection`` (``leaderelection.go``, ``resourcelock/leaselock.go``):

* The Lease's ``spec`` is the election record: ``holderIdentity``, ``leaseDurationSeconds``,
  ``acquireTime``, ``renewTime``, ``leaseTransitions``; the annotation
  ``pullcheck.dev/leader-url`` tells the other replicas where the holder serves its API.
* **Acquire**: create the Lease when it is absent; take it over when its holder is empty or the
  record has not changed for ``leaseDurationSeconds`` *as measured by this replica's clock since
  it last saw the record change* (client-go's ``observedTime``): the timestamps in the record are
  never compared with the local clock, so clock skew between replicas does not matter. A
  take-over increments ``leaseTransitions``. Tries every ``retry_period`` x [1, 2.2] (client-go's
  jitter factor 1.2).
* **Renew**: the leader writes ``renewTime`` every ``retry_period``; a failed renewal is retried
  every ``retry_period`` until ``renew_deadline`` has passed since the renewal began, and then it
  stops leading. ``lease_duration`` > ``renew_deadline``, so a leader cut off from the API stops
  before any other replica may take over. (A renewal that finds another holder in a valid record
  stops leading at once, rather than polling until the deadline.)
* **Optimistic concurrency**: every write carries the ``metadata.resourceVersion`` last read; a
  ``409 Conflict`` means another replica wrote first: this one lost the race and re-reads. The
  leader first tries its renewal on the record it observed (client-go's fast path) and falls back
  to get-then-update.
* **Release** (client-go's ``ReleaseOnCancel``), on graceful shutdown and only after the work
  guarded by the lease has stopped: ``holderIdentity`` cleared and ``leaseDurationSeconds: 1``, so
  another replica takes over at its next try instead of waiting a whole lease duration.

Like client-go's this is not fencing: a paused leader (SIGSTOP, a long GC) can act on stale
leadership for a moment. The work it guards here (pre-pulls) is idempotent at the agents, which
never pull an image the node already has.

Modes (``aggregator.leader_election.mode``, :func:`make_election`): ``lease`` as above,
``always`` (this process leads without a Lease: a single aggregator outside Kubernetes) and
``auto`` (``lease`` in a pod, else ``always``). :func:`while_leading` runs a piece of background
work (``work(stop)``) for each term this replica leads and stops it when the term ends.

The least RBAC, in the Lease's namespace::

    - apiGroups: ["coordination.k8s.io"]
      resources: ["leases"]
      verbs: ["get", "create", "update"]
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import copy
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

from agent import hostport
from agent.cluster.models import LeaderDetail
from agent.errors import PullcheckError
from agent.service.config import LEASE_JITTER_FACTOR, LeaderElectionSection

__all__ = [
    "JITTER_FACTOR",
    "LEADER_URL_ANNOTATION",
    "AlwaysLeader",
    "Election",
    "LeaderInfo",
    "LeaseElection",
    "LeaseError",
    "LeaseLock",
    "LeaseRecord",
    "advertise_url",
    "default_identity",
    "make_election",
    "while_leading",
]

log = logging.getLogger("pullcheck.leader")

JITTER_FACTOR: Final = LEASE_JITTER_FACTOR  # client-go's wait.JitterUntil factor (acquire)
LEADER_URL_ANNOTATION: Final = "pullcheck.dev/leader-url"
_WORK_GRACE = 10.0  # seconds work may take to stop after its term ends before it is cancelled
_MESSAGE_LIMIT = 300


# --- the record and the lock ------------------------------------------------------------------


@dataclass(frozen=True)
class LeaseRecord:
    """client-go's ``LeaderElectionRecord``, plus the holder's URL."""

    holder: str = ""
    lease_duration: int = 0  # seconds
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    transitions: int = 0
    url: str = ""


@dataclass(frozen=True)
class LeaderInfo:
    identity: str
    url: str


class LeaseError(PullcheckError):
    """The Lease could not be read or written; ``code`` is the API's HTTP status (0: no answer)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class LeaseLock:
    """Get, create and update one Lease, keeping the object last seen (its resourceVersion).

    ``client`` builds the lightkube client and names the API server, on first use; whatever it
    raises (no token file, a bad kubeconfig) becomes a :class:`LeaseError`.
    """

    def __init__(
        self, client: Callable[[], tuple[AsyncClient, str]], namespace: str, name: str
    ) -> None:
        self._factory = client
        self._client: AsyncClient | None = None
        self.namespace = namespace
        self.name = name
        self.server = ""
        self._lease: Lease | None = None

    def describe(self) -> str:
        return f"{self.namespace}/{self.name}"

    async def get(self) -> LeaseRecord | None:
        """The current record; None when the Lease does not exist."""
        try:
            lease = await self._connect().get(Lease, self.name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise self._error("get", exc) from None
        except httpx2.HTTPError as exc:
            raise self._unreachable(exc) from None
        self._lease = lease
        return _record(lease)

    async def create(self, record: LeaseRecord) -> None:
        lease = Lease(
            metadata=ObjectMeta(
                name=self.name,
                namespace=self.namespace,
                annotations=_annotations({}, record),
                labels={"app.kubernetes.io/name": "pullcheck"},
            ),
            spec=_spec(record),
        )
        try:
            self._lease = await self._connect().create(lease)
        except ApiError as exc:
            raise self._error("create", exc) from None
        except httpx2.HTTPError as exc:
            raise self._unreachable(exc) from None

    async def update(self, record: LeaseRecord) -> None:
        """Write ``record`` over the Lease last seen; a 409 means someone else wrote since."""
        if self._lease is None:
            raise LeaseError(f"lease {self.describe()} not read yet: get or create it first")
        lease = copy.deepcopy(self._lease)
        metadata = lease.metadata or ObjectMeta(name=self.name, namespace=self.namespace)
        metadata.annotations = _annotations(metadata.annotations or {}, record)
        lease.metadata = metadata
        lease.spec = _spec(record)
        try:
            self._lease = await self._connect().replace(lease)
        except ApiError as exc:
            raise self._error("update", exc) from None
        except httpx2.HTTPError as exc:
            raise self._unreachable(exc) from None

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _connect(self) -> AsyncClient:
        if self._client is None:
            try:
                self._client, self.server = self._factory()
            except Exception as exc:  # configuration: the message names what is missing
                raise LeaseError(f"lease {self.describe()}: {exc}") from None
        return self._client

    def _error(self, verb: str, exc: ApiError) -> LeaseError:
        status = exc.status
        code = int(status.code or 0)
        text = (
            f"{verb} lease {self.describe()}{f' at {self.server}' if self.server else ''}: "
            f"{code} {status.reason}: {status.message}"
        )[:_MESSAGE_LIMIT]
        if code == 403:
            text += (
                f" (grant get, create and update on leases.coordination.k8s.io in namespace "
                f"{self.namespace} to the aggregator's ServiceAccount)"
            )
        return LeaseError(text, code)

    def _unreachable(self, exc: Exception) -> LeaseError:
        where = self.server or "the API server"
        return LeaseError(f"lease {self.describe()}: {where}: {type(exc).__name__}: {exc}"[:400])


def _micro(moment: datetime) -> datetime:
    """A Lease time is a MicroTime, which the API parses with exactly six fraction digits; the
    client writes datetimes with ``isoformat()``, which drops a zero fraction."""
    return moment if moment.microsecond else moment.replace(microsecond=1)


def _spec(record: LeaseRecord) -> LeaseSpec:
    return LeaseSpec(
        holderIdentity=record.holder or None,
        leaseDurationSeconds=record.lease_duration,
        acquireTime=_micro(record.acquire_time) if record.acquire_time else None,
        renewTime=_micro(record.renew_time) if record.renew_time else None,
        leaseTransitions=record.transitions,
    )


def _annotations(current: dict[str, str], record: LeaseRecord) -> dict[str, str]:
    annotations = {k: v for k, v in current.items() if k != LEADER_URL_ANNOTATION}
    if record.holder and record.url:
        annotations[LEADER_URL_ANNOTATION] = record.url
    return annotations


def _record(lease: Lease) -> LeaseRecord:
    spec = lease.spec or LeaseSpec()
    annotations = (lease.metadata.annotations if lease.metadata else None) or {}
    return LeaseRecord(
        holder=spec.holderIdentity or "",
        lease_duration=int(spec.leaseDurationSeconds or 0),
        acquire_time=spec.acquireTime,
        renew_time=spec.renewTime,
        transitions=int(spec.leaseTransitions or 0),
        url=annotations.get(LEADER_URL_ANNOTATION, ""),
    )


# --- elections --------------------------------------------------------------------------------


class Election(abc.ABC):
    """Who leads: :attr:`leading` for this replica, :meth:`leader` for the cluster's view."""

    mode: Literal["lease", "always"]

    def __init__(
        self, identity: str, url: str, *, on_change: Callable[[bool], None] | None = None
    ) -> None:
        self.identity = identity
        self.url = url
        self.last_error: str | None = None
        self._on_change = on_change
        self._leading = asyncio.Event()
        self._following = asyncio.Event()
        self._following.set()

    @property
    def leading(self) -> bool:
        return self._leading.is_set()

    async def wait_leading(self) -> None:
        await self._leading.wait()

    async def wait_following(self) -> None:
        await self._following.wait()

    @abc.abstractmethod
    def leader(self) -> LeaderInfo | None:
        """The current leader as this replica knows it; None when there is none (or it expired)."""

    @abc.abstractmethod
    async def run(self, stop: asyncio.Event) -> None:
        """Take part until ``stop`` is set (then give the leadership up)."""

    def detail(self) -> LeaderDetail:
        """For /readyz: mode, this replica, the leader, the last error."""
        leader = self.leader()
        return LeaderDetail(
            mode=self.mode,
            identity=self.identity,
            leading=self.leading,
            leader=leader.identity if leader else None,
            leader_url=leader.url if leader else None,
            error=self.last_error,
        )

    def _set_leading(self, leading: bool) -> None:
        if leading == self.leading:
            return
        if leading:
            self._following.clear()
            self._leading.set()
        else:
            self._leading.clear()
            self._following.set()
        log.info(
            "leading the scheduled work" if leading else "stopped leading the scheduled work",
            extra={"fields": {"identity": self.identity, "mode": self.mode}},
        )
        if self._on_change is not None:
            self._on_change(leading)


class AlwaysLeader(Election):
    """Leads for as long as it runs, without a Lease: one aggregator, outside Kubernetes."""

    mode = "always"

    def leader(self) -> LeaderInfo | None:
        return LeaderInfo(self.identity, self.url) if self.leading else None

    async def run(self, stop: asyncio.Event) -> None:
        self._set_leading(True)
        try:
            await stop.wait()
        finally:
            self._set_leading(False)


class LeaseElection(Election):
    """client-go's LeaderElector over a :class:`LeaseLock` (see the module doc)."""

    mode = "lease"

    def __init__(
        self,
        lock: LeaseLock,
        *,
        identity: str,
        url: str,
        lease_duration: int = 15,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        super().__init__(identity, url, on_change=on_change)
        if not lease_duration > renew_deadline > JITTER_FACTOR * retry_period > 0:
            raise ValueError(
                "want lease_duration > renew_deadline > 1.2 x retry_period > 0, got "
                f"{lease_duration:g}, {renew_deadline:g}, {retry_period:g}"
            )
        self.lock = lock
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._clock = clock
        self._now = now
        self._rng = rng or random.Random()
        self.observed: LeaseRecord | None = None
        self.observed_at = 0.0  # clock() when the observed record last changed

    # --- one step -----------------------------------------------------------------------------

    def is_holder(self) -> bool:
        """The record last seen names this replica (client-go's ``IsLeader``)."""
        return self.observed is not None and self.observed.holder == self.identity

    def lease_valid(self) -> bool:
        """The record last seen has changed within its lease duration, by this replica's clock."""
        if self.observed is None:
            return False
        return self.observed_at + self.observed.lease_duration > self._clock()

    def leader(self) -> LeaderInfo | None:
        if self.leading:
            return LeaderInfo(self.identity, self.url)
        record = self.observed
        if record is None or not record.holder or not self.lease_valid():
            return None
        return LeaderInfo(record.holder, record.url)

    async def try_acquire_or_renew(self) -> bool:
        """One attempt to acquire the Lease or, when this replica holds it, renew it."""
        moment = self._now()
        wanted = LeaseRecord(
            holder=self.identity,
            lease_duration=self.lease_duration,
            acquire_time=moment,
            renew_time=moment,
            url=self.url,
        )
        observed = self.observed
        # 1. fast path: the holder renews the record it observed, assuming it is still current
        if observed is not None and self.is_holder() and self.lease_valid():
            renewal = replace(
                wanted, acquire_time=observed.acquire_time, transitions=observed.transitions
            )
            try:
                await self.lock.update(renewal)
            except LeaseError as exc:
                log.info("renewing %s optimistically failed: %s", self.lock.describe(), exc)
            else:
                return self._succeeded(renewal)
        # 2. read the record, or create it
        try:
            current = await self.lock.get()
        except LeaseError as exc:
            return self._failed(exc)
        if current is None:
            try:
                await self.lock.create(wanted)
            except LeaseError as exc:  # 409 AlreadyExists: another replica created it first
                return self._failed(exc)
            return self._succeeded(wanted)
        # 3. a changed record restarts this replica's count of its lease duration
        if current != self.observed:
            self.observed, self.observed_at = current, self._clock()
        if current.holder and self.lease_valid() and not self.is_holder():
            self.last_error = None
            return False  # held by another replica, not expired
        # 4. take it over (or renew it)
        if self.is_holder():
            wanted = replace(
                wanted, acquire_time=current.acquire_time, transitions=current.transitions
            )
        else:
            wanted = replace(wanted, transitions=current.transitions + 1)
        try:
            await self.lock.update(wanted)  # 409 Conflict: another replica won the race
        except LeaseError as exc:
            return self._failed(exc)
        return self._succeeded(wanted)

    async def release(self) -> bool:
        """Give the Lease up (client-go's ``ReleaseOnCancel``): no holder, 1 s duration."""
        if not self.is_holder():
            return True
        moment = self._now()
        released = LeaseRecord(
            lease_duration=1,
            acquire_time=moment,
            renew_time=moment,
            transitions=self.observed.transitions if self.observed else 0,
        )
        try:
            async with asyncio.timeout(self.renew_deadline):
                current = await self.lock.get()  # the latest resourceVersion
                if current is None or current.holder != self.identity:
                    return True  # gone, or another replica's already
                await self.lock.update(released)
        except (LeaseError, TimeoutError) as exc:
            log.warning("releasing lease %s failed: %s", self.lock.describe(), exc)
            return False
        self.observed, self.observed_at = released, self._clock()
        log.info("released lease %s", self.lock.describe())
        return True

    def _succeeded(self, record: LeaseRecord) -> bool:
        self.observed, self.observed_at = record, self._clock()
        self.last_error = None
        return True

    def _failed(self, exc: LeaseError) -> bool:
        if str(exc) != self.last_error:
            log.warning("lease %s: %s", self.lock.describe(), exc)
        self.last_error = str(exc)
        return False

    # --- the loops ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Acquire, renew until the renewal fails or ``stop`` is set, and again; release at the
        end if this replica still holds the Lease."""
        try:
            while not stop.is_set():
                if not await self._acquire(stop):
                    break
                log.info(
                    "acquired lease %s",
                    self.lock.describe(),
                    extra={"fields": {"identity": self.identity}},
                )
                self._set_leading(True)
                await self._renew(stop)
                self._set_leading(False)
        finally:
            self._set_leading(False)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._release_and_close())

    async def _release_and_close(self) -> None:
        try:
            await self.release()
        finally:
            await self.lock.aclose()

    async def _acquire(self, stop: asyncio.Event) -> bool:
        while not stop.is_set():
            if await self._attempt(self.renew_deadline):
                return True
            pause = self.retry_period * (1 + self._rng.random() * JITTER_FACTOR)
            if await _stopped(stop, pause):
                break
        return False

    async def _renew(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            deadline = self._clock() + self.renew_deadline
            renewed = False
            while not stop.is_set():
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                renewed = await self._attempt(remaining)
                if renewed or (self.observed is not None and not self.is_holder()):
                    break  # renewed, or another replica holds it now
                if await _stopped(stop, min(self.retry_period, max(0.0, deadline - self._clock()))):
                    return
            if stop.is_set():
                return
            if not renewed:
                holder = self.observed.holder if self.observed else ""
                log.warning(
                    "lost lease %s: %s",
                    self.lock.describe(),
                    f"now held by {holder}"
                    if holder and holder != self.identity
                    else f"not renewed within {self.renew_deadline:g} s ({self.last_error})",
                )
                return
            if await _stopped(stop, self.retry_period):
                return

    async def _attempt(self, limit: float) -> bool:
        try:
            async with asyncio.timeout(limit):
                return await self.try_acquire_or_renew()
        except TimeoutError:
            self.last_error = f"the API server did not answer within {limit:g} s"
            return False


async def _stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` or until ``stop``; True when stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(0.0, seconds))
    return stop.is_set()


# --- running work while leading ---------------------------------------------------------------


async def while_leading(
    election: Election,
    work: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
    stop: asyncio.Event,
    *,
    name: str,
    grace: float = _WORK_GRACE,
    restart_delay: float = 1.0,
) -> None:
    """Run ``work(term_stop)`` for each term this replica leads, until ``stop`` is set.

    When the term ends (leadership lost) or ``stop`` is set, ``term_stop`` is set and the work has
    ``grace`` seconds to return before it is cancelled. Work that ends on its own (or fails) while
    still leading is started again after ``restart_delay`` seconds.
    """
    while not stop.is_set():
        await _first(election.wait_leading(), stop.wait())
        if stop.is_set():
            return
        term_stop = asyncio.Event()
        task = asyncio.create_task(work(term_stop), name=f"{name} (leading)")
        log.info("starting %s: this replica leads", name)
        await _first(election.wait_following(), stop.wait(), task)
        by_itself = task.done()
        term_stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), grace)
        except TimeoutError:
            log.warning("%s did not stop within %g s: cancelled", name, grace)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        except Exception:
            log.exception("%s failed", name)
        log.info("stopped %s", name)
        if by_itself and election.leading and await _stopped(stop, restart_delay):
            return


async def _first(*waits: Awaitable[Any]) -> None:
    """Wait until one of ``waits`` is done; cancel the others unless they are tasks (work)."""
    futures = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future, given in zip(futures, waits, strict=True):
            if future is not given and not future.done():
                future.cancel()


# --- construction -----------------------------------------------------------------------------


def default_identity() -> str:
    """``$POD_NAME`` (unique among the replicas), else ``<hostname>_<random>`` as client-go's
    examples make it (two processes on one host must not share an identity)."""
    pod = os.environ.get("POD_NAME", "").strip()
    if pod:
        return pod
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:12]}"


def advertise_url(listen: str, scheme: str = "http") -> str:
    """How the other replicas reach this one: ``$POD_IP`` (else the listen host, else the host
    name) and the listen port."""
    host, port = hostport.split(listen)
    pod_ip = os.environ.get("POD_IP", "").strip()
    if pod_ip:
        host = pod_ip
    elif host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return f"{scheme}://{hostport.join(host, port)}"


def make_election(
    section: LeaderElectionSection,
    *,
    listen: str,
    client: Callable[[], tuple[AsyncClient, str]],
    default_namespace: str,
    on_change: Callable[[bool], None] | None = None,
) -> Election:
    """The election ``section.mode`` asks for. Sends nothing.

    ``client`` builds the Kubernetes API client and names its server (called on first use);
    ``default_namespace`` is the Lease's namespace when neither the section nor $POD_NAMESPACE
    names one.
    """
    identity = section.identity or default_identity()
    url = section.advertise_url or advertise_url(listen)
    mode = section.mode
    if mode == "auto":
        mode = "lease" if os.environ.get("KUBERNETES_SERVICE_HOST") else "always"
    if mode == "always":
        return AlwaysLeader(identity, url, on_change=on_change)
    namespace = (
        section.lease_namespace or os.environ.get("POD_NAMESPACE", "").strip() or default_namespace
    )
    lock = LeaseLock(client, namespace, section.lease_name)
    return LeaseElection(
        lock,
        identity=identity,
        url=url,
        lease_duration=section.lease_duration,
        renew_deadline=section.renew_deadline,
        retry_period=section.retry_period,
        on_change=on_change,
    )
