"""``pullcheck pods``: every pod with a container waiting on its image, one line each with the
cause (kubelet's message explained, the pull secrets and the events checked as ``pod`` does).

Exit 0: none found; 1: some found; 2: usage; 3: the pods could not be listed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from agent.cli._kube import kube_options, namespace_option, run_api
from agent.cli._options import EXIT_FAILED, EXIT_OK, json_option

if TYPE_CHECKING:
    from agent.pods.engine import PodFacts
    from agent.pods.models import PodsReport

#: failing pods whose Events and pull secrets are read; beyond, kubelet's message alone decides
MAX_DETAILED = 200


@click.command("pods")
@namespace_option
@click.option("-A", "--all-namespaces", is_flag=True, help="Every namespace.")
@kube_options
@json_option
def pods(
    namespace: str | None,
    all_namespaces: bool,
    kubeconfig: str | None,
    context: str | None,
    request_timeout: float,
    as_json: bool,
) -> int:
    """List every pod with image-pull failures, one line per container with the cause."""
    if all_namespaces and namespace:
        raise click.UsageError("-n/--namespace and -A/--all-namespaces exclude each other")
    from agent.cli import _render
    from agent.kube import config
    from agent.kube.client import KubeReader
    from agent.pods.engine import facts_of, judge
    from agent.pods.models import PodLine, PodsReport
    from agent.pods.waiting import waiting_on_pull

    target = config.load(kubeconfig, context, namespace)
    scope = None if all_namespaces else target.namespace

    async def read() -> list[PodFacts]:
        async with KubeReader(target, request_timeout) as reader:
            listed = [p for p in await reader.list_pods(scope) if waiting_on_pull(p.to_dict())]
            return [
                await facts_of(reader, p, detailed=number < MAX_DETAILED)
                for number, p in enumerate(listed)
            ]

    found = run_api(read)
    lines: list[PodLine] = []
    notes: dict[str, None] = {}
    if len(found) > MAX_DETAILED:
        notes[f"{len(found)} pods fail; the first {MAX_DETAILED} were checked in detail"] = None
    for facts in found:
        report = judge(facts)
        notes.update(dict.fromkeys(n for n in report.notes if "not read" in n))
        lines += [
            PodLine(
                namespace=report.namespace,
                pod=report.pod,
                node=report.node,
                container=c.container,
                image=c.image,
                reason=c.reason,
                cause=c.cause,
                summary=c.summary,
            )
            for c in report.containers
        ]
    answer = PodsReport(success=not lines, namespace=scope, pods=lines, notes=list(notes))
    if as_json:
        _render.print_json(answer)
    else:
        _print(answer)
    return EXIT_OK if answer.success else EXIT_FAILED


def _print(answer: PodsReport) -> None:
    from agent.cli._render import cell, clean, out, print_table, table

    if not answer.pods:
        where = f"namespace {answer.namespace}" if answer.namespace else "any namespace"
        out.print(f"no pod in {clean(where)} is waiting on an image pull")
    else:
        grid = table("NAMESPACE", "POD", "CONTAINER", "NODE", "IMAGE", "REASON", "CAUSE", "SUMMARY")
        for line in answer.pods:
            grid.add_row(
                *(cell(v) for v in (line.namespace, line.pod, line.container, line.node)),
                cell(line.image),
                cell(line.reason),
                cell(line.cause, "red"),
                cell(line.summary),
            )
        print_table(grid)
    for note in answer.notes:
        out.print(f"[yellow]note[/] {clean(note)}")
