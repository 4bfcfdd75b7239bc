"""The ``pullcheck`` command line: one command per module, like crictl.

Exit codes: 0 success, 1 diagnosed failure, 2 invalid usage or input. With ``--json`` every
outcome, usage errors included, prints exactly one JSON object on stdout.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import click

from agent import __version__
from agent.cli._options import EXIT_USAGE
from agent.cli.agent import agent
from agent.cli.aggregator import aggregator
from agent.cli.images import images
from agent.cli.prepull import prepull
from agent.cli.probe import probe
from agent.cli.pull import pull
from agent.cli.runtime import runtime
from agent.credentials import CredentialError
from agent.cri import InvalidEndpoint
from agent.hosts import HostsConfigError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pullcheck")
def cli() -> None:
    """Diagnose image pulls from the container runtime's own vantage point."""


for command in (pull, probe, images, runtime, agent, aggregator, prepull):
    cli.add_command(command)


def _usage_error(message: str, argv: Sequence[str], kind: str = "usage") -> int:
    if "--json" in argv:
        sys.stdout.write(json.dumps({"success": False, "error": kind, "message": message}) + "\n")
    else:
        click.echo(f"pullcheck: error: {message}", err=True)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = cli.main(args=args, prog_name="pullcheck", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        code = EXIT_USAGE
    except click.UsageError as exc:
        hint = (
            f"\nTry 'pullcheck {exc.ctx.command.name} --help'."
            if exc.ctx and "--json" not in args
            else ""
        )
        code = _usage_error(exc.format_message() + hint, args)
    except click.ClickException as exc:
        code = _usage_error(exc.format_message(), args)
    except (CredentialError, InvalidEndpoint, HostsConfigError) as exc:
        code = _usage_error(str(exc), args, kind="invalid_input")
    except click.exceptions.Abort:
        code = 130
    sys.exit(code if isinstance(code, int) else 0)
