"""The automatic pod diagnosis' bookkeeping at scale: what each watch event and each piece of
work costs on the aggregator's event loop when many containers are tracked.

In one process, a :class:`~agent.cluster.pods.diagnosis.PodDiagnoser` (``max_tracked`` 100,000,
no Events) is fed what a watch of a large cluster sends: a list of ``--pods`` failing pods (one
container each, spread over ``--nodes`` nodes and ``--images`` images, in pages of 500), then
``--events`` watch events (kubelet's retries: ``ErrImagePull`` / ``ImagePullBackOff`` flips on
existing pods; every tenth a deletion, every tenth a new pod), then ``--work`` pieces of work
settled (a pod read and a verdict applied to every container of that work, with in-process
stand-ins for the API and the agent: no network, no rate limit). Pod objects are the fake
API's shapes
(``tests/fakes/kube_objects.py``). Printed: seconds per phase and for the whole process.

``--tree DIR`` imports ``agent`` from another tree (``git archive REV | tar -x -C DIR``).

``.venv/bin/python bench/bench_pod_diagnosis.py [--pods 50000] [--events 10000] [--work 2000]
[--tree DIR] [--json]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from cli_options import bounded_int  # noqa: E402

NAMESPACE = "shop"
PAGE = 500


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=bounded_int(1, 100_000), default=50_000)
    parser.add_argument("--events", type=bounded_int(0, 1_000_000), default=10_000)
    parser.add_argument("--work", type=bounded_int(0, 100_000), default=2_000)
    parser.add_argument("--nodes", type=bounded_int(1, 10_000), default=500)
    parser.add_argument("--images", type=bounded_int(1, 10_000), default=20)
    parser.add_argument("--tree", type=Path, help="import agent from this tree instead")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser.parse_args()


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from lightkube.resources.core_v1 import Pod
    from prometheus_client import CollectorRegistry

    from agent.cluster.pods.diagnosis import PodDiagnoser
    from agent.cluster.pods.metrics import PodMetrics
    from agent.kube.watch import Change, Listed, Synced
    from agent.models import PullTestResult
    from agent.service.config import PodDiagnosisSection
    from tests.fakes.kube_objects import Container, pod

    def failing(number: int, reason: str = "ImagePullBackOff") -> dict[str, Any]:
        image = f"registry.pullcheck.test:5000/team/app-{number % args.images}:v1"
        return pod(
            f"web-{number}",
            NAMESPACE,
            containers=[Container("app", image, waiting=reason, error="401")],  # type: ignore[arg-type]
            node=f"node-{number % args.nodes}",
        )

    class Reader:
        async def get_pod(self, namespace: str, name: str) -> Pod:
            return cast(Pod, Pod.from_dict(failing(int(name.rsplit("-", 1)[1]))))

        async def get_secret(self, namespace: str, name: str) -> Any:
            raise AssertionError("no pull secrets here")

        async def get_service_account(self, namespace: str, name: str) -> Any:
            from lightkube.resources.core_v1 import ServiceAccount

            return ServiceAccount.from_dict({"metadata": {"name": name}})

    class Tester:
        async def run(self, node: str, image: str, keyring: Any) -> PullTestResult | str:
            return f"no pullcheck agent found on node {node}"

    section = PodDiagnosisSection(
        enabled=True, max_tracked=100_000, max_pending=100_000, tests_per_minute=6000
    )
    diagnoser = PodDiagnoser(
        section,
        reader=Reader(),
        tester=Tester(),  # type: ignore[arg-type]
        recorder=None,
        metrics=PodMetrics(CollectorRegistry()),
    )

    class Unlimited:  # the rate limit paces real tests; here it would only measure sleeps
        def acquire(self, key: str) -> float:
            return 0.0

    diagnoser._limiter = Unlimited()  # type: ignore[assignment]
    figures: dict[str, Any] = {"pods": args.pods, "events": args.events, "work": args.work}
    objects = [failing(n) for n in range(args.pods)]
    started = time.perf_counter()
    for first in range(0, len(objects), PAGE):
        await diagnoser.observe(Listed(objects[first : first + PAGE], first=first == 0))
    await diagnoser.observe(Synced("1"))
    figures["list_s"] = time.perf_counter() - started

    changes: list[Change] = []
    for number in range(args.events):
        target = number * 7919 % args.pods
        if number % 10 == 9:
            changes.append(Change("DELETED", failing(target)))
        elif number % 10 == 8:
            changes.append(Change("ADDED", failing(args.pods + number)))
        else:
            reason = "ErrImagePull" if number % 2 else "ImagePullBackOff"
            changes.append(Change("MODIFIED", failing(target, reason)))
    started = time.perf_counter()
    for change in changes:
        await diagnoser.observe(change)
    figures["events_s"] = time.perf_counter() - started

    pending = list(diagnoser._pending)[: args.work]
    started = time.perf_counter()
    for work in pending:
        await diagnoser.settle(work)
    figures["work_s"] = time.perf_counter() - started
    figures["settled"] = len(pending)
    figures["tracked"] = len(diagnoser.diagnoses())
    return figures


def main() -> None:
    args = _parse()
    began = time.perf_counter()
    if args.tree is not None:
        tree = args.tree.resolve()
        if not (tree / "agent" / "__init__.py").is_file():
            raise SystemExit(f"--tree {tree}: no agent/__init__.py there")
        sys.path.insert(0, str(tree))
    else:
        sys.path.insert(0, str(ROOT))
    figures = asyncio.run(_run(args))
    figures["process_s"] = time.perf_counter() - began
    if args.json:
        print(json.dumps(figures))
        return
    for key, value in figures.items():
        print(f"{key:>10}  {value:.2f}" if isinstance(value, float) else f"{key:>10}  {value}")


if __name__ == "__main__":
    main()
