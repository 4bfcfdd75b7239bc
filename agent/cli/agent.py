"""``pullcheck agent``: the node agent's HTTP API (run as a host-network DaemonSet)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from agent.cli._options import config_option, listen_option, log_level_option

if TYPE_CHECKING:
    from fastapi import FastAPI


@click.command("agent")
@config_option
@listen_option
@log_level_option
def agent(config_file: Path | None, listen: str | None, log_level: str) -> None:
    """Serve pull tests, connectivity, images and runtime for this node over HTTP."""
    from agent.cli._serve import load, serve  # the server's libraries load here, not above

    settings = load(config_file)

    def build() -> FastAPI:
        from agent.node.app import create_agent_app
        from agent.node.state import AgentState

        return create_agent_app(AgentState(settings))

    section = settings.agent
    listen = listen or section.listen
    # the standard library's loop: lighter than uvloop, as fast with h11 (docs/benchmarks.md)
    serve(build, listen, log_level, settings.limits, tls=section.tls, loop="asyncio")
