"""Plain results of CRI calls, independent of the CRI API version the runtime speaks."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RuntimeVersion:
    version: str  # the CRI "kubelet API" version the runtime reports (containerd: "0.1.0")
    runtime_name: str  # "containerd"
    runtime_version: str  # e.g. "1.6.20~ds1"
    runtime_api_version: str  # "v1" or "v1alpha2"


@dataclass(frozen=True)
class RuntimeCondition:
    type: str  # "RuntimeReady", "NetworkReady", ...
    status: bool
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class RuntimeStatus:
    conditions: list[RuntimeCondition] = field(default_factory=list)
    # names of the runtime handlers the runtime reports (CRI v1 only; often empty)
    runtime_handlers: list[str] = field(default_factory=list)

    def condition(self, type_: str) -> RuntimeCondition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    @property
    def runtime_ready(self) -> bool:
        cond = self.condition("RuntimeReady")
        return cond is not None and cond.status


@dataclass(frozen=True)
class FilesystemUsage:
    mountpoint: str
    used_bytes: int | None  # None when the runtime did not report it
    inodes_used: int | None
    timestamp: int  # nanoseconds since the epoch


@dataclass(frozen=True)
class ImageInfo:
    id: str  # image ID (config digest, "sha256:...")
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)
    size: int = 0
    pinned: bool = False


@dataclass(frozen=True)
class SandboxConfig:
    """The parts of a CRI PodSandboxConfig that may accompany a pull (like crictl --pod-config).

    containerd only uses it to pick a snapshotter per runtime handler; normally leave it out.
    """

    name: str
    namespace: str
    uid: str = ""
    attempt: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
