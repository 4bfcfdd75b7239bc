"""Structured JSON logs of the agent and the aggregator: one JSON object per line.

Every line carries ``ts`` (RFC 3339, UTC, milliseconds), ``level``, ``logger`` and ``event`` (the
event name given to :func:`log_event`, or the rendered message of a plain ``logger.info(...)``),
plus the fields passed as ``extra={"fields": {...}}``, as other ``extra`` keys or as keyword
arguments of :func:`log_event`. Exceptions add ``exc``.

The formatter is python-json-logger's (the lighter of the JSON logging libraries: the agent
keeps its idle memory small); this module adds the fixed head of a line and redaction.

Credentials never reach the output. The models hold no secrets and callers redact, but the
formatter is a safety net on top, with :mod:`agent.redaction`'s rules: a field whose key looks
like a credential (``password``, ``token``, ``auth``, ``secret``, ``authorization``, ``cookie``,
``api_key`` …) is dropped — its name listed in ``redacted`` — and every string is scrubbed of
``user:pass@`` userinfo, ``Bearer``/``Basic`` values and credential-bearing ``key=value`` pairs.
An access line's request target is decoded, redacted by query key and cut to
:data:`MAX_LOGGED_TARGET` characters.

uvicorn's own and access logs go through the same formatter via :func:`uvicorn_log_config`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any, Final, TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _LibraryFormatter

from agent.models import PullTestResult
from agent.redaction import redact_fields, redact_text, redact_url

__all__ = [
    "LOGGER_NAME",
    "MAX_LOGGED_TARGET",
    "JsonFormatter",
    "UvicornAccessFormatter",
    "configure_logging",
    "log_event",
    "log_pulltest",
    "uvicorn_log_config",
]

LOGGER_NAME: Final = "pullcheck"
#: characters of a request target an access-log line keeps (after redaction)
MAX_LOGGED_TARGET: Final = 2048

# logging's level names plus the spellings operators use (trace, warn)
_LEVELS: Final = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_HEAD: Final = ("ts", "level", "logger", "event")
# record attributes that are no fields: logging's own, uvicorn's ANSI-coloured duplicate of the
# message, and ``fields`` (merged on its own)
_NOT_FIELDS: Final = (*RESERVED_ATTRS, "taskName", "color_message", "fields")


class JsonFormatter(_LibraryFormatter):
    """Formats a record as one JSON object on one line (see the module docstring).

    ``use_colors`` and other keyword arguments uvicorn may pass are accepted and ignored.
    """

    converter = staticmethod(time.gmtime)
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"

    def __init__(self, *, use_colors: bool | None = None, **_: Any) -> None:
        super().__init__(
            (),  # no fields copied from the record: add_fields sets the head
            reserved_attrs=_NOT_FIELDS,
            rename_fields={"exc_info": "exc", "stack_info": "stack"},
            json_default=str,
            json_ensure_ascii=False,
            json_serializer=partial(json.dumps, separators=(",", ":")),
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)  # extra keys, exc, stack
        given = getattr(record, "fields", None)
        if isinstance(given, Mapping):
            log_data.update(given)
        event = log_data.get("event")
        log_data.update(  # the record's own values win over fields of the same names
            ts=self.formatTime(record),
            level=record.levelname.lower(),
            logger=record.name,
            event=event if isinstance(event, str) and event else record.message,
        )

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        """The redaction step: the head first, every other field through
        :func:`~agent.redaction.redact_fields`, the dropped keys listed in ``redacted``."""
        head = {key: log_data.pop(key) for key in _HEAD}
        head["event"] = redact_text(str(head["event"]))
        clean, dropped = redact_fields(log_data)
        return {**head, **clean, "redacted": dropped} if dropped else {**head, **clean}


class UvicornAccessFormatter(JsonFormatter):
    """uvicorn's access record (``'%s - "%s %s HTTP/%s" %d'``) as fields of an ``http_request``
    event: client, method, path (:func:`~agent.redaction.redact_url`: percent-decoded, every
    credential-bearing query parameter masked by key, a ``user:pass@`` masked even when it was
    encoded, at most :data:`MAX_LOGGED_TARGET` characters), http_version, status."""

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            client, method, path, http_version, status = args
            message_dict.update(
                event="http_request",
                client=str(client),
                method=str(method),
                path=redact_url(str(path), MAX_LOGGED_TARGET),
                http_version=str(http_version),
                status=status if isinstance(status, int) else str(status),
            )
        super().add_fields(log_data, record, message_dict)


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
    from agent.service.metrics import registry_of  # the same registry as the metric label

    log_event(
        logger,
        "pulltest",
        level=logging.INFO if result.success else logging.WARNING,
        node=result.node,
        image=result.image,
        reference=result.reference,
        registry=registry_of(result),
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
