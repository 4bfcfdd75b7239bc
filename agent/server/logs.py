"""Structured JSON logs of the agent and the aggregator: one JSON object per line.

Every line carries ``ts`` (RFC 3339, UTC, milliseconds), ``level``, ``logger`` and ``event`` (the
event name given to :func:`log_event`, or the rendered message of a plain ``logger.info(...)``),
plus the fields passed as ``extra={"fields": {...}}`` or as keyword arguments of
:func:`log_event`. Exceptions add ``exc``.

Credentials never reach the output. The models hold no secrets and callers redact, but the
formatter is a safety net on top: a field whose key looks like a credential (``password``,
``token``, ``auth``, ``secret``, ``authorization``, ``cookie``, ``api_key`` …) is dropped — its
name listed in ``redacted`` — and every string is scrubbed of ``user:pass@`` userinfo,
``Bearer``/``Basic`` values and secret-looking query parameters.

uvicorn's own and access logs go through the same formatter via :func:`uvicorn_log_config`.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, TextIO
from urllib.parse import unquote

from agent.models import PullTestResult

__all__ = [
    "LOGGER_NAME",
    "JsonFormatter",
    "UvicornAccessFormatter",
    "configure_logging",
    "log_event",
    "log_pulltest",
    "redact_fields",
    "redact_text",
    "uvicorn_log_config",
]

LOGGER_NAME: Final = "pullcheck"
REDACTED: Final = "<redacted>"

_LEVELS: Final = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# Keys whose values are never logged. Matched anywhere in the key, case-insensitively, so
# "registry_password", "X-Auth-Token", "Authorization" and "client_secret" are all caught.
_SECRET_KEY = re.compile(
    r"(?i)pass(?:word|wd|phrase)?(?![a-z])|pwd|secret|token|auth|cookie"
    r"|api[_-]?key|private[_-]?key|session[_-]?id|signature"
)
# scheme://user:pass@host, and bare user:pass@host, up to the last "@" (a password may hold
# one) — but not an image name with a digest ("alpine:3.19@sha256:…": "algorithm:hex" follows).
_USERINFO = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s\"']+@"
    r"|(?<![\w./:@-])[^\s/@:\"'=]+:[^\s/\"']+@(?![a-z0-9]+:[a-f0-9]{16,})"
)
_AUTH_VALUE = re.compile(r"(?i)\b(bearer|basic)\s+([A-Za-z0-9._~+/=-]{6,})")
_SECRET_PARAM = re.compile(
    r"(?i)(?P<key>(?:[\w.-]*?)(?:pass(?:word|wd)?|secret|token|auth|signature|api[_-]?key)"
    r"[\w.-]*)(?P<sep>=|\"\s*:\s*\")(?P<value>[^\s\"'&;,]+)"
)
# LogRecord attributes: anything else set through ``extra=`` is a field as well.
_RECORD_ATTRS: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "fields", "color_message"}  # uvicorn's ANSI-coloured duplicate
)
_MAX_DEPTH: Final = 6


# --- redaction -------------------------------------------------------------------------------


def redact_text(text: str) -> str:
    """``text`` with userinfo, ``Bearer``/``Basic`` values and secret query parameters masked."""
    if not text:
        return text
    text = _USERINFO.sub(_mask_userinfo, text)
    text = _AUTH_VALUE.sub(_mask_auth_value, text)
    return _SECRET_PARAM.sub(lambda m: f"{m['key']}{m['sep']}{REDACTED}", text)


def _mask_userinfo(match: re.Match[str]) -> str:
    return f"{match['scheme']}{REDACTED}@" if match["scheme"] else f"{REDACTED}@"


def _mask_auth_value(match: re.Match[str]) -> str:
    word = match.group(2).rstrip("=")
    if word.isalpha() and word.islower():  # prose ("basic auth") or a challenge ("Bearer realm=")
        return match.group(0)
    return f"{match.group(1)} {REDACTED}"


def is_secret_key(key: str) -> bool:
    """Whether a field named ``key`` may hold a credential (its value is then never logged)."""
    return bool(_SECRET_KEY.search(key))


def redact_fields(fields: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A JSON-ready copy of ``fields`` without credential-like keys (at any depth) and with every
    string scrubbed; also the dotted names of the dropped keys."""
    dropped: list[str] = []
    clean = _redact_mapping(fields, "", dropped, 0)
    return clean, dropped


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
    if hasattr(value, "model_dump"):  # pydantic models: log their JSON form
        value = value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return _redact_mapping(value, prefix, dropped, depth)
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v, prefix, dropped, depth + 1) for v in value]
    return redact_text(str(value))


# --- formatter -------------------------------------------------------------------------------


def _rfc3339(created: float) -> str:
    stamp = datetime.fromtimestamp(created, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line (see the module docstring).

    ``use_colors`` and other keyword arguments uvicorn may pass are accepted and ignored.
    """

    def __init__(self, *, use_colors: bool | None = None, **_: Any) -> None:
        super().__init__()

    def format(self, record: logging.LogRecord) -> str:
        fields = self.fields(record)
        event = fields.pop("event", None)
        line: dict[str, Any] = {
            "ts": _rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": event if isinstance(event, str) and event else record.getMessage(),
        }
        for key in ("ts", "level", "logger"):
            fields.pop(key, None)
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            fields["exc"] = record.exc_text
        if record.stack_info:
            fields["stack"] = self.formatStack(record.stack_info)
        clean, dropped = redact_fields(fields)
        line["event"] = redact_text(str(line["event"]))
        line.update(clean)
        if dropped:
            line["redacted"] = dropped
        return json.dumps(line, ensure_ascii=False, default=str, separators=(",", ":"))

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        """The record's structured fields: ``extra={"fields": {...}}`` and other extra keys."""
        fields: dict[str, Any] = {
            k: v
            for k, v in vars(record).items()
            if k not in _RECORD_ATTRS and not k.startswith("_")
        }
        given = getattr(record, "fields", None)
        if isinstance(given, Mapping):
            fields.update(given)
        return fields


class UvicornAccessFormatter(JsonFormatter):
    """uvicorn's access record (``'%s - "%s %s HTTP/%s" %d'``) as fields of an ``http_request``
    event: client, method, path (percent-decoded, then redacted like every string: a
    ``user:pass@`` or ``token=`` in the query is masked even when it was encoded), http_version,
    status."""

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        fields = super().fields(record)
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            client, method, path, http_version, status = args
            fields.update(
                event="http_request",
                client=str(client),
                method=str(method),
                path=unquote(str(path)),
                http_version=str(http_version),
                status=status if isinstance(status, int) else str(status),
            )
        return fields


# --- set-up ----------------------------------------------------------------------------------


def _level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    try:
        return _LEVELS[level.strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown log level {level!r} (use one of {', '.join(sorted(_LEVELS))})"
        ) from None


def configure_logging(
    level: str | int = "info",
    stream: TextIO | None = None,
    *,
    extra_loggers: Iterable[str] = ("agent",),
) -> logging.Logger:
    """Install the JSON formatter on the ``pullcheck`` logger (and ``extra_loggers``: the
    ``agent.*`` modules' own loggers) writing to ``stream`` (default ``sys.stderr``).

    Idempotent: a handler installed by an earlier call is replaced, not duplicated. The loggers
    do not propagate to the root logger, so lines are not written twice.
    """
    numeric = _level(level)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.set_name("pullcheck-json")
    for name in (LOGGER_NAME, *extra_loggers):
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if h.get_name() == "pullcheck-json"]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(numeric)
        logger.propagate = False
    return logging.getLogger(LOGGER_NAME)


def uvicorn_log_config(
    level: str | int = "info", stream: str = "ext://sys.stderr"
) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dictionary for ``uvicorn.run(..., log_config=...)``.

    The formatter names are uvicorn's own (``default``, ``access``) because uvicorn writes
    ``use_colors`` into them when that option is given.
    """
    numeric = _level(level)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "default": {"()": f"{__name__}.JsonFormatter"},
            "access": {"()": f"{__name__}.UvicornAccessFormatter"},
        },
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "default", "stream": stream},
            "access": {"class": "logging.StreamHandler", "formatter": "access", "stream": stream},
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": numeric, "propagate": False},
            "uvicorn.error": {"level": numeric},
            "uvicorn.access": {"handlers": ["access"], "level": numeric, "propagate": False},
        },
    }


# --- helpers ---------------------------------------------------------------------------------


def log_event(
    logger: logging.Logger, event: str, *, level: int = logging.INFO, **fields: Any
) -> None:
    """Write one ``event`` line with ``fields`` (redacted like every line)."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"fields": {"event": event, **fields}})


def log_pulltest(
    logger: logging.Logger,
    result: PullTestResult,
    *,
    client: str,
    reused: str | bool,
    duration_ms: float,
) -> None:
    """Exactly one ``pulltest`` line per answered pull-test request.

    ``reused`` is the outcome: ``fresh``, ``reused`` (TTL cache) or ``shared`` (attached to a
    running identical test); a bool means reused/fresh. ``duration_ms`` is how long this request
    took to answer; the test's own duration is ``test_duration_ms``. Failures log at WARNING.
    """
    outcome = ("reused" if reused else "fresh") if isinstance(reused, bool) else reused
    from agent.server.metrics import _registry_of  # the same registry as the metric label

    log_event(
        logger,
        "pulltest",
        level=logging.INFO if result.success else logging.WARNING,
        node=result.node,
        image=result.image,
        reference=result.reference,
        registry=_registry_of(result),
        mode=result.mode,
        success=result.success,
        cause=result.cause.value if result.cause is not None else None,
        summary=result.summary,
        duration_ms=round(duration_ms, 3),
        test_duration_ms=round(result.duration_ms, 3),
        started_at=result.started_at,
        client=client,
        outcome=outcome,
    )
