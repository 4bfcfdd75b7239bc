"""The bearer token of both HTTP APIs: read from a file, compared in constant time.

The token is read from a mounted file (a Kubernetes Secret) and re-read when the file changes, so a
rotated Secret needs no restart. The aggregator presents the same token to the agents. Which routes
need it, and the 401, are :func:`agent.service.dependencies.require_token`'s.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Final

from agent.errors import InvalidInput

__all__ = ["CHALLENGE", "TokenAuth", "TokenFileError"]

#: the ``WWW-Authenticate`` value of a 401
CHALLENGE: Final = 'Bearer realm="pullcheck"'


class TokenFileError(InvalidInput, RuntimeError):
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

    def accepts(self, presented: str | None) -> bool:
        """Whether ``presented`` (a bearer token, None when there is none) is the token (always
        true when authentication is disabled)."""
        if not self.enabled:
            return True
        if not presented:
            return False
        try:
            self._load()
        except TokenFileError:
            return False  # a vanished token file denies everyone rather than nobody
        return hmac.compare_digest(presented.strip().encode(), self._token)
