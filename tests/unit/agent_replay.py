"""In-process agents that replay answers recorded from real lab agents (data/agent_answers/).

:class:`ReplayAgent` is a small ASGI app answering each path with a recording (its ``node``
renamed to the agent's own); :class:`Agents` routes an ``httpx`` client's requests to the
replay agents by ``host:port`` and everything else to the network (a closed port is really
closed). Mount it with an ``AgentClient``'s (or ``AggregatorState``'s) ``transport`` parameter.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

ANSWERS = Path(__file__).parent / "data" / "agent_answers"


@cache
def _recorded(name: str) -> tuple[int, str]:
    recording = json.loads((ANSWERS / f"{name}.json").read_text())
    return int(recording["status"]), json.dumps(recording["body"])


def recorded(name: str) -> tuple[int, Any]:
    """The status and JSON body of the recording ``name`` (a fresh copy)."""
    status, body = _recorded(name)
    return status, json.loads(body)


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ReplayAgent:
    """Answers ``routes[path]``: a recording's name, ``"hang"`` (never answers) or
    ``"garbage"`` (an HTML page with 200); anything else 404 like an agent."""

    node: str
    routes: dict[str, str]
    added: dict[str, Any] = field(default_factory=dict)  # fields a newer agent would add
    seen: list[Seen] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        request = Request(scope, receive)
        self.seen.append(
            Seen(
                request.method,
                request.url.path,
                request.url.query,
                dict(request.headers),
                await request.body(),
            )
        )
        kind = self.routes.get(request.url.path)
        if kind == "hang":
            await asyncio.Event().wait()
        if kind == "garbage":
            response = Response(b"<html>not an agent</html>", 200, media_type="text/html")
        elif kind is None:
            body = {"error": "not_found", "message": "no such endpoint"}
            response = Response(json.dumps(body), 404, media_type="application/json")
        else:
            status, answer = recorded(kind)
            if isinstance(answer, dict) and "node" in answer:
                answer |= {"node": self.node, **self.added}
            response = Response(json.dumps(answer), status, media_type="application/json")
        await response(scope, receive, send)


class Agents(httpx.AsyncBaseTransport):
    """Requests to ``host:port`` of an in-process agent go to it; others to the network."""

    def __init__(self, agents: dict[str, ReplayAgent]) -> None:
        self.agents = agents
        self._apps = {where: httpx.ASGITransport(app) for where, app in agents.items()}
        self._network = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        where = f"{request.url.host}:{request.url.port}"
        transport = self._apps.get(where, self._network)
        return await transport.handle_async_request(request)

    async def aclose(self) -> None:
        await self._network.aclose()
