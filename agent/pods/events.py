"""How long and how often a container has failed to get its image, from the pod's Events.

kubelet records one Event per kind of failure and counts repeats in it (``count``,
``firstTimestamp``, ``lastTimestamp``; a newer recorder uses ``series``): ``Failed`` with
``Failed to pull image …`` per failed pull, ``ErrImageNeverPull``, ``InspectFailed`` for a bad
name, ``BackOff`` while it waits. Events expire (one hour by default), so when the pull failures
are gone the back-offs are counted instead.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from lightkube.resources.core_v1 import Event

from agent.pods.waiting import field_path

__all__ = ["History", "history"]

_FAILURES = ("ErrImageNeverPull", "InspectFailed")


@dataclass(frozen=True)
class History:
    failures: int  # failed attempts kubelet recorded (0: no event left)
    first_seen: dt.datetime | None
    last_seen: dt.datetime | None
    from_backoffs: bool = False  # the pull failures expired; back-offs were counted


def _is_failure(event: Event) -> bool:
    if event.reason in _FAILURES:
        return True
    return event.reason == "Failed" and (event.message or "").startswith("Failed to pull image")


def _times(event: Event) -> tuple[dt.datetime | None, dt.datetime | None]:
    first = (
        event.firstTimestamp
        or event.eventTime
        or (event.metadata.creationTimestamp if event.metadata else None)
    )
    last = event.lastTimestamp
    if event.series is not None and event.series.lastObservedTime is not None:
        last = max(filter(None, (last, event.series.lastObservedTime)))
    return first, last or first


def _count(event: Event) -> int:
    if event.series is not None and event.series.count:
        return max(event.series.count, event.count or 0)
    return max(event.count or 1, 1)


def history(events: list[Event], container: str, init: bool) -> History:
    path = field_path(container, init)
    mine = [e for e in events if e.involvedObject.fieldPath == path]
    chosen = [e for e in mine if _is_failure(e)]
    backoffs = not chosen
    if backoffs:
        chosen = [e for e in mine if e.reason == "BackOff"]
    if not chosen:
        return History(0, None, None)
    firsts, lasts = zip(*(_times(e) for e in chosen), strict=True)
    first = min((t for t in firsts if t), default=None)
    last = max((t for t in lasts if t), default=None)
    return History(sum(_count(e) for e in chosen), first, last, backoffs)
