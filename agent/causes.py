"""The fixed vocabulary of failure causes: a stable, documented interface (README, JSON field
``cause``, metrics labels). Members are only ever added, never renamed or removed.

This module imports nothing heavy: the offline ``explain`` command classifies text with it.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Cause"]


class Cause(StrEnum):
    """The fixed vocabulary of failure causes (README, JSON field ``cause``)."""

    INVALID_REFERENCE = "invalid_reference"
    MANIFEST_NOT_FOUND = "manifest_not_found"
    REPOSITORY_NOT_FOUND = "repository_not_found"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    DNS_FAILURE = "dns_failure"
    CONNECTION_REFUSED = "connection_refused"
    TIMEOUT = "timeout"
    TLS_ERROR = "tls_error"
    HTTP_HTTPS_MISMATCH = "http_https_mismatch"
    PLATFORM_MISMATCH = "platform_mismatch"
    LAYER_CORRUPT = "layer_corrupt"
    BLOB_NOT_FOUND = "blob_not_found"
    DISK_FULL = "disk_full"
    RUNTIME_UNAVAILABLE = "runtime_unavailable"
    CANCELLED = "cancelled"
    # HTTP 5xx from the registry, a mirror or its token service
    REGISTRY_ERROR = "registry_error"
    # an established transfer broke: reset by peer, unexpected EOF, broken pipe, ...
    CONNECTION_RESET = "connection_reset"
    # kubelet: imagePullPolicy Never and the image is not on the node
    IMAGE_NEVER_PULL = "image_never_pull"
    UNKNOWN = "unknown"
