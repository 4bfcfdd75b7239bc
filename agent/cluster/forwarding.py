"""Asking the leading replica: the pre-pull job routes of a replica that does not lead.

Scheduled work runs on one elected replica (:mod:`agent.cluster.leader`); the others forward
``/v1/prepull/jobs…`` to the URL it publishes, with the aggregator's bearer token, a bounded
wait and the header :data:`FORWARDED_BY` (a request that carries it is never forwarded again).
The leader's answer is passed on typed, with its status, naming the leader and the replica that
forwarded it. 503 ``no_leader`` when no replica leads (yet), 503 ``leader_unreachable`` when the
leader gives no usable answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final, Literal, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from agent.cluster.client import CallFailure, FailureKind, JsonClient
from agent.cluster.leader import Election
from agent.cluster.models import ForwardedError
from agent.service.errors import ApiError, ErrorAnswer

__all__ = ["FORWARDED_BY", "LeaderClient"]

#: set on forwarded requests, to the forwarding replica's identity
FORWARDED_BY: Final = "X-Pullcheck-Forwarded-By"
_TIMEOUT: Final = 10.0  # seconds a non-leader waits for the leader's answer
_LEADER_URL: Final = re.compile(r"^https?://[^/\s?#@]+$")  # a base URL, no credentials, no path
_RETRY: Final = {"Retry-After": "2"}

A = TypeVar("A", bound=BaseModel)


class LeaderClient(JsonClient):
    """Forwards a request to the leader of ``election`` (a few connections: job routes only)."""

    def __init__(
        self,
        election: Election,
        *,
        token: Callable[[], str | None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(token=token, max_connections=4, transport=transport)
        self.election = election

    async def forward(
        self,
        method: Literal["GET", "POST"],
        path: str,
        answer: type[A],
        *,
        forwarded_by: str | None,
    ) -> tuple[int, A | ForwardedError]:
        """The leader's status and answer to ``method path`` (``answer`` when it succeeded);
        ``forwarded_by``: the header of the request being answered, if it had one."""
        me = self.election.identity
        if forwarded_by:
            message = f"{me} does not lead the scheduled work (any more): retry"
            raise ApiError(503, "no_leader", message, _RETRY)
        leader = self.election.leader()
        if leader is None or leader.identity == me:
            why = f" ({self.election.last_error})" if self.election.last_error else ""
            message = f"no replica leads the scheduled work yet{why}: retry"
            raise ApiError(503, "no_leader", message, _RETRY)
        if not _LEADER_URL.match(leader.url):
            message = f"the leader {leader.identity} published no usable URL ({leader.url!r})"
            raise ApiError(503, "no_leader", message, _RETRY)
        where = f"the leader {leader.identity} at {leader.url}"
        reply = await self.request(
            method, f"{leader.url}{path}", deadline=_TIMEOUT, headers={FORWARDED_BY: me}
        )
        if isinstance(reply, CallFailure):
            if reply.kind is FailureKind.TIMEOUT:
                message = f"{where} did not answer within {_TIMEOUT:g} s"
            else:
                message = f"{where}: {reply.reason}"
            raise ApiError(503, "leader_unreachable", message, _RETRY)
        try:
            if reply.status < 400:
                passed = answer.model_validate_json(reply.body)
                return reply.status, passed.model_copy(update={"forwarded_by": me})
            error = ErrorAnswer.model_validate_json(reply.body)
        except ValidationError:
            message = f"{where} answered HTTP {reply.status}, not a pullcheck aggregator's answer"
            raise ApiError(503, "leader_unreachable", message, _RETRY) from None
        forwarded = ForwardedError(
            error=error.error, message=error.message, leader=leader.identity, forwarded_by=me
        )
        return reply.status, forwarded
