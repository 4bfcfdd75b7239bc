"""``pullcheck explain [TEXT…|-]``: explain image-pull failures in pasted text, offline.

Reads the text from the arguments, or from stdin with ``-`` (or with no argument when stdin is
not a terminal). Exit 0 when every pull failure found was explained, 1 when one could not be
classified (``unknown``) or none was found, 2 for usage errors.
"""

from __future__ import annotations

import json
import sys
from typing import BinaryIO

import click

from agent.cli._options import EXIT_FAILED, EXIT_OK, json_option
from agent.cli._printable import printable
from agent.errors import InvalidInput

_CHUNK = 64 * 1024


def _read(stream: BinaryIO, limit: int) -> str:
    """At most ``limit`` bytes plus one (so truncation shows), read in bounded chunks; bytes
    that are not UTF-8 are replaced, never an error."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(min(_CHUNK, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _text(texts: tuple[str, ...], limit: int) -> str:
    if texts and texts != ("-",):
        if "-" in texts:
            raise InvalidInput("explain: '-' (stdin) cannot be combined with TEXT arguments")
        return "\n".join(texts)
    if not texts and sys.stdin.isatty():
        raise InvalidInput(
            "explain: give the text as arguments, or pipe it in (e.g. `kubectl describe pod P "
            "| pullcheck explain`)"
        )
    return _read(sys.stdin.buffer, limit)


@click.command("explain")
@click.argument("texts", nargs=-1, metavar="[TEXT…|-]")
@json_option
def explain(texts: tuple[str, ...], as_json: bool) -> int:
    """Explain image-pull failures in pasted events, logs or errors (offline).

    TEXT is one error message or a whole paste: `kubectl describe pod`, `kubectl get events`,
    kubelet/containerd journal lines, crictl, kubeadm, docker or podman output. For each image
    that failed: the cause, what it means, the remedy, the words that decided and the command
    that confirms it on the node. Nothing is sent anywhere.
    """
    from agent import explain as engine

    found = engine.explain(_text(texts, engine.MAX_INPUT))
    code = EXIT_OK if found.findings and not found.unknown else EXIT_FAILED
    if as_json:
        print(json.dumps({"success": code == EXIT_OK, **found.as_dict()}, indent=2))
        return code
    if not found.findings:
        click.echo("no image-pull error found in the text")
        return code
    for number, f in enumerate(found.findings, 1):
        where = ", ".join(
            f"{label} {printable(value)}"
            for label, value in (
                ("node", f.node),
                ("container", f.container),
                ("runtime", f.runtime),
            )
            if value
        )
        times = f" (seen {f.count} times)" if f.count > 1 else ""
        click.echo(f"[{number}] {printable(f.image) or '(image not named)'}{times}")
        if where:
            click.echo(f"    where       {where}")
        click.echo(f"    cause       {f.cause}")
        click.echo(f"    what        {printable(f.summary)}")
        click.echo(f"    remedy      {printable(f.remedy)}")
        if f.fragment:
            click.echo(f"    decided by  …{printable(f.fragment)}…")
        click.echo(f"    confirm     {printable(f.confirm)}")
    if found.truncated:
        click.echo(f"note: the text was cut at {engine.MAX_INPUT} characters or lines")
    return code
