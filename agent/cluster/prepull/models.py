"""Warm-cache (pre-pull) jobs: the declared job, the outcome of one node-image pull, and status.

A job file is YAML: ``jobs: [ {name, images, schedule, timezone, on_new_node, policy, timeout,
retries, docker_config, nodes, pacing}, … ]`` (see the README). Field errors name the field.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.reference import InvalidReference, parse

__all__ = [
    "Backoff",
    "Job",
    "JobFile",
    "JobStatus",
    "NodeImageStatus",
    "NodeSelector",
    "Pacing",
    "Phase",
]

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_PERCENT = re.compile(r"^([1-9][0-9]?|100)%$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Backoff(_Model):
    """Tries per node-image pull: ``initial`` seconds before the 2nd, doubling up to ``maximum``."""

    attempts: int = Field(default=3, ge=1, le=20)
    initial: float = Field(default=1.0, gt=0, le=3600)
    maximum: float = Field(default=30.0, gt=0, le=86400)

    def delay(self, failed_attempts: int) -> float:
        """Seconds to wait after ``failed_attempts`` (≥ 1) failures."""
        return float(min(self.maximum, self.initial * 2 ** (failed_attempts - 1)))


class NodeSelector(_Model):
    names: list[str] = Field(default=["*"], description="globs over node names")
    labels: dict[str, str] = Field(
        default={}, description="node labels that must match (where the aggregator knows them)"
    )


class Pacing(_Model):
    """Cluster-wide pacing of one job."""

    max_parallel_nodes: int | str = Field(
        default="25%", description="nodes pulling at once: a number or a percentage of nodes"
    )
    per_registry: int = Field(
        default=4, ge=1, le=10_000, description="concurrent pulls per registry"
    )
    jitter: float = Field(
        default=30.0, ge=0, le=3600, description="random delay (s) before a scheduled run starts"
    )
    ratelimit_pause_below: int = Field(
        default=10, ge=0, description="pause pulls from a registry below this ratelimit-remaining"
    )

    @field_validator("max_parallel_nodes", mode="before")
    @classmethod
    def _nodes_type(cls, value: object) -> object:
        # without this, `true` would pass as 1 and 1.5 give two errors (one per union member)
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"{value!r} is neither a number of nodes nor a percentage like 25%")
        return value

    @field_validator("max_parallel_nodes")
    @classmethod
    def _nodes(cls, value: int | str) -> int | str:
        if isinstance(value, int):
            if value < 1:
                raise ValueError("must be at least 1")
            return value
        if not _PERCENT.match(value.strip()):
            raise ValueError(f"{value!r} is neither a number of nodes nor a percentage like 25%")
        return value.strip()

    def parallel_nodes(self, total: int) -> int:
        """The cap for a cluster of ``total`` nodes (at least 1)."""
        if isinstance(self.max_parallel_nodes, int):
            return self.max_parallel_nodes
        percent = int(self.max_parallel_nodes.rstrip("%"))
        return max(1, total * percent // 100)


class Job(_Model):
    name: str
    images: list[str] = Field(min_length=1, max_length=256)
    schedule: str | None = Field(default=None, description="cron, 5 fields, in `timezone`")
    timezone: str = "UTC"
    on_new_node: bool = False
    policy: Literal["IfNotPresent", "Always"] = "IfNotPresent"
    timeout: float = Field(default=600.0, gt=0, le=7200, description="seconds per pull")
    retries: Backoff = Backoff()
    docker_config: str | None = Field(default=None, description="a mounted .dockerconfigjson")
    nodes: NodeSelector = NodeSelector()
    pacing: Pacing = Pacing()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be a DNS label: lowercase letters, digits and '-', ≤ 63")
        return value

    @field_validator("images")
    @classmethod
    def _images(cls, value: list[str]) -> list[str]:
        for image in value:
            try:
                parse(image)
            except InvalidReference as exc:
                raise ValueError(f"{image!r}: {exc.reason}") from None
        if len(set(value)) != len(value):
            raise ValueError("lists an image twice")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from croniter import CroniterBadDateError, croniter

        fields = value.split()
        if len(fields) != 5 or not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a 5-field cron expression")
        # croniter's "R" picks a random time per evaluation: every next-run would differ
        if any(item.strip().upper().startswith("R") for f in fields for item in f.split(",")):
            raise ValueError(f"{value!r}: random (R) fields are not supported")
        try:  # e.g. "0 0 30 2 *" parses but never fires
            croniter(value, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
        except CroniterBadDateError:
            raise ValueError(f"{value!r} never fires (no such date)") from None
        return value

    @model_validator(mode="after")
    def _trigger(self) -> Job:
        if self.schedule is None and not self.on_new_node:
            raise ValueError("needs a schedule, on_new_node: true, or both")
        return self


class JobFile(_Model):
    jobs: list[Job] = []

    @model_validator(mode="after")
    def _unique(self) -> JobFile:
        names = [j.name for j in self.jobs]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"job names must be unique: {', '.join(twice)}")
        return self


class Phase(StrEnum):
    PENDING = "pending"
    PULLING = "pulling"
    DONE = "done"
    FAILED = "failed"


class NodeImageStatus(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    node: str
    image: str
    phase: Phase = Phase.PENDING
    attempts: int = 0
    skipped: bool = False
    digest: str = ""
    duration_ms: float = 0.0
    cause: str | None = None
    summary: str = ""
    remedy: str = ""
    started_at: str = ""  # when the latest try was sent to the node (RFC 3339, ms)
    updated_at: str = ""


class JobStatus(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str
    schedule: str | None
    timezone: str
    on_new_node: bool
    policy: str
    running: bool = False
    next_run: str | None = None
    last_started: str | None = None
    last_finished: str | None = None
    images_total: int = 0
    images_ready: int = 0
    paused_registries: dict[str, str] = {}  # registry -> until (RFC 3339), from rate limits
    wave: dict[str, int] = {}  # pulling / done / failed / pending / parallel_nodes
    nodes: list[NodeImageStatus] = []
