"""Human-readable rendering and progress for the CLI (JSON output bypasses all of this).

Two rules hold for everything printed through this module:

* text that came from input or the network (image names, node names, registry errors,
  summaries) goes through :func:`clean` or :func:`cell`: control characters, ANSI escapes and
  invisible formatting characters are shown as ``\\x1b``-style escapes and rich markup is
  escaped, so neither a registry nor a caller can rewrite the terminal or the report;
* nothing is cut: when stdout is not a terminal, lines and tables are as wide as their content;
  on a terminal, table cells fold onto more lines instead of ending in ``…``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console, ConsoleDimensions, JustifyMethod
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from agent.cli._printable import printable as printable  # re-exported: part of this API

if TYPE_CHECKING:  # the models are only annotations here: rendering does not import pydantic
    from pydantic import BaseModel

    from agent.models import (
        EndpointReport,
        Finding,
        ImageResult,
        Phase,
        ProbeReport,
        ProbeResult,
        PullTestResult,
    )

_UNLIMITED = 1_000_000  # columns when the output is not a terminal: never cut, never wrapped


class _Console(Console):
    """A rich console without a width limit when it does not write to a terminal."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        return size if self.is_terminal else ConsoleDimensions(_UNLIMITED, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


out = _Console(highlight=False, soft_wrap=True)
err = _Console(stderr=True, highlight=False, soft_wrap=True)


def clean(value: object) -> str:
    """:func:`printable` text with rich markup escaped: safe to embed in a markup string."""
    return escape(printable(value))


def cell(value: object, style: str = "") -> Text:
    """A table cell or a styled fragment holding ``value`` as literal, printable text."""
    return value if isinstance(value, Text) else Text(printable(value), style=style)


def yes_no(value: bool) -> str:
    """Booleans print as words, the same words everywhere."""
    return "yes" if value else "no"


def table(*columns: str, title: str = "", right: tuple[str, ...] = ()) -> Table:
    """A borderless table whose cells fold (never ellipsize) when the terminal is narrow.

    Headers are literal text; cells must be literal too: pass them through :func:`cell`.
    """
    grid = Table(
        box=None, pad_edge=False, title=title or None, title_justify="left", show_edge=False
    )
    for column in columns:
        justify: JustifyMethod = "right" if column in right else "left"
        grid.add_column(cell(column), overflow="fold", justify=justify)
    return grid


def print_table(grid: Table) -> None:
    """Print a table; off a terminal, without the padding that trails each row."""
    if out.is_terminal:
        out.print(grid)
        return
    with out.capture() as captured:
        out.print(grid)
    out.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def print_json(model: BaseModel) -> None:
    """Exactly one JSON object on stdout."""
    sys.stdout.write(model.model_dump_json(indent=2) + "\n")


@contextmanager
def progress(enabled: bool) -> Iterator[_Progress]:
    """A spinner with elapsed time on a terminal; plain lines on stderr otherwise."""
    reporter = _Progress(enabled)
    try:
        yield reporter
    finally:
        reporter.stop()


class _Progress:
    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._start = time.monotonic()
        self._status = err.status("starting") if enabled and err.is_terminal else None
        if self._status is not None:
            self._status.start()

    def __call__(self, message: str) -> None:
        if not self._enabled:
            return
        elapsed = time.monotonic() - self._start
        if self._status is not None:
            self._status.update(f"[{elapsed:5.1f}s] {clean(message)}")
        else:
            err.print(f"[{elapsed:5.1f}s] {clean(message)}")

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()


def seconds(ms: float) -> str:
    """A duration given in milliseconds, in the unit that reads best."""
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.1f} ms"


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{n} B"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _verdict(
    success: bool, cause: str | None, summary: str, remedy: str, fragment: str = ""
) -> None:
    if success:
        out.print(f"[bold green]OK[/]  {clean(summary)}")
        return
    out.print(f"[bold red]FAILED[/]  cause: [bold]{clean(cause)}[/]")
    out.print(f"  [bold]what[/]    {clean(summary)}")
    if remedy:
        out.print(f"  [bold]remedy[/]  {clean(remedy)}")
    if fragment:
        out.print(f"  [bold]decided by[/] …{clean(fragment)}…")


def _phases(phases: list[Phase], endpoints_below: bool) -> None:
    grid = table("phase", "result", "time", "detail", title="phases", right=("time",))
    for p in phases:
        detail = p.detail
        if p.name == "probe" and endpoints_below:
            detail = "endpoints below"  # the same endpoints are listed once, in the table below
        mark = cell("ok", "green") if p.ok else cell("fail", "red")
        grid.add_row(cell(p.name), mark, seconds(p.duration_ms), cell(detail))
    print_table(grid)


def _probe_line(probe: ProbeResult) -> str:
    mark = "[green]✔[/]" if probe.success else "[red]✘[/]"
    text = f"{mark} {probe.probe:<8} {clean(probe.target)}  {seconds(probe.duration_ms)}"
    ev = probe.evidence
    if ev is not None and ev.kind == "dns" and ev.addresses:
        text += f"  → {clean(', '.join(ev.addresses))}"
    elif ev is not None and ev.kind == "tls" and ev.version:
        text += f"  {clean(ev.version)}, issuer {clean(ev.issuer)}, expires {clean(ev.not_after)}"
    elif ev is not None and ev.kind in {"http", "manifest", "token"} and ev.status is not None:
        text += f"  → {ev.status}"
        if ev.kind == "manifest" and ev.digest:
            text += f" {clean(ev.digest)}"
        if ev.kind == "manifest" and ev.ratelimit_remaining:
            text += f" (ratelimit-remaining {clean(ev.ratelimit_remaining)})"
    if not probe.success and probe.error:
        text += f"\n      [red]{clean(probe.error)}[/]"
    return text


def _endpoints(reports: list[EndpointReport]) -> None:
    if not reports:
        return
    out.print("[bold]endpoints[/] (in the order the runtime tries them)")
    for r in reports:
        state = "[green]ok[/]" if r.success else f"[red]{clean(r.cause)}[/]"
        out.print(
            f"  {r.endpoint.role:<8} {clean(r.endpoint.url)}  {state}  {seconds(r.duration_ms)}"
        )
        for probe in r.probes:
            out.print(f"    {_probe_line(probe)}")


def _notes(warnings: list[str], findings: list[Finding]) -> None:
    """One line per warning and per finding (a failure on the path that is not the cause)."""
    for w in warnings:
        out.print(f"[yellow]warning[/] {clean(w)}")
    for f in findings:
        where = f" at {clean(f.endpoint)}" if f.endpoint else f" ({f.source})"
        out.print(f"[yellow]also found:[/] {clean(f.cause)}{where}: {clean(f.summary)}")


def _working(reports: list[EndpointReport]) -> EndpointReport | None:
    """The endpoint the runtime used: the first that works, in the order it tries them."""
    return next((r for r in reports if r.success), None)


def _manifest_digest(report: EndpointReport | None) -> str:
    for probe in report.probes if report is not None else []:
        ev = probe.evidence
        if ev is not None and ev.kind == "manifest" and ev.digest:
            return ev.digest
    return ""


def _image_line(info: ImageResult) -> str:
    parts = []
    if info.repo_digest:
        parts.append(f"digest {info.repo_digest.rpartition('@')[2]}")
    if info.size_bytes is not None:
        parts.append(human_size(info.size_bytes))
    if info.image_id:
        parts.append(f"image id {info.image_id}")
    if info.removed:
        kept = "removed after the test (not present before; --keep keeps it)"
    elif info.present_before:
        kept = "kept (present before)"
    else:
        kept = "kept (--keep)"
    return ", ".join(parts) + ("; " if parts else "") + kept


def _success_lines(result: PullTestResult) -> None:
    """crictl-style: what was pulled, from where, in how long; then digest, size and id."""
    working = _working(result.endpoints)
    served = result.via or (working.endpoint.url if working is not None else "")
    via = f" via {clean(served)}" if served else ""
    took = f" in {seconds(result.duration_ms)}"
    ref = clean(result.reference or result.image)
    info = result.image_info
    ok = "[bold green]OK[/]"
    if result.mode == "resolve":
        digest = _manifest_digest(working)
        to = f" to {clean(digest)}" if digest else ""
        out.print(f"{ok}  resolved {ref}{to}{via}{took}")
        present = info is not None and info.present_before
        out.print(f"    no layers downloaded; the image is {'' if present else 'not '}on the node")
        return
    if info is not None and info.present_before:
        out.print(f"{ok}  image is up to date for {ref}{via}{took}")
    else:
        out.print(f"{ok}  pulled {ref}{via}{took}")
    if info is not None:
        out.print(f"    {clean(_image_line(info))}")


def render_pull(result: PullTestResult, verbose: bool = False) -> None:
    """A success in one or two lines (plus notes); a failure or ``-v`` with every table."""
    if result.success and not verbose:
        _success_lines(result)
        _notes(result.warnings, result.findings)
        return
    head = f"[bold]pullcheck {result.mode}[/] {clean(result.image)}"
    if result.reference and result.reference != result.image:
        head += f"  ({clean(result.reference)})"
    head += f"  node {clean(result.node)}"
    if result.runtime is not None:
        rt = result.runtime
        head += (
            f"  {clean(rt.runtime_name)} {clean(rt.runtime_version)} (CRI {clean(rt.api_version)})"
        )
    out.print(head)
    if result.refused:
        out.print(f"[bold yellow]REFUSED[/]  {result.refused}: {clean(result.summary)}")
    elif result.success:
        _success_lines(result)
    else:
        _verdict(
            result.success, result.cause, result.summary, result.remedy, result.deciding_fragment
        )
    if result.runtime_error:
        out.print(f"  [bold]runtime[/] {clean(result.runtime_error)}")
    _notes(result.warnings, result.findings)
    info = result.image_info
    if info is not None and not result.success:
        out.print(f"[bold]image[/] present before: {yes_no(info.present_before)}")
    if len(result.credentials) > 1 or any(c.source != "anonymous" for c in result.credentials):
        for c in result.credentials:
            state = "ok" if c.ok else clean(c.cause)
            out.print(f"[bold]credential[/] {clean(c.source)}: {state}")
    _phases(result.phases, endpoints_below=bool(result.endpoints))
    _endpoints(result.endpoints)
    out.print(f"total {seconds(result.duration_ms)}")


def render_probe(report: ProbeReport, verbose: bool = False) -> None:
    """Like :func:`render_pull`: one line for a reachable registry, the evidence otherwise."""
    if report.success and not verbose:
        working = _working(report.endpoints)
        line = f"[bold green]OK[/]  {clean(report.registry)} reachable"
        if working is not None:
            line += f" via {clean(working.endpoint.url)}"
        digest = _manifest_digest(working)
        if report.reference and digest:
            line += f"; {clean(report.reference)} is {clean(digest)}"
        out.print(f"{line} in {seconds(report.duration_ms)}")
        _notes(report.warnings, report.findings)
        return
    out.print(
        f"[bold]pullcheck probe[/] {clean(report.target)}  registry "
        f"{clean(report.registry)}  node {clean(report.node)}"
    )
    _verdict(report.success, report.cause, report.summary, report.remedy)
    _notes(report.warnings, report.findings)
    _endpoints(report.endpoints)
    out.print(f"total {seconds(report.duration_ms)}")
