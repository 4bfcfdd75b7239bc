"""The ``pullcheck`` command line: one command per module, like crictl.

Exit codes: 0 success, 1 diagnosed failure, 2 invalid usage or input, 130 interrupted (Ctrl-C).
With ``--json`` every outcome, usage errors included, prints exactly one JSON object on stdout.

Start-up: the commands are a :class:`LazyGroup` (click's lazy-loading pattern). Each command's
module is imported only when that command runs or shows its help; ``pullcheck --help`` lists
them from :data:`COMMANDS` without importing any. A command module imports at top level only
click and what parsing its options needs; the runtime client, the probes, the models, the
servers and rich are imported by the callback (``tests/unit/test_cli_imports.py`` holds this).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple, NoReturn

import click

from agent import __version__
from agent.cli._options import EXIT_INTERRUPTED, EXIT_USAGE, CommandError
from agent.cli._printable import printable
from agent.errors import InvalidInput

__all__ = ["COMMANDS", "Lazy", "LazyGroup", "cli", "main"]


class Lazy(NamedTuple):
    """A command imported on first use: where it lives and the short help ``--help`` lists.

    ``help`` is the first line of the command's docstring (a unit test keeps them equal).
    """

    target: str  # "package.module:attribute"
    help: str


class LazyGroup(click.Group):
    """A group whose ``lazy`` commands are imported only when one is resolved.

    Listing (``list_commands``, the group's ``--help``) reads the table and imports nothing;
    ``get_command`` imports the one module asked for. Commands added with ``add_command`` (or
    passed as ``commands``) work as in any click group.
    """

    def __init__(self, *args: Any, lazy: Mapping[str, Lazy] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, Lazy] = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = self.lazy.get(cmd_name)
        if entry is None or cmd_name in self.commands:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = entry.target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{entry.target} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list, laid out by click itself, with stand-ins for the lazy commands."""
        listed = {
            name: self.commands.get(name) or click.Command(name, help=self.lazy[name].help)
            for name in self.list_commands(ctx)
        }
        click.Group(self.name, commands=listed).format_commands(ctx, formatter)


def _group(name: str, help_text: str, commands: Mapping[str, Lazy]) -> LazyGroup:
    """A subcommand group: its help here, its commands imported on first use."""
    return LazyGroup(name, help=help_text, lazy=commands)


#: Every command: the one table the top-level listing, the groups and the test read.
COMMANDS: Final[Mapping[str, Lazy | LazyGroup]] = {
    "pull": Lazy(
        "agent.cli.pull:pull",
        "Pull IMAGE through the node's CRI runtime and name the cause of any failure.",
    ),
    "probe": Lazy(
        "agent.cli.probe:probe",
        "Probe DNS, TCP, TLS, /v2/, token and manifest for every endpoint of a registry.",
    ),
    "explain": Lazy(
        "agent.cli.explain:explain",
        "Explain image-pull failures in pasted events, logs or errors (offline).",
    ),
    "pod": Lazy(
        "agent.cli.pod:pod",
        "Why pod NAME's containers cannot get their images: one verdict per container.",
    ),
    "pods": Lazy(
        "agent.cli.pods:pods",
        "List every pod with image-pull failures, one line per container with the cause.",
    ),
    "images": Lazy(
        "agent.cli.images:images", "List images on this node (repo tags, digests, id, size)."
    ),
    "runtime": Lazy(
        "agent.cli.runtime:runtime",
        "Show the runtime's version, its conditions and the image filesystem usage.",
    ),
    "agent": Lazy(
        "agent.cli.agent:agent",
        "Serve pull tests, connectivity, images and runtime for this node over HTTP.",
    ),
    "aggregator": Lazy(
        "agent.cli.aggregator:aggregator",
        "Fan pull tests out to every agent and summarise, over HTTP.",
    ),
    "prepull": _group(
        "prepull",
        "Warm-cache (pre-pull) jobs run by the aggregator.",
        {
            "jobs": Lazy("agent.cli.prepull:jobs", "List jobs with schedule and progress."),
            "job": Lazy(
                "agent.cli.prepull:job",
                "One job per node and image: phase, digest, duration, cause and remedy.",
            ),
            "run": Lazy("agent.cli.prepull:run", "Run a job now, within its caps."),
        },
    ),
    "cluster": _group(
        "cluster",
        "Cluster-wide answers from the aggregator: pull tests on every node, connectivity.",
        {
            "pull": Lazy(
                "agent.cli.cluster:cluster_pull",
                "Test IMAGE on every node through the aggregator: one row per node, never dropped.",
            ),
            "connectivity": Lazy(
                "agent.cli.cluster:connectivity",
                "Which node reaches which registry endpoint: the aggregator's node x endpoint "
                "matrix.",
            ),
        },
    ),
}


@click.group(
    cls=LazyGroup,
    lazy={name: entry for name, entry in COMMANDS.items() if isinstance(entry, Lazy)},
    commands=[entry for entry in COMMANDS.values() if isinstance(entry, LazyGroup)],
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="pullcheck")
def cli() -> None:
    """Diagnose image pulls from the container runtime's own vantage point."""


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


def _leave(code: int) -> NoReturn:
    """End the process without the interpreter's teardown, its output and logs flushed first.

    A command's work is over when ``main()`` returns: what the interpreter would still do is
    free every module and object one by one (about 60 ms once the engine, grpc and pydantic are
    loaded, measured in docs/benchmarks.md), and a process that exits frees them all at once.
    """
    if "logging" in sys.modules:  # loaded by the servers and grpc: flush and close handlers
        sys.modules["logging"].shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: ``argv`` None means this process's own command line.

    The process's own command line ends the process at once (:func:`_leave`); given ``argv``
    (tests, embedding), ``main()`` raises SystemExit with the exit status instead.
    """
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
    status = code if isinstance(code, int) else 0
    if argv is None:
        _leave(status)
    sys.exit(status)
