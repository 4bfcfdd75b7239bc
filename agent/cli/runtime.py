"""``pullcheck runtime``: CRI Version, Status and ImageFsInfo of this node's runtime."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from agent.cli._options import EXIT_FAILED, EXIT_OK, cri_options, json_option

if TYPE_CHECKING:
    from agent.cri import CriClient, FilesystemUsage, RuntimeStatus, RuntimeVersion


async def _query(
    client: CriClient,
) -> tuple[str, str, RuntimeVersion, RuntimeStatus, list[FilesystemUsage]]:
    return (
        client.endpoint,
        client.api_version,
        await client.version(),
        await client.status(),
        await client.image_fs_info(),
    )


@click.command("runtime")
@cri_options
@json_option
def runtime(as_json: bool, **params: Any) -> int:
    """Show the runtime's version, its conditions and the image filesystem usage."""
    import asyncio  # imported here, not above: see agent/cli/__init__.py
    from dataclasses import asdict

    from agent.cli import _render
    from agent.cli._render import clean
    from agent.cli._runtime import report_unavailable, with_runtime
    from agent.cri import RuntimeUnavailable

    try:
        endpoint, api, version, status, fs = asyncio.run(with_runtime(params, _query))
    except RuntimeUnavailable as exc:
        return report_unavailable(exc, as_json)
    ready = status.runtime_ready
    if as_json:
        print(
            json.dumps(
                {
                    "success": ready,
                    "endpoint": endpoint,
                    "api_version": api,
                    "version": asdict(version),
                    "status": asdict(status),
                    "image_filesystems": [asdict(f) for f in fs],
                },
                indent=2,
            )
        )
        return EXIT_OK if ready else EXIT_FAILED
    out = _render.out
    out.print(f"[bold]endpoint[/]  {clean(endpoint)} (CRI {clean(api)})")
    out.print(
        f"[bold]runtime[/]   {clean(version.runtime_name)} "
        f"{clean(version.runtime_version)} (API {clean(version.runtime_api_version)})"
    )
    for cond in status.conditions:
        word = _render.yes_no(cond.status)
        mark = f"[green]{word}[/]" if cond.status else f"[red]{word}[/]"
        extra = f"  {clean(cond.reason)}: {clean(cond.message)}" if cond.reason else ""
        out.print(f"[bold]{clean(cond.type)}[/] {mark}{extra}")
    for f in fs:
        out.print(
            f"[bold]image fs[/]  {clean(f.mountpoint)}  used "
            f"{_render.human_size(f.used_bytes)}, {f.inodes_used} inodes"
        )
    return EXIT_OK if ready else EXIT_FAILED
