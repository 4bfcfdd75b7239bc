"""Running an ASGI app with uvicorn for ``pullcheck agent`` / ``pullcheck aggregator``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click
import uvicorn
from fastapi import FastAPI

from agent.server.auth import TokenFileError
from agent.server.config import ConfigError, Settings, load_settings
from agent.server.logs import configure_logging, uvicorn_log_config

config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="YAML configuration [default: /etc/pullcheck/config.yaml if it exists]; "
    "PULLCHECK_* environment variables override it.",
)
listen_option = click.option(
    "--listen", metavar="HOST:PORT", default=None, help="Address to serve on (overrides config)."
)
log_level_option = click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)


def load(config_file: Path | None) -> Settings:
    try:
        return load_settings(config_file)
    except ConfigError as exc:
        raise click.UsageError(f"configuration: {exc}") from None


def split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.UsageError(f"listen address {listen!r}: expected HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def serve(build: Callable[[], FastAPI], listen: str, log_level: str) -> None:
    """Serve the app built by ``build()`` until SIGTERM/SIGINT."""
    configure_logging(log_level)
    host, port = split_listen(listen)
    try:
        app = build()
    except TokenFileError as exc:
        raise click.UsageError(str(exc)) from None
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=uvicorn_log_config(log_level),
        proxy_headers=False,
        server_header=False,
        date_header=False,
    )
    uvicorn.Server(config).run()
