"""``pullcheck cluster``: the aggregator's cluster-wide answers.

``cluster pull IMAGE`` asks "can every node pull this?" (``GET /v1/pulltest``) and
``cluster connectivity`` shows which node reaches which registry endpoint
(``GET /v1/connectivity``).

Both are commands of the ``cluster`` group declared in :data:`agent.cli.COMMANDS`; the HTTP
client, the aggregator's models and rich are imported when a command runs, not to parse it.

The pull test is read as ``stream=ndjson``: each node's entry arrives as soon as that node
answered, so a slow node does not hide the others — on stderr each arrival is reported as it
comes (a spinner on a terminal), and the table on stdout is printed once, sorted by node, when
the summary line arrives (a table whose rows arrive out of order cannot be aligned earlier).
``--json`` prints the same object the aggregator answers without streaming:
``{image, mode, summary, nodes}``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from agent.cli._options import (
    EXIT_FAILED,
    EXIT_OK,
    CommandError,
    json_option,
    seconds,
    token_option,
    url_option,
)

if TYPE_CHECKING:
    from rich.text import Text

    from agent.cluster.models import ConnectivityMatrix, NodeEntry, Summary

MAX_CLUSTER_TIMEOUT = 3600.0  # the aggregator's limits.max_timeout cannot be higher
_MAX_NODE_NAMES = 4096
_MAX_NODES_TEXT = 65536  # what the aggregator accepts in ?nodes=
_MAX_NODE_NAME = 253  # a DNS name, as Kubernetes node names are
_WAIT_SLACK = 30.0  # seconds beyond the test deadline to wait for the next node's line


def _node_names(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    names = [name.strip() for name in value.split(",")]
    if any(not name for name in names):
        raise click.BadParameter("expected node names separated by commas, e.g. node-1,node-2")
    if len(names) > _MAX_NODE_NAMES or len(value) > _MAX_NODES_TEXT:
        raise click.BadParameter(f"at most {_MAX_NODE_NAMES} names, {_MAX_NODES_TEXT} characters")
    for name in names:
        if len(name) > _MAX_NODE_NAME or not name.isprintable() or " " in name:
            raise click.BadParameter(f"{name!r} is not a node name")
    return ",".join(dict.fromkeys(names))


def _result(entry: NodeEntry) -> Text:
    from agent.cli._render import cell
    from agent.cluster.models import NodeFailure

    if entry.success:
        return cell("ok", "green")
    if isinstance(entry, NodeFailure):
        status = f" (HTTP {entry.status})" if entry.status is not None else ""
        return cell(f"{entry.cause}{status}", "red")
    if entry.refused:
        return cell(f"refused: {entry.refused}", "yellow")
    return cell(entry.cause or "unknown", "red")


def _summary_lines(summary: Summary, seconds_taken: float) -> None:
    from agent.cli import _render
    from agent.cli._render import clean

    out = _render.out
    every_ok = summary.failed == 0 and summary.nodes
    verdict = "[bold green]OK[/]" if every_ok else "[bold red]FAILED[/]"
    out.print(
        f"{verdict}  {summary.nodes} node(s): {summary.ok} ok, {summary.failed} failed "
        f"in {_render.seconds(seconds_taken * 1000)}"
    )
    for cause, names in summary.by_cause.items():
        out.print(f"  {clean(cause)}: {clean(', '.join(names))}")
    if summary.digest_drift:
        count = len(summary.digests)
        out.print(f"[bold yellow]digest drift[/]: the tag resolved to {count} digests")
    for digest, names in summary.digests.items():
        out.print(f"  digest {clean(digest)}: {clean(', '.join(names))}")


def _node_table(entries: list[NodeEntry]) -> None:
    from agent.cli import _render
    from agent.cli._render import cell

    grid = _render.table("NODE", "RESULT", "SUMMARY", "REMEDY")
    for entry in entries:
        grid.add_row(cell(entry.node), _result(entry), cell(entry.summary), cell(entry.remedy))
    _render.print_table(grid)


@click.command("pull")
@click.argument("image")
@click.option(
    "--mode",
    type=click.Choice(["pull", "resolve"]),
    default=None,
    help="pull: CRI PullImage on every node; resolve: probes and manifest HEAD only "
    "[default: the aggregator's — pull, or resolve when it is read-only].",
)
@click.option(
    "--nodes",
    metavar="NAME[,NAME…]",
    default=None,
    callback=_node_names,
    help="Only these nodes [default: every node the aggregator knows].",
)
@click.option(
    "--timeout",
    type=seconds(MAX_CLUSTER_TIMEOUT),
    default=None,
    help="Per-node test deadline in seconds [default: the aggregator's limits.default_timeout].",
)
@url_option
@token_option
@json_option
def cluster_pull(
    image: str,
    mode: Literal["pull", "resolve"] | None,  # click.Choice above
    nodes: str | None,
    timeout: float | None,
    url: str,
    token_file: Path,
    as_json: bool,
) -> int:
    """Test IMAGE on every node through the aggregator: one row per node, never dropped.

    Exit 0 when every node can pull it, 1 when any cannot (or did not answer).
    """
    from pydantic import TypeAdapter  # imported here, not above: see agent/cli/__init__.py

    from agent.cli import _render
    from agent.cli._aggregator import Aggregator
    from agent.cli._render import clean
    from agent.cluster.models import PullTestAnswer, StreamLine, SummaryLine

    stream_line: TypeAdapter[NodeEntry | SummaryLine] = TypeAdapter(StreamLine)
    params = {"image": image, "stream": "ndjson"}
    if mode:
        params["mode"] = mode
    if nodes:
        params["nodes"] = nodes
    if timeout is not None:
        params["timeout"] = f"{timeout:g}"
    aggregator = Aggregator(url, token_file)
    started = time.monotonic()
    entries: list[NodeEntry] = []
    summary: Summary | None = None
    wait = (timeout or MAX_CLUSTER_TIMEOUT) + _WAIT_SLACK
    with _render.progress(enabled=not as_json) as report:
        report(f"asking {aggregator.url} to test {image} on every node")
        for line in aggregator.lines("/v1/pulltest", params, stream_line, wait):
            if isinstance(line, SummaryLine):
                summary = line.summary
                break
            entries.append(line)
            state = "ok" if line.success else line.cause or "failed"
            report(f"{len(entries)} node(s) answered; {line.node}: {state}")
    if summary is None:
        raise CommandError(
            f"the aggregator's answer ended after {len(entries)} node(s), before its summary",
            "aggregator_error",
        )
    entries.sort(key=lambda entry: entry.node)
    if as_json:
        answer = PullTestAnswer(image=image, mode=mode, summary=summary, nodes=entries)
        print(json.dumps(answer.model_dump(mode="json"), indent=2))
    else:
        _render.out.print(f"[bold]pullcheck cluster pull[/] {clean(image)}")
        _summary_lines(summary, time.monotonic() - started)
        _node_table(entries)
    every_ok = bool(entries) and all(entry.success for entry in entries)
    return EXIT_OK if every_ok else EXIT_FAILED


def render_connectivity(matrix: ConnectivityMatrix) -> bool:
    """The node x endpoint matrix, then one line per failure; True when everything answered."""
    from agent.cli import _render
    from agent.cli._render import cell, clean
    from agent.cluster.models import UnreachableRow

    urls = [column.url for column in matrix.columns]
    grid = _render.table("NODE", *[f"{c.url} ({c.role})" for c in matrix.columns])
    problems: list[str] = []
    for row in matrix.rows:
        if isinstance(row, UnreachableRow):
            grid.add_row(cell(row.node), *[cell("agent_unreachable", "red")] * len(urls))
            reason = f"{row.node}: agent_unreachable: {row.summary}"
            if row.remedy:
                reason += f" — {row.remedy}"
            problems.append(reason)
            continue
        shown = []
        for url in urls:
            found = row.cells.get(url)
            if found is None:
                shown.append(cell("-"))
            elif found.success:
                shown.append(cell("ok", "green"))
            else:
                shown.append(cell(found.cause or "failed", "red"))
                problems.append(f"{row.node}: {url}: {found.cause or 'failed'}: {found.summary}")
        grid.add_row(cell(row.node), *shown)
    _render.out.print(
        f"[bold]pullcheck cluster connectivity[/]  {len(matrix.rows)} node(s) x "
        f"{len(urls)} registry endpoint(s)"
    )
    _render.print_table(grid)
    for problem in problems:
        _render.out.print(f"[red]✘[/] {clean(problem)}")
    return not problems


@click.command("connectivity")
@url_option
@token_option
@json_option
def connectivity(url: str, token_file: Path, as_json: bool) -> int:
    """Which node reaches which registry endpoint: the aggregator's node x endpoint matrix.

    Exit 0 when every node answered and reached every endpoint, else 1.
    """
    from agent.cli._aggregator import Aggregator  # imported here, not above
    from agent.cluster.models import ConnectivityMatrix

    matrix = Aggregator(url, token_file).call(
        "GET", "/v1/connectivity", ConnectivityMatrix, timeout=90.0
    )
    if as_json:
        print(json.dumps(matrix.model_dump(mode="json"), indent=2))
        clear = not matrix.summary.unreachable and not matrix.summary.failing
    else:
        clear = render_connectivity(matrix)
    return EXIT_OK if clear else EXIT_FAILED
