"""Human-readable rendering and progress for the CLI (JSON output bypasses all of this)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agent.models import EndpointReport, Phase, ProbeReport, ProbeResult, PullTestResult

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)


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
            self._status.update(f"[{elapsed:5.1f}s] {escape(message)}")
        else:
            err.print(f"[{elapsed:5.1f}s] {escape(message)}")

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()


def _secs(ms: float) -> str:
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.1f} ms"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{n} B"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _verdict(success: bool, cause: str | None, summary: str, remedy: str) -> None:
    if success:
        out.print(f"[bold green]OK[/]  {escape(summary)}")
        return
    out.print(f"[bold red]FAILED[/]  cause: [bold]{cause}[/]")
    out.print(f"  [bold]what[/]    {escape(summary)}")
    if remedy:
        out.print(f"  [bold]remedy[/]  {escape(remedy)}")


def _phases(phases: list[Phase]) -> None:
    table = Table(title="phases", title_justify="left", box=None, pad_edge=False)
    for col in ("phase", "result", "time", "detail"):
        table.add_column(col, justify="right" if col == "time" else "left")
    for p in phases:
        mark = "[green]ok[/]" if p.ok else "[red]fail[/]"
        table.add_row(p.name, mark, _secs(p.duration_ms), escape(p.detail))
    out.print(table)


def _probe_line(probe: ProbeResult) -> str:
    mark = "[green]✔[/]" if probe.success else "[red]✘[/]"
    text = f"{mark} {probe.probe:<8} {escape(probe.target)}  {_secs(probe.duration_ms)}"
    ev = probe.evidence
    if ev is not None and ev.kind == "dns" and ev.addresses:
        text += f"  → {', '.join(ev.addresses)}"
    elif ev is not None and ev.kind == "tls" and ev.version:
        text += f"  {ev.version}, issuer {escape(ev.issuer)}, expires {ev.not_after}"
    elif ev is not None and ev.kind in {"http", "manifest", "token"} and ev.status is not None:
        text += f"  → {ev.status}"
        if ev.kind == "manifest" and ev.digest:
            text += f" {ev.digest}"
        if ev.kind == "manifest" and ev.ratelimit_remaining:
            text += f" (ratelimit-remaining {ev.ratelimit_remaining})"
    if not probe.success and probe.error:
        text += f"\n      [red]{escape(probe.error)}[/]"
    return text


def _endpoints(reports: list[EndpointReport]) -> None:
    if not reports:
        return
    out.print("[bold]endpoints[/] (in the order the runtime tries them)")
    for r in reports:
        state = "[green]ok[/]" if r.success else f"[red]{r.cause}[/]"
        out.print(
            f"  {r.endpoint.role:<8} {escape(r.endpoint.url)}  {state}  {_secs(r.duration_ms)}"
        )
        for probe in r.probes:
            out.print(f"    {_probe_line(probe)}")


def _warnings(warnings: list[str]) -> None:
    for w in warnings:
        out.print(f"[yellow]warning[/] {escape(w)}")


def render_pull(result: PullTestResult) -> None:
    head = f"[bold]pullcheck {result.mode}[/] {escape(result.image)}"
    if result.reference and result.reference != result.image:
        head += f"  ({escape(result.reference)})"
    head += f"  node {escape(result.node)}"
    if result.runtime is not None:
        rt = result.runtime
        head += f"  {rt.runtime_name} {rt.runtime_version} (CRI {rt.api_version})"
    out.print(head)
    if result.refused:
        out.print(f"[bold yellow]REFUSED[/]  {result.refused}: {escape(result.summary)}")
    else:
        _verdict(result.success, result.cause, result.summary, result.remedy)
    if result.runtime_error:
        out.print(f"  [bold]runtime[/] {escape(result.runtime_error)}")
    _warnings(result.warnings)
    info = result.image_info
    if info is not None:
        state = "already present" if info.present_before else "not present before"
        if info.image_id:
            state += f"; id {info.image_id}, {_size(info.size_bytes)}"
        if info.repo_digest:
            state += f", {info.repo_digest}"
        if info.removed:
            state += "; removed after the test"
        out.print(f"[bold]image[/] {escape(state)}")
    if len(result.credentials) > 1 or any(c.source != "anonymous" for c in result.credentials):
        for c in result.credentials:
            out.print(f"[bold]credential[/] {escape(c.source)}: {'ok' if c.ok else c.cause}")
    _phases(result.phases)
    _endpoints(result.endpoints)
    out.print(f"total {_secs(result.duration_ms)}")


def render_probe(report: ProbeReport) -> None:
    out.print(
        f"[bold]pullcheck probe[/] {escape(report.target)}  registry "
        f"{escape(report.registry)}  node {escape(report.node)}"
    )
    _verdict(report.success, report.cause, report.summary, report.remedy)
    _warnings(report.warnings)
    _endpoints(report.endpoints)
    out.print(f"total {_secs(report.duration_ms)}")


def human_size(n: int | None) -> str:
    return _size(n)
