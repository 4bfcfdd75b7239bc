"""``pullcheck agent``: the node agent's HTTP API (run as a host-network DaemonSet)."""

from __future__ import annotations

from pathlib import Path

import click
from fastapi import FastAPI

from agent.cli._serve import config_option, listen_option, load, log_level_option, serve


@click.command("agent")
@config_option
@listen_option
@log_level_option
def agent(config_file: Path | None, listen: str | None, log_level: str) -> None:
    """Serve pull tests, connectivity, images and runtime for this node over HTTP."""
    settings = load(config_file)

    def build() -> FastAPI:
        from agent.node.app import create_agent_app
        from agent.node.state import AgentState

        return create_agent_app(AgentState(settings))

    serve(build, listen or settings.agent.listen, log_level, settings.limits)
