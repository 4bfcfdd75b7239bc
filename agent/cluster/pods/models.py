"""What the aggregator answers about pods (the JSON interface of ``/v1/pods…``)."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from agent.models import PullTestResult

__all__ = ["ContainerPullTest", "PodDiagnoses", "PodDiagnosis", "PodPullTests"]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ContainerPullTest(_Answer):
    """One container waiting on its image: the pull test on the pod's node with the pod's pull
    secrets, or why there is none (``error``: one line naming what is wrong, never a secret)."""

    container: str
    image: str
    result: PullTestResult | None = None
    error: str = ""


class PodPullTests(_Answer):
    """``POST /v1/pods/{namespace}/{name}/pulltest``: every container of the pod waiting on an
    image pull (``ErrImagePull``, ``ImagePullBackOff``, ``InvalidImageName``,
    ``ErrImageNeverPull``; init containers included), tested on the pod's node."""

    namespace: str
    pod: str
    node: str
    tests: list[ContainerPullTest]


class PodDiagnosis(_Answer):
    """A container the automatic diagnosis saw failing to pull, and the verdict of its test."""

    namespace: str
    pod: str
    container: str
    image: str
    node: str
    reason: str  # kubelet's waiting reason: ErrImagePull, ImagePullBackOff, …
    cause: str  # the pull test's cause (the engine's vocabulary), or "pending" / "error"
    summary: str
    remedy: str
    first_seen: dt.datetime
    last_seen: dt.datetime


class PodDiagnoses(_Answer):
    """``GET /v1/pods``: the current diagnoses (a pod that pulls fine again drops out)."""

    enabled: bool  # aggregator.pod_diagnosis.enabled
    leading: bool  # only the leading replica watches; a follower's list is empty
    pods: list[PodDiagnosis] = Field(default_factory=list)
