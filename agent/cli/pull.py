"""``pullcheck pull IMAGE``: a real pull through CRI (or --mode resolve), diagnosed."""

from __future__ import annotations

from typing import Any

import click

from agent import defaults
from agent.cli._options import (
    EXIT_INTERRUPTED,
    MAX_TEST_SECONDS,
    credential_options,
    credentials_from,
    cri_options,
    exit_code,
    json_option,
    path_options,
    seconds,
    settings_from,
    verbose_option,
)


@click.command("pull")
@click.argument("image")
@click.option(
    "--mode",
    type=click.Choice(["pull", "resolve"]),
    default="pull",
    show_default=True,
    help="pull: CRI PullImage like kubelet; resolve: probes and manifest HEAD only "
    "(no layers downloaded, no Docker Hub quota spent).",
)
@credential_options
@cri_options
@click.option(
    "--timeout",
    type=seconds(MAX_TEST_SECONDS),
    default=defaults.PULL_TIMEOUT,
    show_default=True,
    help="Per-test deadline in seconds; the pull RPC is cancelled when it passes.",
)
@click.option("--keep", is_flag=True, help="Keep the image even if it was not present before.")
@path_options
@verbose_option
@json_option
def pull(
    image: str,
    mode: str,
    timeout: float,
    keep: bool,
    verbose: bool,
    as_json: bool,
    **params: Any,
) -> int:
    """Pull IMAGE through the node's CRI runtime and name the cause of any failure.

    Ctrl-C cancels the pull, still prints the result (cause cancelled) and exits 130.
    """
    from agent.cli import _render  # imported here, not above: see agent/cli/__init__.py
    from agent.cli._interrupt import run_interruptible
    from agent.pulltest import PullTestRequest, run_pull_test

    credential, keyring = credentials_from(params)
    request = PullTestRequest(
        image=image,
        mode=mode,  # type: ignore[arg-type]
        credential=credential,
        keyring=keyring,
        timeout=timeout,
        keep=keep,
    )
    with _render.progress(enabled=not as_json) as report:
        result, interrupted = run_interruptible(
            run_pull_test(request, settings_from(params), report)
        )
    if as_json:
        _render.print_json(result)
    else:
        _render.render_pull(result, verbose=verbose)
    return EXIT_INTERRUPTED if interrupted else exit_code(result.success, result.cause)
