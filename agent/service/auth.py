"""Bearer-token authentication for every endpoint except health.

The token is read from a mounted file (a Kubernetes Secret) and re-read when the file changes, so a
rotated Secret needs no restart. Comparison is constant-time. The aggregator presents the same
token to the agents.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Final

__all__ = ["CHALLENGE", "PUBLIC_PATHS", "TokenAuth", "TokenFileError"]

#: the paths anyone may ask (liveness and readiness probes carry no token)
PUBLIC_PATHS: Final = frozenset({"/healthz", "/readyz"})
#: the ``WWW-Authenticate`` value of a 401
CHALLENGE: Final = 'Bearer realm="pullcheck"'


class TokenFileError(RuntimeError):
    """The token file is missing, unreadable or empty (the message never holds the token)."""


class TokenAuth:
    def __init__(self, token_file: str, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._path = Path(token_file)
        self._stamp: tuple[float, int] | None = None
        self._token = b""
        if enabled:
            self._load()  # fail at start-up, not at the first request

    def _load(self) -> None:
        try:
            stat = self._path.stat()
            stamp = (stat.st_mtime, stat.st_size)
            if stamp == self._stamp:
                return
            token = self._path.read_bytes().strip()
        except OSError as exc:
            raise TokenFileError(f"token file {self._path}: {exc.strerror}") from None
        if not token:
            raise TokenFileError(f"token file {self._path} is empty")
        self._token, self._stamp = token, stamp

    def token(self) -> str:
        """The current token, for presenting to agents."""
        self._load()
        return self._token.decode()

    def check(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header carries the token (always true when disabled)."""
        if not self.enabled:
            return True
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return False
        try:
            self._load()
        except TokenFileError:
            return False  # a vanished token file denies everyone rather than nobody
        return hmac.compare_digest(presented.strip().encode(), self._token)
