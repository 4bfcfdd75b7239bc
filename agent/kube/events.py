"""Kubernetes Events on an object, counted rather than repeated, also across restarts.

:class:`EventRecorder` writes a ``core/v1`` Event (what ``kubectl describe`` and ``kubectl get
events`` show) whose name is derived from the object's uid, a key (e.g. the container) and the
message: the same verdict on the same object is one Event whose ``count`` and
``lastTimestamp`` go up (a merge patch), as kubelet's event correlator does, and a restarted
process finds its Event again through the name (create → 409 AlreadyExists → read it, patch
it) instead of writing a twin. A different message is a new Event. The text is the caller's:
it must hold no secret (the diagnosis' cause, summary and remedy never do).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, Literal

from lightkube import ApiError, AsyncClient
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event
from lightkube.types import PatchType

__all__ = ["EventRecorder", "Involved"]

log = logging.getLogger("pullcheck.kube.events")

_MESSAGE_LIMIT: Final = 1024  # bytes: the apiserver refuses a longer note (validation)
_NAME_PREFIX: Final = 200  # characters of the object's name kept in the Event's name
_REMEMBERED: Final = 4096  # Events whose count is known without reading them


@dataclass(frozen=True)
class Involved:
    """The object an Event is about."""

    kind: str
    namespace: str
    name: str
    uid: str
    api_version: str = "v1"
    field_path: str = ""  # e.g. spec.containers{web}


class EventRecorder:
    """Writes Events through ``client`` as ``component`` (``reportingComponent``) from
    ``instance`` (``reportingInstance``: this replica)."""

    def __init__(self, client: AsyncClient, *, component: str, instance: str) -> None:
        self._client = client
        self._component = component
        self._instance = instance[:128]
        self._counts: OrderedDict[tuple[str, str], int] = OrderedDict()

    async def record(
        self,
        involved: Involved,
        *,
        reason: str,
        message: str,
        key: str = "",
        type: Literal["Normal", "Warning"] = "Warning",
    ) -> Literal["created", "counted"]:
        """Create the Event, or count one more of it. Raises lightkube's ``ApiError``."""
        text = _clip_utf8(message, _MESSAGE_LIMIT)
        name = event_name(involved, reason, key, text)
        now = dt.datetime.now(dt.UTC)
        remembered = (involved.namespace, name)
        count = self._counts.get(remembered)
        if count is not None:
            try:
                await self._count(involved.namespace, name, count + 1, now)
                self._remember(remembered, count + 1)
                return "counted"
            except ApiError as exc:
                if exc.status.code != 404:  # expired (the apiserver keeps Events ~1 h): anew
                    raise
        try:
            await self._client.create(self._event(involved, name, reason, text, type, now))
            self._remember(remembered, 1)
            return "created"
        except ApiError as exc:
            if exc.status.code != 409:
                raise
        stored = await self._client.get(Event, name, namespace=involved.namespace)
        count = (stored.count or 1) + 1
        await self._count(involved.namespace, name, count, now)
        self._remember(remembered, count)
        return "counted"

    def _remember(self, key: tuple[str, str], count: int) -> None:
        self._counts.pop(key, None)
        self._counts[key] = count
        while len(self._counts) > _REMEMBERED:
            self._counts.popitem(last=False)

    async def _count(self, namespace: str, name: str, count: int, now: dt.datetime) -> None:
        patch = {"count": count, "lastTimestamp": _time(now)}
        await self._client.patch(
            Event, name, patch, namespace=namespace, patch_type=PatchType.MERGE
        )

    def _event(
        self, involved: Involved, name: str, reason: str, message: str, type: str, now: dt.datetime
    ) -> Event:
        return Event(
            metadata=ObjectMeta(name=name, namespace=involved.namespace),
            involvedObject=ObjectReference(
                kind=involved.kind,
                namespace=involved.namespace,
                name=involved.name,
                uid=involved.uid,
                apiVersion=involved.api_version,
                fieldPath=involved.field_path or None,
            ),
            reason=reason,
            message=message,
            type=type,
            count=1,
            firstTimestamp=now.replace(microsecond=0),
            lastTimestamp=now.replace(microsecond=0),
            source=EventSource(component=self._component),
            reportingComponent=self._component,
            reportingInstance=self._instance,
        )


def event_name(involved: Involved, reason: str, key: str, message: str) -> str:
    """``<object name>.<16 hex>``: one name per object uid, reason, key and message."""
    digest = hashlib.sha256("\0".join((involved.uid, reason, key, message)).encode()).hexdigest()[
        :16
    ]
    return f"{involved.name[:_NAME_PREFIX].rstrip('.-')}.{digest}"


def _clip_utf8(text: str, limit: int) -> str:
    """At most ``limit`` bytes of UTF-8 (Go's ``len``), never half a character."""
    return text.encode()[:limit].decode(errors="ignore")


def _time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
