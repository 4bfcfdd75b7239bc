"""Async CRI client (image and runtime services) over the node's runtime socket.

Speaks ``runtime.v1`` and falls back to ``runtime.v1alpha2`` (containerd 1.5); callers only ever
see the plain result types below.
"""

from agent.cri.client import DEFAULT_TIMEOUT, CriClient, connect
from agent.cri.endpoint import DEFAULT_ENDPOINTS, ENV_VAR, normalize
from agent.cri.errors import CriError, InvalidEndpoint, RuntimeUnavailable
from agent.cri.transport import API_VERSIONS, ApiVersion
from agent.cri.types import (
    FilesystemUsage,
    ImageInfo,
    RuntimeCondition,
    RuntimeStatus,
    RuntimeVersion,
    SandboxConfig,
)

__all__ = [
    "API_VERSIONS",
    "DEFAULT_ENDPOINTS",
    "DEFAULT_TIMEOUT",
    "ENV_VAR",
    "ApiVersion",
    "CriClient",
    "CriError",
    "FilesystemUsage",
    "ImageInfo",
    "InvalidEndpoint",
    "RuntimeCondition",
    "RuntimeStatus",
    "RuntimeUnavailable",
    "RuntimeVersion",
    "SandboxConfig",
    "connect",
    "normalize",
]
