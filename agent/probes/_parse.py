"""Pure parsers for registry HTTP responses: WWW-Authenticate, error bodies, status lines."""

from __future__ import annotations

import json
from http import HTTPStatus

from agent.probes._context import Challenge

__all__ = [
    "error_codes",
    "error_summary",
    "is_server_error",
    "parse_www_authenticate",
    "retry_after_note",
    "select_challenge",
    "status_text",
]

_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TOKEN68 = _TCHAR | frozenset("/=")


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_ws(self) -> None:
        while self.peek() in (" ", "\t") and not self.at_end():
            self.pos += 1

    def skip_ws_commas(self) -> None:
        while self.peek() in (" ", "\t", ",") and not self.at_end():
            self.pos += 1

    def token(self, chars: frozenset[str] = _TCHAR) -> str:
        start = self.pos
        while not self.at_end() and self.text[self.pos] in chars:
            self.pos += 1
        return self.text[start : self.pos]

    def bare(self) -> str:
        """An unquoted value: lenient, up to the next comma or whitespace."""
        start = self.pos
        while not self.at_end() and self.text[self.pos] not in (",", " ", "\t"):
            self.pos += 1
        return self.text[start : self.pos]

    def quoted(self) -> str:
        """A quoted-string starting at the current '"'; backslash escapes one character."""
        self.pos += 1
        out: list[str] = []
        while not self.at_end():
            ch = self.text[self.pos]
            self.pos += 1
            if ch == "\\" and not self.at_end():
                out.append(self.text[self.pos])
                self.pos += 1
            elif ch == '"':
                break
            else:
                out.append(ch)
        return "".join(out)

    def looks_like_param(self) -> bool:
        """Is the text at pos ``token BWS "="`` (an auth-param) rather than a new challenge?"""
        save = self.pos
        name = self.token()
        self.skip_ws()
        result = bool(name) and self.peek() == "="
        if result:
            # token68 padding ("abc==", "abc=" at the end) is not a parameter
            self.pos += 1
            if self.peek() == "=":
                result = False
            else:
                self.skip_ws()
                result = not (self.at_end() or self.peek() == ",")
        self.pos = save
        return result


def parse_www_authenticate(values: str | list[str]) -> list[Challenge]:
    """Parse one or more ``WWW-Authenticate`` header values into challenges, in order.

    Handles quoted values containing commas and escaped quotes, several challenges in one header,
    and token68 forms (``Negotiate abc==``). Malformed parts are skipped, never raised.
    """
    texts = [values] if isinstance(values, str) else values
    challenges: list[Challenge] = []
    for text in texts:
        scanner = _Scanner(text)
        while True:
            scanner.skip_ws_commas()
            if scanner.at_end():
                break
            scheme = scanner.token()
            if not scheme:
                scanner.pos += 1  # junk character: skip it
                continue
            challenges.append(_challenge_body(scanner, scheme))
    return challenges


def _challenge_body(scanner: _Scanner, scheme: str) -> Challenge:
    params: dict[str, str] = {}
    token68 = ""
    scanner.skip_ws()
    if not scanner.looks_like_param():
        # token68 or nothing
        save = scanner.pos
        candidate = scanner.token(_TOKEN68)
        scanner.skip_ws()
        if candidate and (scanner.at_end() or scanner.peek() == ","):
            token68 = candidate
        else:
            scanner.pos = save
        return Challenge(scheme=scheme, params=params, token68=token68)
    while True:
        scanner.skip_ws()
        if not scanner.looks_like_param():
            break
        name = scanner.token().lower()
        scanner.skip_ws()
        scanner.pos += 1  # '='
        scanner.skip_ws()
        value = scanner.quoted() if scanner.peek() == '"' else scanner.bare()
        params.setdefault(name, value)
        scanner.skip_ws()
        if scanner.peek() != ",":
            break
        scanner.skip_ws_commas()
    return Challenge(scheme=scheme, params=params)


def select_challenge(challenges: list[Challenge]) -> Challenge | None:
    """The challenge containerd acts on: the first Bearer or Basic one, in header order."""
    for challenge in challenges:
        if challenge.is_bearer or challenge.is_basic:
            return challenge
    return None


def error_codes(body: bytes) -> list[tuple[str, str]]:
    """``(code, message)`` pairs from a registry JSON error body; [] when it is not one.

    Accepts the distribution format ``{"errors":[{"code":…,"message":…}]}`` and the token-server
    forms ``{"details":…}`` / ``{"error":…}`` (code ``""`` then).
    """
    try:
        doc = json.loads(body.decode("utf-8", errors="replace"))
    except ValueError:
        return []
    if not isinstance(doc, dict):
        return []
    found: list[tuple[str, str]] = []
    errors = doc.get("errors")
    if isinstance(errors, list):
        for item in errors:
            if isinstance(item, dict):
                code = item.get("code")
                message = item.get("message")
                found.append(
                    (str(code) if code is not None else "", str(message) if message else "")
                )
    for key in ("details", "error_description", "error"):
        value = doc.get(key)
        if isinstance(value, str) and value and not found:
            found.append(("", value))
    return found


def error_summary(codes: list[tuple[str, str]]) -> str:
    """containerd-style rendering: ``toomanyrequests: You have reached …``."""
    parts = []
    for code, message in codes:
        if code:
            rendered = code.lower().replace("_", " ")
            parts.append(f"{rendered}: {message}" if message else rendered)
        elif message:
            parts.append(message)
    return "; ".join(parts)


def retry_after_note(value: str) -> str:
    """`` (Retry-After 120)`` from a ``Retry-After`` header value (cut to 40 characters), else
    ``""``."""
    value = " ".join(value.split())[:40]
    return f" (Retry-After {value})" if value else ""


def is_server_error(status: int) -> bool:
    """An HTTP 5xx: cause ``registry_error``."""
    return 500 <= status <= 599


def status_text(status: int) -> str:
    """``429 Too Many Requests`` — the code with Go's standard reason phrase."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)
