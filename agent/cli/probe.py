"""``pullcheck probe IMAGE_OR_REGISTRY``: the registry path as the runtime sees it, no pull."""

from __future__ import annotations

from typing import Any

import click

from agent.cli._options import (
    EXIT_INTERRUPTED,
    credential_options,
    credentials_from,
    exit_code,
    json_option,
    path_options,
    settings_from,
    verbose_option,
)


@click.command("probe")
@click.argument("target", metavar="IMAGE_OR_REGISTRY")
@credential_options
@path_options
@verbose_option
@json_option
def probe(target: str, verbose: bool, as_json: bool, **params: Any) -> int:
    """Probe DNS, TCP, TLS, /v2/, token and manifest for every endpoint of a registry.

    A bare host (with a dot or a port, or localhost) is a registry; anything else is an image.
    """
    from agent.cli import _render  # imported here, not above: see agent/cli/__init__.py
    from agent.cli._interrupt import run_interruptible
    from agent.pulltest import run_probe

    credential, keyring = credentials_from(params)
    with _render.progress(enabled=not as_json) as report:
        result, interrupted = run_interruptible(
            run_probe(
                target,
                settings_from(params),
                credential=credential,
                keyring=keyring,
                progress=report,
            )
        )
    if as_json:
        _render.print_json(result)
    else:
        _render.render_probe(result, verbose=verbose)
    return EXIT_INTERRUPTED if interrupted else exit_code(result.success, result.cause)
