"""``pullcheck prepull``: warm-cache jobs on the aggregator — list, show, run now."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import httpx
from rich.markup import escape
from rich.table import Table

from agent.cli import _render
from agent.cli._options import EXIT_FAILED, EXIT_OK, EXIT_USAGE, json_option

url_option = click.option(
    "--url",
    envvar="PULLCHECK_AGGREGATOR_URL",
    default="http://127.0.0.1:8480",
    show_default=True,
    help="The aggregator [env PULLCHECK_AGGREGATOR_URL].",
)
token_option = click.option(
    "--token-file",
    envvar="PULLCHECK_TOKEN_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("/var/run/secrets/pullcheck/token"),
    show_default=True,
    help="File holding the bearer token [env PULLCHECK_TOKEN_FILE].",
)


def _call(method: str, url: str, token_file: Path) -> tuple[int, dict[str, Any]]:
    try:
        token = token_file.read_text().strip()
    except OSError as exc:
        raise click.UsageError(f"token file {token_file}: {exc.strerror}") from None
    try:
        reply = httpx.request(
            method, url, headers={"Authorization": f"Bearer {token}"}, timeout=30, trust_env=False
        )
        body = reply.json()
    except httpx.HTTPError as exc:
        raise click.ClickException(f"aggregator at {url}: {exc}") from None
    except ValueError:
        raise click.ClickException(f"aggregator at {url}: not a JSON answer") from None
    return reply.status_code, body if isinstance(body, dict) else {"value": body}


def _finish(status: int, body: dict[str, Any], as_json: bool) -> int | None:
    """Print errors (and JSON); return an exit code when there is nothing more to render."""
    if as_json:
        print(json.dumps(body, indent=2))
        return EXIT_OK if status < 400 else EXIT_FAILED
    if status >= 400:
        _render.err.print(
            f"[red]{escape(str(body.get('error')))}[/] {escape(str(body.get('message')))}"
        )
        return EXIT_USAGE if status in (400, 404) else EXIT_FAILED
    return None


@click.group("prepull")
def prepull() -> None:
    """Warm-cache (pre-pull) jobs run by the aggregator."""


@prepull.command("jobs")
@url_option
@token_option
@json_option
def jobs(url: str, token_file: Path, as_json: bool) -> int:
    """List jobs with schedule and progress."""
    status, body = _call("GET", f"{url.rstrip('/')}/v1/prepull/jobs", token_file)
    code = _finish(status, body, as_json)
    if code is not None:
        return code
    if body.get("error"):
        _render.out.print(
            f"[yellow]job file rejected[/] {escape(body['error'])} (previous jobs run)"
        )
    table = Table(box=None, pad_edge=False)
    for col in ("JOB", "TRIGGER", "POLICY", "READY", "PULLING", "FAILED", "NEXT RUN"):
        table.add_column(col)
    for job in body.get("jobs", []):
        trigger = " + ".join(
            t
            for t in (
                job["schedule"] and f"{job['schedule']} {job['timezone']}",
                job["on_new_node"] and "new nodes",
            )
            if t
        )
        wave = job.get("wave", {})
        table.add_row(
            job["name"],
            trigger,
            job["policy"],
            f"{job['images_ready']}/{job['images_total']}",
            str(wave.get("pulling", 0)),
            str(wave.get("failed", 0)),
            job.get("next_run") or "-",
        )
    _render.out.print(table)
    return EXIT_OK


@prepull.command("job")
@click.argument("name")
@url_option
@token_option
@json_option
def job(name: str, url: str, token_file: Path, as_json: bool) -> int:
    """One job per node and image: phase, digest, duration, cause and remedy."""
    status, body = _call("GET", f"{url.rstrip('/')}/v1/prepull/jobs/{name}", token_file)
    code = _finish(status, body, as_json)
    if code is not None:
        return code
    _render.out.print(
        f"[bold]{escape(name)}[/] {body['images_ready']}/{body['images_total']} "
        f"ready, running: {body['running']}"
    )
    for registry, until in body.get("paused_registries", {}).items():
        _render.out.print(f"[yellow]paused[/] {escape(registry)} until {until} (rate limit)")
    table = Table(box=None, pad_edge=False)
    for col in ("NODE", "IMAGE", "PHASE", "TRIES", "DIGEST", "TIME", "NOTE / CAUSE: REMEDY"):
        table.add_column(col)
    for item in body.get("nodes", []):
        why = item.get("cause") or ""
        if why and item.get("remedy"):
            why += f": {item['remedy']}"
        elif not why and item.get("skipped"):
            why = item.get("summary") or "already present"
        table.add_row(
            item["node"],
            item["image"],
            item["phase"],
            str(item["attempts"]),
            (item.get("digest") or "")[:19],
            f"{item['duration_ms'] / 1000:.1f}s",
            escape(why),
        )
    _render.out.print(table)
    return EXIT_OK


@prepull.command("run")
@click.argument("name")
@url_option
@token_option
@json_option
def run(name: str, url: str, token_file: Path, as_json: bool) -> int:
    """Run a job now, within its caps."""
    status, body = _call("POST", f"{url.rstrip('/')}/v1/prepull/jobs/{name}/run", token_file)
    code = _finish(status, body, as_json)
    if code is not None:
        return code
    _render.out.print(f"started {escape(name)}")
    return EXIT_OK
