"""Input errors in words: the one formatter of validation and YAML errors for every reader.

A configuration file, a job file and an API request are all checked by pydantic models; each
error becomes one ``key.path: message`` line. The path names list items by index and, when the
item is a mapping with a ``name``, by that name too (``jobs[1] (warm-base).pacing.x``); keys
that are not plain words are quoted (``labels["app.kubernetes.io/name"]``). Messages say what a
person would: ``unknown key (did you mean 'schedule'?)``, ``required key is missing``,
``must be a list, got null``. A YAML syntax error names its line and column.

Input is echoed (``(got 'maybe')``, at most 60 characters) only where the caller allows it and
no key on the path looks like a credential (:func:`agent.redaction.is_secret_key`); every
path and message then goes through :func:`agent.redaction.redact_text`, and each key on a path
is cut to 64 characters.

Kept by hand: pydantic's own ``str(ValidationError)`` names the model class, echoes every input
and spreads each error over several lines; no library renders ``loc`` paths like this.
"""

from __future__ import annotations

import difflib
import json
import re
import types
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Final, Union, get_args, get_origin

import yaml
from pydantic import BaseModel

from agent.redaction import is_secret_key, redact_text

__all__ = [
    "MAX_PROBLEMS",
    "describe_errors",
    "describe_input",
    "describe_yaml_error",
    "join_problems",
    "key_path",
]

#: problems a joined message shows; the rest are counted (``… and 3 more``)
MAX_PROBLEMS: Final = 20

_PLAIN_KEY: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_MAX_SHOWN: Final = 60  # characters of an echoed input value
_MAX_KEY: Final = 64  # characters of one key or name in a path (a hostile key may be megabytes)
_KINDS: Final[Mapping[type, str]] = {
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
}

Loc = tuple[int | str, ...]


def describe_errors(
    errors: Iterable[Mapping[str, Any]],
    *,
    data: Any = None,
    model: type[BaseModel] | None = None,
    root: str = "(top level)",
    sources: Collection[str] = (),
    show_input: bool = True,
) -> list[str]:
    """One ``key.path: message`` per item of ``ValidationError.errors()`` (or FastAPI's).

    ``data``: the validated input, to name list items by their ``name``; ``model``: the model
    validated, to suggest the closest key for an unknown one; ``root``: the path of an error
    about the whole input; ``sources``: leading ``loc`` parts to leave out (FastAPI's ``body``,
    ``query``); ``show_input``: whether values may be echoed at all.
    """
    problems = []
    for item in errors:
        loc: Loc = tuple(item.get("loc", ()))
        if loc and loc[0] in sources:
            loc = loc[1:]
        echo = show_input and not any(isinstance(p, str) and is_secret_key(p) for p in loc)
        # each part on its own ("auth: …" whole would read as a credential line): the path too,
        # as a caller's key (an unknown parameter) may itself hold a credential
        where = redact_text(key_path(loc, data, root=root))
        problems.append(f"{where}: {redact_text(_message(item, loc, model, echo))}")
    return problems


def describe_input(value: Any, *, echo: bool = True) -> str:
    """A short description of an input value: its text (at most 60 characters) when it may be
    echoed, else its kind (``a string``); ``null``, ``a mapping`` or ``a list`` either way."""
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if not echo:
        return _KINDS.get(type(value), "a value")
    return _cut(repr(value), _MAX_SHOWN)


def describe_yaml_error(exc: yaml.YAMLError) -> str:
    """``line 4, column 3: invalid YAML: <problem> (<context> at line 2)``."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return f"invalid YAML: {exc}"
    mark = exc.problem_mark
    text = f"line {mark.line + 1}, column {mark.column + 1}: invalid YAML: {exc.problem}"
    if exc.context:
        where = exc.context_mark
        at = f" at line {where.line + 1}" if where is not None and where.line != mark.line else ""
        text += f" ({exc.context}{at})"
    return text


def join_problems(problems: Sequence[str], limit: int = MAX_PROBLEMS) -> str:
    """The problems joined with ``; ``: at most ``limit`` of them, then a count of the rest."""
    shown = list(problems[:limit])
    if len(problems) > limit:
        shown.append(f"… and {len(problems) - limit} more")
    return "; ".join(shown)


def key_path(loc: Loc, data: Any = None, *, root: str = "(top level)") -> str:
    """``jobs[1] (warm-base).pacing.max_parallel_nodes`` for ``('jobs', 1, 'pacing', …)``."""
    if not loc:
        return root
    text = ""
    node: Any = data
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            name = node.get("name") if isinstance(node, dict) else None
            if isinstance(name, str) and name.strip():
                text += f" ({_cut(name, _MAX_KEY)})"
        else:
            key = _cut(str(part), _MAX_KEY)
            plain = _PLAIN_KEY.match(str(part))
            text += f".{key}" if plain else f"[{json.dumps(key, ensure_ascii=False)}]"
            node = node.get(part) if isinstance(node, dict) else None
    return text.removeprefix(".")


# --- helpers ---------------------------------------------------------------------------------


def _message(item: Mapping[str, Any], loc: Loc, model: type[BaseModel] | None, echo: bool) -> str:
    kind = item.get("type", "")
    value = item.get("input")
    if kind == "extra_forbidden":
        return _unknown_key(loc, model)
    if kind == "missing":
        return "required key is missing"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping, got {describe_input(value, echo=echo)}"
    if kind == "list_type":
        return f"must be a list, got {describe_input(value, echo=echo)}"
    message = str(item.get("msg", "invalid"))
    if kind in ("value_error", "assertion_error"):
        return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if echo and not isinstance(value, dict | list):
        message += f" (got {describe_input(value)})"
    return message


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _unknown_key(loc: Loc, model: type[BaseModel] | None) -> str:
    owner = _field_type(model, loc[:-1]) if model is not None and loc else None
    if isinstance(owner, type) and issubclass(owner, BaseModel):
        close = difflib.get_close_matches(str(loc[-1])[:_MAX_KEY], list(owner.model_fields), n=1)
        if close:
            return f"unknown key (did you mean {close[0]!r}?)"
    return "unknown key"


def _field_type(model: type[BaseModel], loc: Loc) -> Any:
    """The annotation at ``loc`` inside ``model`` (None when the path leaves the model)."""
    current: Any = model
    for part in loc:
        origin = get_origin(current)
        if origin in (Union, types.UnionType):
            members = [a for a in get_args(current) if a is not type(None)]
            if len(members) != 1:
                return None
            current = members[0]
            origin = get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif origin is list and isinstance(part, int):
            current = get_args(current)[0]
        elif origin is dict:
            current = get_args(current)[1]
        else:
            return None
    return current
