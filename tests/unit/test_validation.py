"""The one formatter of validation errors: key paths, messages, echoes and their limits."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.validation import (
    MAX_PROBLEMS,
    describe_errors,
    describe_input,
    describe_yaml_error,
    join_problems,
    key_path,
)


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_parallel_nodes: int = 1
    labels: dict[str, str] = {}


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    on: bool = False
    pacing: _Inner = _Inner()
    password: str = ""


class _Top(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[_Item] = []
    size: int = Field(default=0, ge=0)


def _problems(data: Any, **options: Any) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        _Top.model_validate(data)
    return describe_errors(caught.value.errors(), data=data, **options)


def test_paths_name_list_items_by_their_name_and_quote_odd_keys() -> None:
    data = {
        "items": [
            {"name": "first"},
            {"name": "warm-base", "pacing": {"max_parallel_nodes": "many"}},
            {"name": "x", "pacing": {"labels": {"app.kubernetes.io/name": 3}}},
            "plain",
        ]
    }
    assert _problems(data, model=_Top) == [
        "items[1] (warm-base).pacing.max_parallel_nodes: Input should be a valid integer, "
        "unable to parse string as an integer (got 'many')",
        'items[2] (x).pacing.labels["app.kubernetes.io/name"]: Input should be a valid string '
        "(got 3)",
        "items[3]: must be a mapping, got 'plain'",
    ]


def test_messages_say_what_is_wrong_in_words() -> None:
    data = {"items": [{"on": True, "pacing": {"max_parallel": 2}}], "sise": 1, "size": -1}
    assert sorted(_problems(data, model=_Top, root="the file")) == [
        "items[0].name: required key is missing",
        "items[0].pacing.max_parallel: unknown key (did you mean 'max_parallel_nodes'?)",
        "sise: unknown key (did you mean 'size'?)",
        "size: Input should be greater than or equal to 0 (got -1)",
    ]
    assert _problems(None, root="the file") == ["the file: must be a mapping, got null"]
    assert _problems({"items": None}) == ["items: must be a list, got null"]


def test_secret_keys_and_hidden_input_are_never_echoed() -> None:
    data = {"items": [{"name": "a", "password": ["hunter2"], "on": "hunter2"}]}
    problems = _problems(data)
    assert problems == [
        "items[0] (a).on: Input should be a valid boolean, unable to interpret input "
        "(got 'hunter2')",
        "items[0] (a).password: Input should be a valid string",
    ]
    hidden = _problems(data, show_input=False)
    assert all("hunter2" not in p for p in hidden)
    assert hidden[0].endswith("unable to interpret input")
    # a value inside a message is redacted as well
    assert describe_errors(
        [{"loc": ("url",), "type": "value_error", "msg": "Value error, https://bob:pw@x/ bad"}]
    ) == ["url: https://<redacted>@x/ bad"]


def test_hostile_input_is_cut_short() -> None:
    key = "k" * 10_000
    problems = _problems({key: 1, "items": [{"name": "n" * 10_000, "on": "x" * 10_000}]})
    assert all(len(p) < 600 for p in problems), [len(p) for p in problems]
    assert describe_input("y" * 1000).endswith("…") and len(describe_input("y" * 1000)) == 60
    values: list[Any] = ["s", 1, 1.5, True, None, {}, []]
    assert [describe_input(v, echo=False) for v in values] == [
        "a string",
        "a number",
        "a number",
        "a boolean",
        "null",
        "a mapping",
        "a list",
    ]


def test_join_problems_counts_what_it_leaves_out() -> None:
    problems = [f"p{i}" for i in range(MAX_PROBLEMS + 3)]
    joined = join_problems(problems)
    assert joined.startswith("p0; p1; ") and joined.endswith(f"p{MAX_PROBLEMS - 1}; … and 3 more")
    assert join_problems(["a", "b"]) == "a; b"


def test_key_path_of_nothing_is_the_root() -> None:
    assert key_path((), root="jobs") == "jobs"
    assert key_path(("a", 0, "b")) == "a[0].b"


def test_yaml_errors_name_line_and_column() -> None:
    with pytest.raises(yaml.YAMLError) as caught:
        yaml.safe_load("a:\n  b: 1\n - c\n")
    assert describe_yaml_error(caught.value) == (
        "line 3, column 2: invalid YAML: expected <block end>, but found "
        "'<block sequence start>' (while parsing a block mapping at line 1)"
    )


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: str
    creds: str | None = None


def _api() -> tuple[FastAPI, list[list[str]]]:
    """An app whose validation errors go through the formatter, as the servers' handler does."""
    app = FastAPI()
    captured: list[list[str]] = []

    @app.post("/t")
    def _post(body: _Body, timeout: float = Query(default=1.0, gt=0)) -> dict[str, str]:
        return {}  # pragma: no cover - every request here is refused

    @app.exception_handler(RequestValidationError)
    async def _bad(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = describe_errors(
            exc.errors(), root="request", sources=("body", "query"), show_input=False
        )
        captured.append(problems)
        return JSONResponse({"message": join_problems(problems)}, 400)

    return app, captured


def test_fastapi_request_errors_leave_out_where_the_value_came_from() -> None:
    """The API shape: ``loc`` starts with ``query``/``body``; input is not echoed there."""
    app, captured = _api()
    client = TestClient(app)
    reply = client.post("/t?timeout=-1", json={"creds": "bob:hunter2", "colour": "hunter2"})
    assert reply.status_code == 400
    assert sorted(captured[0]) == [
        "colour: unknown key",
        "image: required key is missing",
        "timeout: Input should be greater than 0",
    ]
    assert "hunter2" not in reply.text
    # a caller's key is part of the path: cut short and redacted too
    reply = client.post("/t", json={"image": "x", "bob:hunter2@quay.io": 1, "k" * 9000: 2})
    assert sorted(captured[1]) == [
        '["<redacted>@quay.io"]: unknown key',
        f"{'k' * 63}…: unknown key",
    ]
    assert "hunter2" not in reply.text
    reply = client.post("/t", content=b"[1, 2]", headers={"content-type": "application/json"})
    assert reply.status_code == 400 and captured[2] == ["request: must be a mapping, got a list"]
