"""``pullcheck cluster``: the aggregator's cluster-wide answers.

``cluster pull IMAGE`` asks "can every node pull this?" (``GET /v1/pulltest``) and
``cluster connectivity`` shows which node reaches which registry endpoint
(``GET /v1/connectivity``).

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
from typing import Any

import click
from rich.text import Text

from agent.cli import _render
from agent.cli._aggregator import Aggregator, token_option, url_option
from agent.cli._options import EXIT_FAILED, EXIT_OK, CommandError, json_option, seconds
from agent.cli._render import cell, clean

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


@click.group("cluster")
def cluster() -> None:
    """Cluster-wide answers from the aggregator: pull tests on every node, connectivity."""


def _result(entry: dict[str, Any]) -> Text:
    if entry.get("success") is True:
        return cell("ok", "green")
    if entry.get("refused"):
        return cell(f"refused: {entry['refused']}", "yellow")
    text = str(entry.get("cause") or "unknown")
    status = entry.get("status")
    if isinstance(status, int) and not isinstance(status, bool):
        text += f" (HTTP {status})"
    return cell(text, "red")


def _summary_lines(summary: dict[str, Any], seconds_taken: float) -> None:
    out = _render.out
    nodes, ok, failed = summary.get("nodes"), summary.get("ok"), summary.get("failed")
    verdict = "[bold green]OK[/]" if failed == 0 and nodes else "[bold red]FAILED[/]"
    out.print(
        f"{verdict}  {clean(nodes)} node(s): {clean(ok)} ok, {clean(failed)} failed "
        f"in {_render.seconds(seconds_taken * 1000)}"
    )
    by_cause = summary.get("by_cause")
    for cause, names in (by_cause if isinstance(by_cause, dict) else {}).items():
        listed = ", ".join(map(str, names)) if isinstance(names, list) else names
        out.print(f"  {clean(cause)}: {clean(listed)}")
    digests = summary.get("digests")
    digests = digests if isinstance(digests, dict) else {}
    if summary.get("digest_drift") is True:
        out.print(f"[bold yellow]digest drift[/]: the tag resolved to {len(digests)} digests")
    for digest, names in digests.items():
        listed = ", ".join(map(str, names)) if isinstance(names, list) else names
        out.print(f"  digest {clean(digest)}: {clean(listed)}")


def _node_table(entries: list[dict[str, Any]]) -> None:
    grid = _render.table("NODE", "RESULT", "SUMMARY", "REMEDY")
    for entry in entries:
        grid.add_row(
            cell(entry.get("node", "?")),
            _result(entry),
            cell(entry.get("summary") or ""),
            cell(entry.get("remedy") or ""),
        )
    _render.print_table(grid)


@cluster.command("pull")
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
    mode: str | None,
    nodes: str | None,
    timeout: float | None,
    url: str,
    token_file: Path,
    as_json: bool,
) -> int:
    """Test IMAGE on every node through the aggregator: one row per node, never dropped.

    Exit 0 when every node can pull it, 1 when any cannot (or did not answer).
    """
    params = {"image": image, "stream": "ndjson"}
    if mode:
        params["mode"] = mode
    if nodes:
        params["nodes"] = nodes
    if timeout is not None:
        params["timeout"] = f"{timeout:g}"
    aggregator = Aggregator(url, token_file)
    started = time.monotonic()
    entries: list[dict[str, Any]] = []
    summary: dict[str, Any] | None = None
    wait = (timeout or MAX_CLUSTER_TIMEOUT) + _WAIT_SLACK
    with _render.progress(enabled=not as_json) as report:
        report(f"asking {aggregator.url} to test {image} on every node")
        for line in aggregator.lines("/v1/pulltest", params, wait):
            if "summary" in line and "node" not in line:
                summary = line["summary"] if isinstance(line["summary"], dict) else {}
                break
            entries.append(line)
            state = "ok" if line.get("success") is True else line.get("cause") or "failed"
            report(f"{len(entries)} node(s) answered; {line.get('node', '?')}: {state}")
    if summary is None:
        raise CommandError(
            f"the aggregator's answer ended after {len(entries)} node(s), before its summary",
            "aggregator_error",
        )
    entries.sort(key=lambda e: str(e.get("node", "")))
    if as_json:
        answer = {"image": image, "mode": mode, "summary": summary, "nodes": entries}
        print(json.dumps(answer, indent=2))
    else:
        _render.out.print(f"[bold]pullcheck cluster pull[/] {clean(image)}")
        _summary_lines(summary, time.monotonic() - started)
        _node_table(entries)
    every_ok = bool(entries) and all(e.get("success") is True for e in entries)
    return EXIT_OK if every_ok else EXIT_FAILED


def _connectivity_cell(cells: Any, url: str) -> Text:
    found = cells.get(url) if isinstance(cells, dict) else None
    if not isinstance(found, dict):
        return cell("-")
    if found.get("success") is True:
        return cell("ok", "green")
    return cell(found.get("cause") or "failed", "red")


def render_connectivity(matrix: dict[str, Any]) -> bool:
    """The node x endpoint matrix, then one line per failure; True when everything answered."""
    columns = [c for c in matrix.get("columns") or [] if isinstance(c, dict)]
    rows = [r for r in matrix.get("rows") or [] if isinstance(r, dict)]
    urls = [str(c.get("url", "")) for c in columns]
    headers = [f"{c.get('url', '')} ({c.get('role', '')})" for c in columns]
    grid = _render.table("NODE", *headers)
    problems: list[str] = []
    for row in rows:
        node = str(row.get("node", "?"))
        if row.get("reachable") is not True:
            grid.add_row(cell(node), *[cell("agent_unreachable", "red")] * len(urls))
            reason = f"{node}: agent_unreachable: {row.get('summary') or ''}"
            if row.get("remedy"):
                reason += f" — {row['remedy']}"
            problems.append(reason)
            continue
        cells = row.get("cells")
        grid.add_row(cell(node), *[_connectivity_cell(cells, url) for url in urls])
        for url in urls:
            found = cells.get(url) if isinstance(cells, dict) else None
            if isinstance(found, dict) and found.get("success") is not True:
                problems.append(
                    f"{node}: {url}: {found.get('cause') or 'failed'}: {found.get('summary') or ''}"
                )
    _render.out.print(
        f"[bold]pullcheck cluster connectivity[/]  {len(rows)} node(s) x "
        f"{len(urls)} registry endpoint(s)"
    )
    _render.print_table(grid)
    for problem in problems:
        _render.out.print(f"[red]✘[/] {clean(problem)}")
    return not problems


@cluster.command("connectivity")
@url_option
@token_option
@json_option
def connectivity(url: str, token_file: Path, as_json: bool) -> int:
    """Which node reaches which registry endpoint: the aggregator's node x endpoint matrix.

    Exit 0 when every node answered and reached every endpoint, else 1.
    """
    matrix = Aggregator(url, token_file).call("GET", "/v1/connectivity", timeout=90.0)
    if as_json:
        print(json.dumps(matrix, indent=2))
        summary = matrix.get("summary")
        summary = summary if isinstance(summary, dict) else {}
        clear = not summary.get("unreachable") and not summary.get("failing")
    else:
        clear = render_connectivity(matrix)
    return EXIT_OK if clear else EXIT_FAILED
