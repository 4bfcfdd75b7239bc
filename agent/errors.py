"""The one exception hierarchy of pullcheck.

Every error pullcheck raises on purpose derives from :class:`PullcheckError`; those that mean
"the input is unusable" (a bad image reference, docker config, CRI endpoint, hosts.toml, config or
job file, token file…) also derive from :class:`InvalidInput`, which the CLI maps to exit code 2 in
one place. Each keeps the stdlib base its callers catch (``ValueError``, ``OSError``, …) beside it.
Messages name what was wrong and never hold a credential.
"""

from __future__ import annotations

__all__ = ["InvalidInput", "PullcheckError"]


class PullcheckError(Exception):
    """Base of every error pullcheck raises on purpose."""


class InvalidInput(PullcheckError):
    """The input (an argument, a file, a request field) is unusable: a usage error, exit 2."""
