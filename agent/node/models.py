"""What the node agent's API takes and answers, beyond the engine's result models.

The aggregator (``agent.cluster``) talks to agents with these same models, so both sides of the
boundary validate one schema. Answers reuse the engine's models (``PullTestResult``,
``ProbeReport``) and the CRI client's result types as they are.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field

from agent.cri import FilesystemUsage, ImageInfo, RuntimeStatus, RuntimeVersion
from agent.models import Cause, ProbeReport

__all__ = [
    "ConnectivityAnswer",
    "HealthAnswer",
    "ImagesAnswer",
    "PrepullBody",
    "PullOutcome",
    "PullTestBody",
    "ReadyAnswer",
    "RuntimeAnswer",
    "pulltest_query",
]

_IMAGE_LENGTH: Final = 1024  # characters of an image reference in a request


class PullTestBody(BaseModel):
    """``POST /v1/pulltest``: like the query form, plus credentials for this test only."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1, max_length=_IMAGE_LENGTH)
    mode: Literal["pull", "resolve"] | None = None
    timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    creds: str | None = Field(default=None, description="USER[:PASS], as crictl --creds")
    auth: str | None = Field(default=None, description="base64(USER:PASS), as crictl --auth")
    docker_config: dict[str, Any] | str | None = Field(
        default=None, description="a .dockerconfigjson object (or its JSON text)"
    )


async def pulltest_query(
    image: Annotated[str, Query(min_length=1, max_length=_IMAGE_LENGTH)],
    mode: Annotated[Literal["pull", "resolve"] | None, Query()] = None,
    timeout: Annotated[float | None, Query(gt=0, allow_inf_nan=False)] = None,
) -> PullTestBody:
    """``GET /v1/pulltest``'s query parameters, on the agent and the aggregator alike (a FastAPI
    dependency): the test of a :class:`PullTestBody` without credentials, under its rules."""
    return PullTestBody(image=image, mode=mode, timeout=timeout)


class PrepullBody(BaseModel):
    """``POST /v1/prepull`` on an agent: one image of a pre-pull job."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1, max_length=_IMAGE_LENGTH)
    policy: Literal["IfNotPresent", "Always"] = "IfNotPresent"
    timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    docker_config: dict[str, Any] | str | None = None


class PullOutcome(BaseModel):
    """``POST /v1/prepull``: what an agent reports for one pre-pull of one image."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    ok: bool
    skipped: bool = False  # already present (same digest): nothing was downloaded
    digest: str = ""
    cause: Cause | str | None = None  # the engine's cause, or agent_unreachable/agent_refused
    summary: str = ""
    remedy: str = ""
    duration_ms: float = 0.0
    registry: str = ""
    ratelimit_remaining: float | None = None
    ratelimit_window: float | None = None  # seconds, from "…;w=21600"


# --- the node's answers: the agent's routes declare them, the aggregator reads them ----------


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class HealthAnswer(_Answer):
    """``GET /healthz``: the process is alive, and which node it serves."""

    status: Literal["ok"]
    node: str


class ReadyAnswer(_Answer):
    """``GET /readyz`` (200 when ready, else 503): whether the runtime answers over CRI."""

    ready: bool
    runtime: str  # "containerd 1.6.20", or why it does not answer


class ImagesAnswer(_Answer):
    """``GET /v1/images``: the images on the node, as the runtime lists them."""

    node: str
    images: list[ImageInfo]


class ConnectivityAnswer(_Answer):
    """``GET /v1/connectivity``: the probes of the configured and recently seen registries."""

    node: str
    registries: list[ProbeReport]


class RuntimeAnswer(_Answer):
    """``GET /v1/runtime``: what ``crictl version``, ``info`` and ``imagefsinfo`` show."""

    node: str
    endpoint: str
    api_version: str  # as negotiated: "v1" or "v1alpha2"
    version: RuntimeVersion
    status: RuntimeStatus
    image_filesystems: list[FilesystemUsage]
