"""What ``pullcheck pod`` and ``pods`` share: the kubectl-like options and reading the API.

Options are parsed with click alone (this module imports nothing heavy at top level, see
:mod:`agent.cli`); the API client is imported when a command runs. A read that fails ends the
command with one message naming the verb, the resource and the namespace (a missing permission
says which RBAC rule): exit :data:`EXIT_API` (3), kind ``forbidden``, ``unauthorized``,
``not_found`` or ``api_unreachable``; a bad kubeconfig is a usage error (exit 2).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, TypeVar

import click

from agent.cli._options import CommandError, seconds
from agent.kube.names import NAMESPACE, OBJECT_NAME

__all__ = ["EXIT_API", "kube_options", "namespace_option", "run_api"]

#: the API could not be read (no permission, credentials refused, not found, no answer)
EXIT_API: Final = 3
MAX_REQUEST_SECONDS: Final = 300.0


T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _checked(pattern: re.Pattern[str], what: str) -> Callable[..., str | None]:
    def check(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        if value is not None and not pattern.match(value):
            raise click.BadParameter(f"{value[:80]!r} is not a valid {what}")
        return value

    return check


pod_name = _checked(OBJECT_NAME, "pod name (lower-case DNS subdomain)")
namespace_option = click.option(
    "-n",
    "--namespace",
    callback=_checked(NAMESPACE, "namespace name"),
    help="The namespace (default: the context's, else default).",
)


def kube_options(func: F) -> F:
    """``--kubeconfig``, ``--context`` and ``--request-timeout``, as kubectl has them."""
    for decorator in reversed(
        (
            click.option(
                "--kubeconfig",
                type=click.Path(dir_okay=False),
                help="Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, else in-cluster).",
            ),
            click.option("--context", help="The kubeconfig context (default: current-context)."),
            click.option(
                "--request-timeout",
                type=seconds(MAX_REQUEST_SECONDS),
                default=15.0,
                show_default=True,
                help="Seconds to wait for each API request.",
            ),
        )
    ):
        func = decorator(func)
    return func


def run_api(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``work`` (reads of the API); a failed read becomes the command's error."""
    import asyncio

    from agent.kube.client import KubeApiError

    try:
        return asyncio.run(_call(work))
    except KubeApiError as exc:
        kind = "api_unreachable" if exc.kind == "unreachable" else exc.kind
        raise CommandError(str(exc), kind, EXIT_API) from None


async def _call(work: Callable[[], Awaitable[T]]) -> T:
    return await work()
