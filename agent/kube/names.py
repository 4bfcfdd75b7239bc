"""Kubernetes object names as the API server validates them (apimachinery's validation)."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["NAMESPACE", "OBJECT_NAME"]

#: a namespace: an RFC 1123 DNS label (at most 63 characters)
NAMESPACE: Final = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
#: a pod's (most objects') name: an RFC 1123 DNS subdomain (at most 253 characters)
OBJECT_NAME: Final = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
