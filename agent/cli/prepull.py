"""``pullcheck prepull``: warm-cache jobs on the aggregator — list, show, run now.

The commands of the ``prepull`` group declared in :data:`agent.cli.COMMANDS`; the HTTP client,
the aggregator's models and rich are imported when a command runs, not to parse it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import click

from agent.cli._options import EXIT_OK, json_option, token_option, url_option

if TYPE_CHECKING:
    from pydantic import BaseModel

    from agent.cli._aggregator import Aggregator
    from agent.cluster.models import JobList
    from agent.cluster.prepull.models import JobStatus


def render_jobs(body: JobList) -> None:
    """The job list: schedule, policy and progress per job."""
    from agent.cli import _render
    from agent.cli._render import cell, clean

    if body.error:
        _render.out.print(f"[yellow]job file rejected[/] {clean(body.error)} (previous jobs run)")
    grid = _render.table("JOB", "TRIGGER", "POLICY", "READY", "PULLING", "FAILED", "NEXT RUN")
    for job in body.jobs:
        triggers = (
            job.schedule and f"{job.schedule} {job.timezone}",
            job.on_new_node and "new nodes",
        )
        grid.add_row(
            cell(job.name),
            cell(" + ".join(t for t in triggers if t)),
            cell(job.policy),
            cell(f"{job.images_ready}/{job.images_total}"),
            cell(job.wave.get("pulling", 0)),
            cell(job.wave.get("failed", 0)),
            cell(job.next_run or "-"),
        )
    _render.print_table(grid)


def render_job(body: JobStatus) -> None:
    """One job per node and image: phase, tries, digest, time, and why not."""
    from agent.cli import _render
    from agent.cli._render import cell, clean

    _render.out.print(
        f"[bold]{clean(body.name)}[/] {body.images_ready}/{body.images_total} ready, "
        f"running: {_render.yes_no(body.running)}"
    )
    for registry, until in body.paused_registries.items():
        _render.out.print(f"[yellow]paused[/] {clean(registry)} until {clean(until)} (rate limit)")
    grid = _render.table(
        "NODE", "IMAGE", "PHASE", "TRIES", "DIGEST", "TIME", "NOTE / CAUSE: REMEDY"
    )
    for item in body.nodes:
        why = item.cause or ""
        if why and item.remedy:
            why += f": {item.remedy}"
        elif not why and item.skipped:
            why = item.summary or "already present"
        grid.add_row(
            cell(item.node),
            cell(item.image),
            cell(item.phase),
            cell(item.attempts),
            cell(item.digest[:19]),
            cell(f"{item.duration_ms / 1000:.1f}s"),
            cell(why),
        )
    _render.print_table(grid)


def _print_json(body: BaseModel) -> None:
    print(json.dumps(body.model_dump(mode="json"), indent=2))


def _aggregator(url: str, token_file: Path) -> Aggregator:
    """The aggregator's client, imported when a command runs (not to parse its options)."""
    from agent.cli._aggregator import Aggregator

    return Aggregator(url, token_file)


@click.command("jobs")
@url_option
@token_option
@json_option
def jobs(url: str, token_file: Path, as_json: bool) -> int:
    """List jobs with schedule and progress."""
    from agent.cluster.models import JobList

    body = _aggregator(url, token_file).call("GET", "/v1/prepull/jobs", JobList)
    if as_json:
        _print_json(body)
    else:
        render_jobs(body)
    return EXIT_OK


@click.command("job")
@click.argument("name")
@url_option
@token_option
@json_option
def job(name: str, url: str, token_file: Path, as_json: bool) -> int:
    """One job per node and image: phase, digest, duration, cause and remedy."""
    from agent.cluster.models import JobDetail

    body = _aggregator(url, token_file).call(
        "GET", f"/v1/prepull/jobs/{quote(name, safe='')}", JobDetail
    )
    if as_json:
        _print_json(body)
    else:
        render_job(body)
    return EXIT_OK


@click.command("run")
@click.argument("name")
@url_option
@token_option
@json_option
def run(name: str, url: str, token_file: Path, as_json: bool) -> int:
    """Run a job now, within its caps."""
    from agent.cli import _render
    from agent.cli._render import clean
    from agent.cluster.models import JobStarted

    body = _aggregator(url, token_file).call(
        "POST", f"/v1/prepull/jobs/{quote(name, safe='')}/run", JobStarted
    )
    if as_json:
        _print_json(body)
    else:
        _render.out.print(f"started {clean(name)}")
    return EXIT_OK
