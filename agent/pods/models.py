"""What ``pullcheck pod`` and ``pullcheck pods`` print with ``--json`` (one object each).

Fields are only ever added, never renamed. Nothing here holds a credential: secrets are named,
typed and listed by registry key only.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict

from agent.models import PullTestResult

__all__ = [
    "ContainerReport",
    "Explained",
    "History",
    "ImageSecretsReport",
    "PodLine",
    "PodReport",
    "PodsReport",
    "PolicyReport",
    "SecretReport",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Explained(_Model):
    """kubelet's message explained offline (``pullcheck explain``)."""

    cause: str
    summary: str
    remedy: str
    fragment: str  # the words that decided


class History(_Model):
    """From the pod's Events: how often and since when the image could not be had."""

    failures: int
    first_seen: dt.datetime | None
    last_seen: dt.datetime | None
    failing_for_s: float | None  # first to last seen
    from_backoffs: bool = False  # the pull-failure events expired; back-offs were counted


class PolicyReport(_Model):
    kind: str
    summary: str
    remedy: str
    nodes: list[str] = []
    tags: list[str] = []


class SecretReport(_Model):
    """One pull secret the pod names: usable (``ok``) or what is wrong with it."""

    name: str
    status: Literal["ok", "missing", "forbidden", "wrong_type", "undecodable", "error"]
    detail: str
    type: str
    registries: list[str]  # the registry keys it holds


class ImageSecretsReport(_Model):
    """The pod's pull secrets against this container's image, under kubelet's rules."""

    registry: str
    status: Literal["matched", "no_match", "no_secrets", "invalid_image", "not_pulled"]
    matched: list[str]
    detail: str
    fix: str


class ContainerReport(_Model):
    container: str
    init: bool
    image: str
    image_pull_policy: str
    reason: str  # kubelet's waiting reason
    message: str  # kubelet's waiting message (redacted)
    cause: str  # the verdict: the pull test's cause, else the checks', else the message's
    summary: str
    remedy: str
    history: History
    explanation: Explained | None
    policy: list[PolicyReport]
    pull_secrets: ImageSecretsReport
    pull_test: PullTestResult | None = None
    pull_test_error: str = ""  # why there is no pull test


class PodReport(_Model):
    """``pullcheck pod NAME``: every container of the pod waiting on its image."""

    success: bool  # no container waits on an image pull
    namespace: str
    pod: str
    node: str  # "" while unscheduled
    phase: str
    service_account: str
    containers: list[ContainerReport]
    pull_secrets: list[SecretReport]
    notes: list[str]  # checks that could not run (a missing permission), ServiceAccount notes
    aggregator: str | None  # the aggregator asked, if any


class PodLine(_Model):
    namespace: str
    pod: str
    node: str
    container: str
    image: str
    reason: str
    cause: str
    summary: str


class PodsReport(_Model):
    """``pullcheck pods``: one line per container waiting on an image pull."""

    success: bool
    namespace: str | None  # None: all namespaces
    pods: list[PodLine]
    notes: list[str]
