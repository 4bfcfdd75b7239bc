"""httpcore's ``trace`` extension turned into blackbox-style phases of an HTTP request."""

from __future__ import annotations

import time
import typing
from typing import Any

import httpx

from agent.models import Phase
from agent.probes._classify import classify
from agent.probes._transport import read_capped
from agent.timing import ms_since

__all__ = ["PhaseTrace", "send_traced"]


async def send_traced(
    client: httpx.AsyncClient, request: httpx.Request, phases: list[Phase], label: str = ""
) -> tuple[httpx.Response, bytes]:
    """Send ``request`` and read its body (capped, see :func:`read_capped`); its connection
    phases (:class:`PhaseTrace`, named after ``label``) go to ``phases`` however it ends."""
    trace = PhaseTrace(label)
    request.extensions = {**request.extensions, "trace": trace}
    try:
        response = await client.send(request, stream=True)
        return response, await read_capped(response)
    except (httpx.HTTPError, OSError) as exc:
        trace.close_open(classify(exc)[1])
        raise
    finally:
        phases.extend(trace.phases)


class PhaseTrace:
    """Connection events as phases: ``connect``, ``tls``, ``processing`` (request sent →
    headers received), ``transfer`` (body); pass it as the request's ``trace`` extension."""

    _PHASES: typing.ClassVar[dict[str, str]] = {
        "connection.connect_tcp": "connect",
        "connection.start_tls": "tls",
        "http11.send_request_headers": "processing",
        "http11.receive_response_headers": "processing",
        "http11.receive_response_body": "transfer",
    }

    def __init__(self, label: str = "") -> None:
        self.label = label
        self.phases: list[Phase] = []
        self._open: dict[str, float] = {}

    async def __call__(self, event: str, info: dict[str, Any]) -> None:
        name, _, stage = event.rpartition(".")
        phase = self._PHASES.get(name)
        if phase is None:
            return
        if stage == "started":
            self._open.setdefault(phase, time.monotonic())
            return
        if phase == "processing" and name == "http11.send_request_headers" and stage == "complete":
            return  # processing ends when the response headers arrive
        started = self._open.pop(phase, None)
        if started is None:
            return
        detail = ""
        if stage == "failed":
            detail = classify(info["exception"])[1] if "exception" in info else "failed"
        self._add(phase, stage == "complete", started, detail)

    def close_open(self, detail: str) -> None:
        """Record phases still open when the request failed (e.g. a read timeout)."""
        for phase, started in list(self._open.items()):
            self._add(phase, False, started, detail)
        self._open.clear()

    def _add(self, phase: str, ok: bool, started: float, detail: str) -> None:
        name = f"{self.label} {phase}" if self.label else phase
        self.phases.append(Phase(name=name, ok=ok, duration_ms=ms_since(started), detail=detail))
