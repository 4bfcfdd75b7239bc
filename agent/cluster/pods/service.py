"""The aggregator's pod work: its Kubernetes clients, the on-demand pull tests of a pod, and the
automatic diagnosis for each term this replica leads.

The API is reached as the aggregator (``aggregator.discovery``'s client settings: in-cluster
service account, ``api_url`` or ``kubeconfig``), built on first use, so an aggregator that never
tests a pod never needs the API. What it needs (components/pod-diagnosis): ``get`` pods and
secrets and serviceaccounts, ``list``/``watch`` pods, ``create``/``get``/``patch`` events.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
from collections.abc import Callable
from typing import Final

from lightkube import AsyncClient
from prometheus_client import CollectorRegistry

from agent.cluster.client import AgentClient
from agent.cluster.discovery import AgentTarget, kube_client
from agent.cluster.pods.diagnosis import PodDiagnoser
from agent.cluster.pods.metrics import PodMetrics
from agent.cluster.pods.models import ContainerPullTest, PodPullTests
from agent.cluster.pods.pulltests import NodeTester, Targets, container_test
from agent.credentials import Keyring
from agent.kube.client import KubeReader
from agent.kube.config import KubeTarget
from agent.kube.events import EventRecorder
from agent.kube.watch import Reflector, http_client, resource_path
from agent.models import PullTestResult
from agent.pods.secrets import pull_secrets
from agent.pods.waiting import node_of, waiting_on_pull
from agent.service.config import Settings

__all__ = ["COMPONENT", "PodService"]

log = logging.getLogger("pullcheck.aggregator.pods")

#: the Events' source and reportingComponent
COMPONENT: Final = "pullcheck-aggregator"
#: pull tests of one pod's images at once (fewer when aggregator.max_in_flight is lower)
POD_TESTS_AT_ONCE: Final = 8


class PodService:
    """Everything the aggregator does with pods; one per aggregator."""

    def __init__(
        self,
        settings: Settings,
        *,
        client: AgentClient,
        targets: Targets,
        label: Callable[[AgentTarget], str],
        registry: CollectorRegistry,
    ) -> None:
        self.settings = settings
        section = settings.aggregator.pod_diagnosis
        self.section = section
        self.metrics = PodMetrics(registry, max_registries=section.max_registry_labels)
        timeout = min(section.test_timeout, settings.limits.max_timeout)
        self.tester = NodeTester(
            client=client,
            targets=targets,
            label=label,
            mode="resolve" if settings.read_only else "pull",
            timeout=timeout,
        )
        self.diagnoser: PodDiagnoser | None = None  # while this replica leads
        self._kube: AsyncClient | None = None
        self._reader: KubeReader | None = None

    # --- clients --------------------------------------------------------------------------

    def kube(self) -> AsyncClient:
        """The aggregator's lightkube client (DiscoveryError naming what is missing)."""
        if self._kube is None:
            discovery = self.settings.aggregator.discovery
            self._kube, _server = kube_client(discovery)
        return self._kube

    def reader(self) -> KubeReader:
        if self._reader is None:
            kube = self.kube()
            target = KubeTarget(
                config=kube.config,
                namespace=self.settings.aggregator.discovery.namespace,
                source="the aggregator's service account",
            )
            self._reader = KubeReader(target)
        return self._reader

    async def aclose(self) -> None:
        reader, kube = self._reader, self._kube
        self._reader = self._kube = None
        if reader is not None:
            await reader.aclose()
        if kube is not None:
            await kube.close()

    # --- on demand ------------------------------------------------------------------------

    async def test_pod(self, namespace: str, name: str) -> PodPullTests:
        """Every container of the pod waiting on a pull, tested on its node with its pull
        secrets (read here, used for these tests only): one test per distinct image, at most
        :data:`POD_TESTS_AT_ONCE` at a time. Raises ``KubeApiError``."""
        reader = self.reader()
        pod = await reader.get_pod(namespace, name)
        raw = pod.to_dict()
        node = node_of(raw)
        waiting = waiting_on_pull(raw)
        secrets = await pull_secrets(pod, reader) if waiting else None
        keyring = secrets.keyring if secrets is not None else None
        slots = asyncio.Semaphore(min(POD_TESTS_AT_ONCE, self.settings.aggregator.max_in_flight))

        async def test(image: str, keyring: Keyring | None) -> PullTestResult | str:
            async with slots:
                return await self.tester.run(node, image, keyring)

        images = list(dict.fromkeys(w.image for w in waiting))  # the same image: one test
        found = await asyncio.gather(*(test(image, keyring) for image in images))
        outcomes = dict(zip(images, found, strict=True))
        del keyring, secrets
        tests: list[ContainerPullTest] = [
            container_test(w.container, w.image, outcomes[w.image]) for w in waiting
        ]
        return PodPullTests(namespace=namespace, pod=name, node=node, tests=tests)

    # --- automatic diagnosis (leader only) ------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Watch pods and diagnose, for one term of leadership (``while_leading`` runs this)."""
        section = self.section
        kube = self.kube()
        recorder = EventRecorder(kube, component=COMPONENT, instance=_instance())
        diagnoser = self.diagnoser = PodDiagnoser(
            section,
            reader=self.reader(),
            tester=self.tester,
            recorder=recorder,
            metrics=self.metrics,
        )
        http = http_client(kube, watch_timeout=section.watch_timeout)
        scopes: list[str | None] = list(section.namespaces) or [None]
        watches = [
            asyncio.create_task(
                Reflector(
                    http,
                    resource_path("pods", scope),
                    watch_timeout=section.watch_timeout,
                    on_restart=self.metrics.observe_restart,
                ).run(functools.partial(diagnoser.observe, namespace=scope))
            )
            for scope in scopes
        ]
        try:
            await diagnoser.work(stop)
        finally:
            for task in watches:
                task.cancel()
            await asyncio.gather(*watches, return_exceptions=True)
            await http.aclose()
            self.diagnoser = None


def _instance() -> str:
    return os.environ.get("POD_NAME") or socket.gethostname()
