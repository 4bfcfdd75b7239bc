"""``pullcheck aggregator``: "can every node pull this?" across all agents."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from agent.cli._options import config_option, listen_option, log_level_option

if TYPE_CHECKING:
    from fastapi import FastAPI


@click.command("aggregator")
@config_option
@listen_option
@log_level_option
def aggregator(config_file: Path | None, listen: str | None, log_level: str) -> None:
    """Fan pull tests out to every agent and summarise, over HTTP."""
    from agent.cli._serve import load, serve  # the server's libraries load here, not above

    settings = load(config_file)
    if listen:  # the leader election advertises the address really served
        section = settings.aggregator.model_copy(update={"listen": listen})
        settings = settings.model_copy(update={"aggregator": section})

    def build() -> FastAPI:
        from agent.cluster.app import AggregatorState, create_aggregator_app

        return create_aggregator_app(AggregatorState(settings))

    serve(build, settings.aggregator.listen, log_level, settings.limits)
