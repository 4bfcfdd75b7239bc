"""Host many lightweight pullcheck agents in one process, each on its own loopback port.

Used by ``bench/bench_aggregator.py``. Every agent is a full agent app (own state, runner,
metrics, token check) served by its own uvicorn server, all on one event loop, all asking the
lab's containerd. Prints one line ``READY <port> <port> …`` when every agent answers.

``python bench/many_agents.py --count 200 --config agent.yaml``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.node.app import create_agent_app
from agent.node.state import AgentState
from agent.service.config import load_settings
from agent.service.metrics import monitor_event_loop_lag


def _bound_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


async def main(count: int, config: Path) -> None:
    settings = load_settings(config)
    sockets = [_bound_socket() for _ in range(count)]
    servers = []
    states = []
    for i, sock in enumerate(sockets):
        state = AgentState(settings, name=f"bench-node-{i:03d}")
        states.append(state)
        app = create_agent_app(state)
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        )
        servers.append((server, sock))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(s.serve(sockets=[sock])) for s, sock in servers]
    lag = asyncio.create_task(monitor_event_loop_lag([s.metrics for s in states], stop=stop))
    while not all(s.started for s, _ in servers):
        await asyncio.sleep(0.05)
    ports = " ".join(str(sock.getsockname()[1]) for sock in sockets)
    print(f"READY {ports}", flush=True)
    await stop.wait()
    for s, _ in servers:
        s.should_exit = True
    with contextlib.suppress(Exception):
        await asyncio.gather(*tasks, lag)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(main(args.count, args.config))
