"""The ``pullcheck`` command line: one command per module, like crictl.

Exit codes: 0 success, 1 diagnosed failure, 2 invalid usage or input, 130 interrupted (Ctrl-C).
With ``--json`` every outcome, usage errors included, prints exactly one JSON object on stdout.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import click

from agent import __version__
from agent.cli._options import EXIT_INTERRUPTED, EXIT_USAGE, CommandError
from agent.cli._render import printable
from agent.cli.agent import agent
from agent.cli.aggregator import aggregator
from agent.cli.cluster import cluster
from agent.cli.images import images
from agent.cli.prepull import prepull
from agent.cli.probe import probe
from agent.cli.pull import pull
from agent.cli.runtime import runtime
from agent.errors import InvalidInput


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pullcheck")
def cli() -> None:
    """Diagnose image pulls from the container runtime's own vantage point."""


for command in (pull, probe, images, runtime, agent, aggregator, prepull, cluster):
    cli.add_command(command)


def _report(
    message: str, argv: Sequence[str], ctx: click.Context | None, kind: str = "usage"
) -> None:
    """One JSON object on stdout with --json, else one line on stderr; the command is named."""
    where = ctx.command_path if ctx is not None else "pullcheck"
    if "--json" in argv:
        body = {"success": False, "error": kind, "message": f"{where}: {message}"}
        sys.stdout.write(json.dumps(body) + "\n")
        return
    hint = f"\nTry '{where} --help'." if kind == "usage" and ctx is not None else ""
    click.echo(f"{printable(where)}: error: {printable(message)}{hint}", err=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = cli.main(args=args, prog_name="pullcheck", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help())
        code = EXIT_USAGE
    except click.UsageError as exc:
        _report(exc.format_message(), args, exc.ctx)
        code = EXIT_USAGE
    except CommandError as exc:
        _report(exc.format_message(), args, exc.ctx, kind=exc.kind)
        code = exc.code
    except click.ClickException as exc:
        _report(exc.format_message(), args, None)
        code = EXIT_USAGE
    except InvalidInput as exc:  # every unusable input, wherever it is found
        _report(str(exc), args, None, kind="invalid_input")
        code = EXIT_USAGE
    except click.exceptions.Abort:
        _report("interrupted", args, None, kind="interrupted")
        code = EXIT_INTERRUPTED
    sys.exit(code if isinstance(code, int) else 0)
