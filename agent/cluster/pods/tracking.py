"""The failing containers the automatic diagnosis tracks, indexed so that each watch event and
each piece of work costs in proportion to its own containers, not to all that are tracked.

:class:`Tracked` keeps the entries in least-recently-seen order (the oldest are evicted first),
an index by pod (namespace, name) — a pod's event touches only its containers — and one by work
key (namespace, image, node, pull secret names) — a verdict reaches only the containers it is
about — and the count of entries per cause (the ``pullcheck_pod_failing_containers`` gauge),
kept as entries come, change and go. Every change goes through its methods, which keep the
three in step; an emptied index entry is removed (bounded memory).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from agent.pods.waiting import PodKey

__all__ = ["PENDING", "ContainerKey", "Entry", "Tracked", "Verdict", "WorkKey"]

#: the cause of an entry not tested yet
PENDING = "pending"

WorkKey = tuple[str, str, str, tuple[str, ...]]  # namespace, image, node, pull secret names
ContainerKey = tuple[str, str, str]  # namespace, pod, container
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Verdict:
    """What a test found for one image on one node with one set of pull secrets."""

    cause: str  # the engine's cause, "ok", or "error" (no test could run)
    summary: str
    remedy: str
    registry: str

    @property
    def ok(self) -> bool:
        return self.cause == "ok"

    @property
    def message(self) -> str:
        """The Event's message: ``cause: summary — remedy``."""
        text = f"{self.cause}: {self.summary}"
        return f"{text} — {self.remedy}" if self.remedy else text


@dataclass
class Entry:
    """One failing container. ``work`` and ``verdict`` change through :class:`Tracked` only."""

    uid: str
    image: str
    node: str
    reason: str
    init: bool
    work: WorkKey
    first_seen: dt.datetime
    last_seen: dt.datetime
    verdict: Verdict | None = None
    published: str = ""  # the message of the last Event written
    published_at: float = 0.0  # monotonic

    @property
    def cause(self) -> str:
        return self.verdict.cause if self.verdict is not None else PENDING


class Tracked:
    """Entries by container, oldest first, with their pod and work indexes and cause counts."""

    def __init__(self) -> None:
        self._entries: OrderedDict[ContainerKey, Entry] = OrderedDict()
        self._by_pod: dict[PodKey, dict[ContainerKey, None]] = {}
        self._by_work: dict[WorkKey, dict[ContainerKey, None]] = {}
        self._causes: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, container: ContainerKey) -> Entry | None:
        return self._entries.get(container)

    def put(self, container: ContainerKey, entry: Entry) -> None:
        """Track ``entry`` (replacing what the container had) as the most recently seen."""
        self.drop(container)
        self._entries[container] = entry
        self._by_pod.setdefault(PodKey(container[0], container[1]), {})[container] = None
        self._by_work.setdefault(entry.work, {})[container] = None
        self._causes[entry.cause] += 1

    def seen(self, container: ContainerKey, work: WorkKey) -> None:
        """The container was seen again (most recently seen now), its work key maybe new."""
        entry = self._entries[container]
        self._entries.move_to_end(container)
        if work != entry.work:
            _unindex(self._by_work, entry.work, container)
            entry.work = work
            self._by_work.setdefault(work, {})[container] = None

    def judge(self, container: ContainerKey, verdict: Verdict) -> Entry:
        entry = self._entries[container]
        self._count(entry.cause, -1)
        entry.verdict = verdict
        self._causes[entry.cause] += 1
        return entry

    def drop(self, container: ContainerKey) -> None:
        entry = self._entries.pop(container, None)
        if entry is None:
            return
        _unindex(self._by_pod, PodKey(container[0], container[1]), container)
        _unindex(self._by_work, entry.work, container)
        self._count(entry.cause, -1)

    def evict(self, keep: int) -> None:
        """Drop the least recently seen entries until at most ``keep`` are left."""
        while len(self._entries) > keep:
            self.drop(next(iter(self._entries)))

    def of_pod(self, pod: PodKey) -> list[ContainerKey]:
        return list(self._by_pod.get(pod, ()))

    def of_work(self, work: WorkKey) -> list[ContainerKey]:
        """The work's containers, in the order they were first indexed under it."""
        return list(self._by_work.get(work, ()))

    def pods(self, namespace: str | None = None) -> list[PodKey]:
        """The pods with tracked containers (``namespace`` None: all)."""
        return [p for p in self._by_pod if namespace is None or p.namespace == namespace]

    def causes(self) -> dict[str, int]:
        """Tracked entries per cause (``pending``: not tested yet)."""
        return dict(self._causes)

    def sizes(self) -> tuple[int, int, int]:
        """Entries, pods and work keys indexed (an index holds only what is tracked)."""
        return len(self._entries), len(self._by_pod), len(self._by_work)

    def items(self) -> Iterator[tuple[ContainerKey, Entry]]:
        return iter(self._entries.items())

    def _count(self, cause: str, delta: int) -> None:
        self._causes[cause] += delta
        if self._causes[cause] <= 0:
            del self._causes[cause]


def _unindex(index: dict[K, dict[ContainerKey, None]], key: K, container: ContainerKey) -> None:
    """Take ``container`` out of ``index[key]``, and the key out when nothing is left in it."""
    members = index.get(key)
    if members is None:
        return
    members.pop(container, None)
    if not members:
        del index[key]
