"""``pullcheck pod NAME``: from a pod stuck on its image to the cause, container by container.

Reads as the caller (kubeconfig and context like kubectl): the pod, its Events and its pull
secrets (checked, never printed). With ``--aggregator`` it also asks the aggregator for a pull
test on the pod's node with the pod's secrets — the aggregator reads the Secrets itself, so
they never pass through this terminal — and for the node's images (the policy check).
Exit 0: no container waits on an image (or every pull test works now); 1: a pull problem
found; 2: usage; 3: the API could not be read (the message names the verb and resource).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from agent.cli._kube import kube_options, namespace_option, pod_name, run_api
from agent.cli._options import EXIT_FAILED, EXIT_OK, json_option, token_option, verbose_option

if TYPE_CHECKING:
    from collections.abc import Sequence

    from agent.cli._aggregator import Aggregator
    from agent.cluster.pods.models import ContainerPullTest
    from agent.cri.types import ImageInfo
    from agent.pods.engine import PodFacts
    from agent.pods.models import ContainerReport, PodReport

_PULL_TEST_WAIT = 900.0  # seconds for the aggregator's answer (its own deadline is lower)

aggregator_option = click.option(
    "--aggregator",
    "aggregator_url",
    metavar="URL",
    envvar="PULLCHECK_AGGREGATOR_URL",
    help="Also run a pull test on the pod's node and read its images through this aggregator "
    "[env PULLCHECK_AGGREGATOR_URL].",
)


@click.command("pod")
@click.argument("name", callback=pod_name)
@namespace_option
@kube_options
@aggregator_option
@token_option
@verbose_option
@json_option
def pod(
    name: str,
    namespace: str | None,
    kubeconfig: str | None,
    context: str | None,
    request_timeout: float,
    aggregator_url: str | None,
    token_file: Path,
    verbose: bool,
    as_json: bool,
) -> int:
    """Why pod NAME's containers cannot get their images: one verdict per container.

    For each container (init containers too) waiting in ErrImagePull, ImagePullBackOff,
    InvalidImageName or ErrImageNeverPull: the image, the node, how often and how long it
    failed, kubelet's message explained, the pull secrets kubelet would use (checked, never
    printed) and imagePullPolicy against the node's images; with --aggregator, a pull test on
    that node with the pod's secrets.
    """
    from agent.cli import _render
    from agent.kube import config
    from agent.kube.client import KubeReader
    from agent.pods.engine import gather, judge

    target = config.load(kubeconfig, context, namespace)

    async def read() -> PodFacts:
        async with KubeReader(target, request_timeout) as reader:
            return await gather(reader, target.namespace, name)

    facts = run_api(read)
    images: dict[str, list[ImageInfo]] | None = None
    tests: dict[str, ContainerPullTest] | None = None
    test_error, notes = "", []
    if aggregator_url is not None and facts.waiting and facts.node:
        from agent.cli._aggregator import Aggregator

        aggregator = Aggregator(aggregator_url, token_file)
        images, note = _node_images(aggregator, facts.node, facts)
        notes += note
        tests, test_error = _pull_tests(aggregator, facts)
    elif facts.waiting and not facts.node:
        notes.append("the pod is not scheduled to a node yet: no node-side check is possible")
    elif facts.waiting:
        test_error = "no pull test: pass --aggregator URL to test on the pod's node"
    report = judge(
        facts,
        images=images,
        tests=tests,
        test_error=test_error,
        aggregator=aggregator_url,
        extra_notes=notes,
    )
    if as_json:
        _render.print_json(report)
    else:
        _print(report, verbose)
    return EXIT_OK if all(c.cause == "ok" for c in report.containers) else EXIT_FAILED


def _node_images(
    aggregator: Aggregator, node: str, facts: PodFacts
) -> tuple[dict[str, list[ImageInfo]] | None, list[str]]:
    """node → images: the pod's node, and every node when a Never policy wants to know who."""
    from agent.cli._options import CommandError
    from agent.cluster.models import AgentList
    from agent.node.models import ImagesAnswer

    nodes = [node]
    if any(w.policy == "Never" for w in facts.waiting):
        try:
            listed = aggregator.call("GET", "/v1/agents", AgentList)
            nodes += sorted({a.node for a in listed.agents} - {node})
        except CommandError as exc:
            return None, [f"the nodes' images not read: {exc.format_message()}"]
    images: dict[str, list[ImageInfo]] = {}
    for name in nodes:
        try:
            answer = aggregator.call("GET", f"/v1/agents/{name}/images", ImagesAnswer)
        except CommandError as exc:
            if name == node:
                return None, [f"node {node}'s images not read: {exc.format_message()}"]
            continue
        images[name] = answer.images
    return images, []


def _pull_tests(
    aggregator: Aggregator, facts: PodFacts
) -> tuple[dict[str, ContainerPullTest] | None, str]:
    from agent.cli._options import CommandError
    from agent.cluster.pods.models import PodPullTests

    path = f"/v1/pods/{facts.namespace}/{facts.name}/pulltest"
    try:
        answer = aggregator.call("POST", path, PodPullTests, timeout=_PULL_TEST_WAIT)
    except CommandError as exc:
        return None, f"no pull test: {exc.format_message()}"
    return {t.container: t for t in answer.tests}, ""


def _when(report: ContainerReport) -> str:
    history = report.history
    if not history.failures:
        return "no failure events left (they expire after an hour)"
    what = "back-offs" if history.from_backoffs else "failed pulls"
    text = f"{history.failures} {what}"
    if history.failing_for_s is not None and history.first_seen is not None:
        minutes = history.failing_for_s / 60
        span = f"{minutes:.0f} min" if minutes >= 1 else f"{history.failing_for_s:.0f} s"
        text += f" over {span} (first {history.first_seen:%Y-%m-%d %H:%M:%S}Z)"
    return text


def _print(report: PodReport, verbose: bool) -> None:
    from agent.cli._render import clean, out, render_pull

    node = report.node or "(not scheduled)"
    out.print(
        f"[bold]pod[/] {clean(report.namespace)}/{clean(report.pod)}  node {clean(node)}  "
        f"{clean(report.phase)}  service account {clean(report.service_account)}"
    )
    if report.success:
        out.print("[green]no container is waiting on an image pull[/]")
    for c in report.containers:
        kind = "init container" if c.init else "container"
        policy = c.image_pull_policy or "unset"
        out.print(
            f"\n[bold]{kind} {clean(c.container)}[/]  {clean(c.image)}  "
            f"imagePullPolicy {clean(policy)}  {clean(c.reason)}, {clean(_when(c))}"
        )
        style = "green" if c.cause == "ok" else "bold red"
        out.print(f"  [{style}]{clean(c.cause)}[/]  {clean(c.summary)}")
        out.print(f"  [bold]remedy[/] {clean(c.remedy)}")
        if c.message:
            out.print(f"  [bold]kubelet[/] {clean(c.message)}")
        for trap in c.policy:
            out.print(f"  [bold]policy[/] {clean(trap.summary)} — {clean(trap.remedy)}")
        if c.pull_secrets.status != "not_pulled":
            out.print(f"  [bold]pull secrets[/] {clean(c.pull_secrets.detail)}")
        if c.pull_test is not None:
            out.print(f"  [bold]pull test on {clean(report.node)}[/]:")
            render_pull(c.pull_test, verbose)
        elif c.pull_test_error:
            out.print(f"  [dim]{clean(c.pull_test_error)}[/]")
    _secret_lines(report)
    for note in report.notes:
        out.print(f"[yellow]note[/] {clean(note)}")


def _secret_lines(report: PodReport) -> None:
    from agent.cli._render import clean, out

    if not report.containers:
        return
    if not report.pull_secrets:
        out.print("\n[bold]pull secrets[/] none named by the pod")
        return
    out.print("\n[bold]pull secrets[/] (kubelet uses the pod's spec.imagePullSecrets, in order)")
    for s in report.pull_secrets:
        if s.status == "ok":
            keys: Sequence[str] = s.registries
            out.print(
                f"  {clean(s.name)}: ok, {clean(s.type)}, registries {clean(', '.join(keys))}"
            )
        else:
            out.print(f"  {clean(s.name)}: [red]{clean(s.status)}[/] {clean(s.detail)}")
