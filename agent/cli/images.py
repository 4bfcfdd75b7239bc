"""``pullcheck images``: the images the runtime has, like ``crictl images``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from agent.cli._options import EXIT_OK, cri_options, json_option

if TYPE_CHECKING:
    from agent.cri import CriClient, ImageInfo


async def _list(client: CriClient) -> list[ImageInfo]:
    return await client.list_images()


@click.command("images")
@cri_options
@json_option
def images(as_json: bool, **params: Any) -> int:
    """List images on this node (repo tags, digests, id, size)."""
    import asyncio  # imported here, not above: see agent/cli/__init__.py
    from dataclasses import asdict

    from agent.cli import _render
    from agent.cli._runtime import report_unavailable, with_runtime
    from agent.cri import RuntimeUnavailable

    try:
        found = asyncio.run(with_runtime(params, _list))
    except RuntimeUnavailable as exc:
        return report_unavailable(exc, as_json)
    if as_json:
        print(json.dumps({"success": True, "images": [asdict(i) for i in found]}, indent=2))
        return EXIT_OK
    table = _render.table("IMAGE", "TAG", "DIGEST", "IMAGE ID", "SIZE")
    for img in sorted(found, key=lambda i: (i.repo_tags or i.repo_digests or [i.id])[0]):
        digest = img.repo_digests[0].split("@", 1)[1][:19] if img.repo_digests else "<none>"
        rows = [t.rsplit(":", 1) for t in img.repo_tags] or [
            [(img.repo_digests or ["<none>"])[0].split("@", 1)[0], "<none>"]
        ]
        for repo, tag in rows:
            table.add_row(
                _render.cell(repo),
                _render.cell(tag),
                _render.cell(digest),
                _render.cell(img.id.removeprefix("sha256:")[:13]),
                _render.human_size(img.size),
            )
    _render.print_table(table)
    return EXIT_OK
