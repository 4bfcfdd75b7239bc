"""Credential redaction: the one rule set for logs, results, errors and access-log URLs.

What is masked (``<redacted>``):

* userinfo: ``scheme://user:pass@host`` and a bare ``user:pass@host`` (up to the last ``@``, as a
  password may hold one; an image name with a digest, ``alpine:3.19@sha256:…``, is left alone);
* ``Bearer``/``Basic`` values (not prose: ``Bearer realm="…"``, ``basic auth``);
* the value of a credential-bearing key (:func:`is_secret_key`) written ``key=value``,
  ``"key": "value"`` / ``'key': 'value'`` (also JSON inside a JSON string), or ``key: value`` at
  the start of a line (YAML, header dumps);
* any known secret value the caller passes (a password, its ``user:pass`` base64 form, a token),
  also percent-encoded.

Every pattern is linear in its input: each is anchored on a cheap literal or a credential word,
key lengths are bounded, runs are possessive, and the ``@`` of userinfo is found with
``str.rfind`` instead of by backtracking — so hostile input (a 64 KiB URL of ``a.a.a…``,
``token=token=…``) costs milliseconds, not minutes. The limits: a key may carry at most 64
characters after its credential word (``registry_password_for_…=``) and at most 32 before it in
the ``key: value`` line form.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl, quote, unquote

__all__ = [
    "REDACTED",
    "is_secret_key",
    "redact_fields",
    "redact_text",
    "redact_url",
]

REDACTED: Final = "<redacted>"

# Credential words, matched case-insensitively anywhere in a key: "registry_password",
# "X-Auth-Token", "Authorization", "client_secret", "dockerconfigjson" are all caught.
_WORDS: Final = (
    r"pass(?:word|wd|phrase)?(?![a-z])|pwd|secret|token|auth|creds|cookie"
    r"|api[_-]?key|private[_-]?key|session[_-]?id|signature|docker[_-]?c(?:onfig|fg)"
)
_SECRET_KEY: Final = re.compile(rf"(?i){_WORDS}")
# the key from its credential word to the separator (bounded, possessive)
_KEY: Final = rf"(?:{_WORDS})[\w.-]{{0,64}}+"


def _value(bare: str) -> str:
    """A value: double- or single-quoted (escapes honoured; the closing quote is not part of
    it), a quoted value inside a JSON string (``\\"…``), or a bare run of ``bare`` characters."""
    return (
        r"(?P<value>\"(?:[^\"\\\n]|\\.)*+|'(?:[^'\\\n]|\\.)*+"
        rf"|\\\"(?:[^\"\\\n]|\\[^\"\n])*+|{bare}++)"
    )


_URL_USERINFO: Final = re.compile(r"://(?P<rest>[^/\s\"']*+)")
_BARE_USERINFO: Final = re.compile(r"(?<![^\s\"'=])(?P<user>[^\s/@:\"'=]++):(?P<pw>[^\s/\"']*+)")
_DIGEST_AT: Final = re.compile(r"[a-z0-9]+:[a-f0-9]{16}")
_AUTH_VALUE: Final = re.compile(r"(?i)(?P<scheme>bearer|basic)\s++(?P<value>[\w.~+/=-]{6,})")
_EQUALS_BARE: Final = r"[^\s\"'&,;]"  # key=value: up to a blank, quote, & , ;
_QUOTED_BARE: Final = r"[^\s\"',{}\[\]]"  # "key": a number, null… (an object's keys are its own)
_KEY_EQUALS: Final = re.compile(
    rf"(?i)(?P<key>{_KEY}[ \t]{{0,8}}=[ \t]{{0,8}}){_value(_EQUALS_BARE)}"
)
_KEY_QUOTED: Final = re.compile(
    rf"(?i)(?P<key>{_KEY}\\?[\"'][ \t]{{0,16}}:[ \t]{{0,16}}){_value(_QUOTED_BARE)}"
)
# "key: value" at the start of a line (YAML, a header dump): no dots in the key and a blank after
# the colon, so "auth.example.com: refused" and "token-host:5000" stay; "Authorization: Bearer …"
# is left to _AUTH_VALUE, which keeps the scheme.
_KEY_LINE: Final = re.compile(
    rf"(?im)^(?P<key>[ \t]{{0,16}}(?:-[ \t]{{1,4}})?[\w-]{{0,32}}?(?:{_WORDS})[\w-]{{0,64}}+"
    r"[ \t]{0,8}:[ \t]++)(?P<value>(?!(?i:bearer|basic)\s)\S[^\r\n]*+)"
)
_MAX_DEPTH: Final = 6


def is_secret_key(name: str) -> bool:
    """Whether a field, parameter or header named ``name`` may hold a credential."""
    return _SECRET_KEY.search(name) is not None


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every credential the rules know masked (see the module docstring), and
    every value in ``secrets`` (and its percent-encoded form) replaced wherever it appears."""
    if not text:
        return text
    for secret in _known(secrets):
        text = text.replace(secret, REDACTED)
    text = _URL_USERINFO.sub(_mask_url_userinfo, text)
    text = _BARE_USERINFO.sub(_mask_bare_userinfo, text)
    text = _AUTH_VALUE.sub(_mask_auth_value, text)
    text = _KEY_LINE.sub(_mask_value, text)
    text = _KEY_EQUALS.sub(_mask_value, text)
    return _KEY_QUOTED.sub(_mask_value, text)


def redact_url(target: str, limit: int) -> str:
    """A request target (path and query) fit for a log line: percent-decoded, the value of every
    credential-bearing query parameter masked (encoded or not), the rest through
    :func:`redact_text`, and the result cut to ``limit`` characters with a ``…(+N chars)`` mark."""
    if limit < 0:
        raise ValueError(f"limit must not be negative, not {limit}")
    path, question, query = target.partition("?")
    text = unquote(path, errors="replace")
    if question:
        pairs = parse_qsl(query, keep_blank_values=True, errors="replace")
        masked = (f"{k}={REDACTED if is_secret_key(k) else v}" for k, v in pairs)
        text = f"{text}?{'&'.join(masked)}"
    return _cap(redact_text(text), limit)


def redact_fields(fields: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A JSON-ready copy of ``fields`` without credential-like keys (at any depth) and with every
    string redacted; also the dotted names of the dropped keys."""
    dropped: list[str] = []
    clean = _redact_mapping(fields, "", dropped, 0)
    return clean, dropped


# --- helpers ---------------------------------------------------------------------------------


def _known(secrets: Iterable[str]) -> list[str]:
    """The secrets and their percent-encoded forms, longest first (a secret that contains
    another is replaced whole)."""
    found = {s for s in secrets if s}
    found |= {quote(s, safe="") for s in found}
    return sorted(found, key=len, reverse=True)


def _cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…(+{len(text) - limit} chars)"


def _mask_url_userinfo(match: re.Match[str]) -> str:
    rest = match["rest"]
    at = rest.rfind("@")
    return match[0] if at < 0 else f"://{REDACTED}{rest[at:]}"


def _mask_bare_userinfo(match: re.Match[str]) -> str:
    pw = match["pw"]
    at = pw.rfind("@")
    while at >= 0 and _DIGEST_AT.match(pw, at + 1):  # "name:tag@sha256:…" is no userinfo
        at = pw.rfind("@", 0, at)
    return match[0] if at < 0 else f"{REDACTED}{pw[at:]}"


def _mask_auth_value(match: re.Match[str]) -> str:
    word = match["value"].rstrip("=")
    if word.isalpha() and word.islower():  # prose ("basic auth") or a challenge ("Bearer realm=")
        return match[0]
    return f"{match['scheme']} {REDACTED}"


def _mask_value(match: re.Match[str]) -> str:
    value = match["value"]
    opening = value[:2] if value.startswith('\\"') else value[:1] if value[:1] in "\"'" else ""
    return f"{match['key']}{opening}{REDACTED}"


def _redact_mapping(
    fields: Mapping[Any, Any], prefix: str, dropped: list[str], depth: int
) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, value in fields.items():
        name = str(key)
        if is_secret_key(name):
            dropped.append(prefix + name)
            continue
        clean[name] = _redact_value(value, f"{prefix}{name}.", dropped, depth + 1)
    return clean


def _redact_value(value: Any, prefix: str, dropped: list[str], depth: int) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if depth > _MAX_DEPTH:
        return redact_text(repr(value))
    if hasattr(value, "model_dump"):  # pydantic models: their JSON form
        value = value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return _redact_mapping(value, prefix, dropped, depth)
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v, prefix, dropped, depth + 1) for v in value]
    return redact_text(str(value))
