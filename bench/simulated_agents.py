"""Many lightweight simulated pullcheck agents, each on its own loopback port, in one process.

Used by ``bench/bench_aggregator_1000.py``, which starts several of these processes so that the
aggregator under test shares no process (and little CPU) with its agents. Each agent answers
like a real one, from the answers recorded from real lab agents
(``tests/unit/data/agent_answers/``, its ``node`` replaced by the agent's own):

``GET /healthz``, ``GET /readyz``       at once (a real agent caches its readiness);
``GET|POST /v1/pulltest``              the recorded resolve result, after the agent's delay;
``GET /v1/connectivity``               the recorded probes, after the agent's delay;
anything else                          404 ``{"error": "not_found", …}``.

A request without the bench's bearer token gets 401 like a real agent's. Connections are kept
alive and dropped after 5 s idle (uvicorn's default). Kinds of agent (``--spec``, a JSON list of
``{"node", "kind", "delay", "jitter"}``):

``answer``   answers after ``delay`` ± ``jitter`` seconds (uniform, drawn per request);
``closed``   its port is bound but not listening: every connection is refused;
``hung``     accepts and reads, never answers.

``python bench/simulated_agents.py --spec agents.json --worker 0 --workers 4 --token-file T``
serves the agents ``i`` of the spec with ``i % workers == worker`` and prints one line
``READY node=port …`` once they all listen; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

ANSWERS: Final = Path(__file__).resolve().parent.parent / "tests/unit/data/agent_answers"
_IDLE: Final = 5.0  # seconds before an idle kept-alive connection is closed (uvicorn's default)
_MAX_HEAD: Final = 64 * 1024
_RECORDED: Final = {
    "/healthz": ("healthz", False),
    "/readyz": ("readyz", False),
    "/v1/pulltest": ("pulltest-good-resolve", True),
    "/v1/connectivity": ("connectivity", True),
}


@dataclass(frozen=True)
class Spec:
    node: str
    kind: str  # answer | closed | hung
    delay: float = 0.0
    jitter: float = 0.0


def _response(status: int, body: bytes) -> bytes:
    reason = {200: "OK", 401: "Unauthorized", 404: "Not Found", 503: "Service Unavailable"}
    head = (
        f"HTTP/1.1 {status} {reason.get(status, 'Status')}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _error(status: int, kind: str, message: str) -> bytes:
    return _response(status, json.dumps({"error": kind, "message": message}).encode())


def _answers(node: str) -> dict[str, tuple[bytes, bool]]:
    """path → (the whole HTTP response, whether it waits for the agent's delay)."""
    answers = {}
    for path, (name, delayed) in _RECORDED.items():
        recording = json.loads((ANSWERS / f"{name}.json").read_text())
        body: dict[str, Any] = recording["body"]
        if "node" in body:
            body["node"] = node
        encoded = json.dumps(body, separators=(",", ":")).encode()
        answers[path] = (_response(int(recording["status"]), encoded), delayed)
    return answers


class _Connection(asyncio.Protocol):
    """One kept-alive connection to one simulated agent: one request at a time."""

    def __init__(self, agent: _Agent) -> None:
        self._agent = agent
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._busy = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > _MAX_HEAD + self._agent.max_body:
            self._close()
            return
        self._next()

    def _next(self) -> None:
        if self._busy or self._transport is None:
            return
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buffer[:end]).decode("latin-1")
        lines = head.split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        if len(self._buffer) < end + 4 + length:
            return  # the body is still coming
        del self._buffer[: end + 4 + length]
        parts = lines[0].split(" ")
        path = parts[1].split("?", 1)[0] if len(parts) == 3 else ""
        self._busy = True
        if self._timer is not None:
            self._timer.cancel()
        if self._agent.spec.kind == "hung":
            return  # reads, never answers
        answer, delay = self._agent.answer(path, headers.get("authorization", ""))
        if delay > 0:
            self._loop.call_later(delay, self._send, answer)
        else:
            self._send(answer)

    def _send(self, answer: bytes) -> None:
        if self._transport is None:
            return
        self._transport.write(answer)
        self._busy = False
        self._idle()
        self._next()

    def _idle(self) -> None:
        self._timer = self._loop.call_later(_IDLE, self._close)

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class _Agent:
    """One simulated agent: its spec and its precomputed answers."""

    def __init__(self, spec: Spec, token: str, rng: random.Random) -> None:
        self.spec = spec
        self.max_body = 64 * 1024
        self._auth = f"Bearer {token}"
        self._answers = _answers(spec.node)
        self._rng = rng
        self._unauthorized = _error(401, "unauthorized", "missing or wrong bearer token")
        self._not_found = _error(404, "not_found", "no such path")

    def answer(self, path: str, authorization: str) -> tuple[bytes, float]:
        """The response to ``path`` and how long to wait before sending it."""
        found = self._answers.get(path)
        if found is None:
            return self._not_found, 0.0
        answer, delayed = found
        if delayed and authorization != self._auth:
            return self._unauthorized, 0.0
        if not delayed:
            return answer, 0.0
        spec = self.spec
        return answer, max(0.0, spec.delay + self._rng.uniform(-spec.jitter, spec.jitter))


def _bound() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


async def serve(specs: list[Spec], token: str, seed: int) -> None:
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    servers = []
    closed = []  # bound, never listening: connections are refused while the process lives
    ports = []
    for spec in specs:
        sock = _bound()
        ports.append(f"{spec.node}={sock.getsockname()[1]}")
        if spec.kind == "closed":
            closed.append(sock)
            continue
        agent = _Agent(spec, token, rng)
        server = await loop.create_server(
            functools.partial(_Connection, agent), sock=sock, backlog=1024
        )
        servers.append(server)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("READY " + " ".join(ports), flush=True)
    await stop.wait()
    for server in servers:
        server.close()
    for sock in closed:
        sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--worker", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--token-file", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if not 0 <= args.worker < args.workers:
        parser.error("--worker must be from 0 to --workers - 1")
    every = [Spec(**item) for item in json.loads(args.spec.read_text())]
    mine = [spec for i, spec in enumerate(every) if i % args.workers == args.worker]
    token = args.token_file.read_text().strip()
    asyncio.run(serve(mine, token, args.seed + args.worker))


if __name__ == "__main__":
    main()
