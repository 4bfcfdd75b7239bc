"""Every numeric CLI option and config value: nan, inf, negatives and junk are usage errors."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from agent.cli import cli, main
from agent.cli._options import Number
from agent.cluster.prepull.models import Backoff, JobStatus, NodeImageStatus
from agent.node.models import PullOutcome
from agent.service.config import ConfigError, load_settings


@dataclass(frozen=True)
class _Numeric:
    path: tuple[str, ...]  # e.g. ("cluster", "pull")
    command: click.Command
    option: click.Option
    bounds: Number

    def argv(self, value: str, *extra: str) -> list[str]:
        placeholders = ["x" for p in self.command.params if isinstance(p, click.Argument)]
        return [*self.path, *placeholders, f"{self.option.opts[0]}={value}", *extra]


def _walk(
    command: click.Command, path: tuple[str, ...]
) -> list[tuple[tuple[str, ...], click.Command]]:
    if isinstance(command, click.Group):  # lazy groups: list and load through click's API
        ctx = click.Context(command)
        subs = [(name, command.get_command(ctx, name)) for name in command.list_commands(ctx)]
        return [leaf for name, sub in subs if sub is not None for leaf in _walk(sub, (*path, name))]
    return [(path, command)]


COMMANDS = _walk(cli, ())
NUMERIC = [
    _Numeric(path, command, param, param.type)
    for path, command in COMMANDS
    for param in command.params
    if isinstance(param, click.Option) and isinstance(param.type, Number)
]


def _run(argv: list[str]) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
        pytest.raises(SystemExit) as exited,
    ):
        main(argv)
    code = exited.value.code
    assert isinstance(code, int)
    return code, stdout.getvalue(), stderr.getvalue()


def _not_a_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return True
    return False


NOT_FINITE = st.sampled_from(
    [
        "nan",
        "NaN",
        "-nan",
        "+nan",
        "inf",
        "+inf",
        "-inf",
        "Infinity",
        "-INFINITY",
        "1e999",
        "-1e999",
    ]
)
NEGATIVE = st.floats(max_value=-1e-12, allow_nan=False, allow_infinity=False).map(repr) | (
    st.integers(max_value=-1).map(str)
)
JUNK = st.text(max_size=24).filter(_not_a_number)


def test_every_numeric_option_of_every_command_is_bounded() -> None:
    """No FloatRange/IntRange/float/int option is left: they let nan (or anything) through."""
    names = {(" ".join(n.path), n.option.opts[0]) for n in NUMERIC}
    assert {
        ("pull", "--timeout"),
        ("pull", "--cri-timeout"),
        ("pull", "--probe-timeout"),
        ("probe", "--probe-timeout"),
        ("images", "--cri-timeout"),
        ("runtime", "--cri-timeout"),
        ("cluster pull", "--timeout"),
    } <= names
    unbounded = [
        (path, param.name)
        for path, command in COMMANDS
        for param in command.params
        if isinstance(param.type, click.types.FloatParamType | click.types.IntParamType)
    ]
    assert unbounded == []
    for numeric in NUMERIC:
        assert 0 < numeric.bounds.minimum < numeric.bounds.maximum <= 86_400


@given(st.sampled_from(NUMERIC), NOT_FINITE | NEGATIVE | JUNK)
def test_nan_inf_negative_and_junk_are_usage_errors_with_one_json_object(
    numeric: _Numeric, value: str
) -> None:
    code, out, err = _run(numeric.argv(value, "--json"))
    assert code == 2, (numeric.path, value, out, err)
    body = json.loads(out)  # exactly one JSON object: nothing before or after it
    assert isinstance(body, dict) and out.count("\n") == 1
    assert body["success"] is False and body["error"] == "usage"
    assert numeric.option.opts[0] in body["message"]
    assert body["message"].startswith("pullcheck " + " ".join(numeric.path) + ":")


@given(st.sampled_from(NUMERIC), NOT_FINITE | NEGATIVE | JUNK)
def test_bad_numbers_in_human_mode_name_the_option_without_a_traceback(
    numeric: _Numeric, value: str
) -> None:
    code, out, err = _run(numeric.argv(value))
    assert code == 2 and out == ""
    assert numeric.option.opts[0] in err and "Traceback" not in err
    assert all(line.isprintable() for line in err.splitlines())  # control characters escaped


@given(st.data())
def test_out_of_range_values_are_rejected_and_in_range_values_accepted(data: st.DataObject) -> None:
    numeric = data.draw(st.sampled_from(NUMERIC))
    low, high = numeric.bounds.minimum, numeric.bounds.maximum
    above = data.draw(st.floats(min_value=high, exclude_min=True, allow_infinity=False))
    below = data.draw(st.floats(max_value=low, exclude_max=True, allow_nan=False))
    for value in (above, below):
        code, out, _ = _run(numeric.argv(repr(value), "--json"))
        assert code == 2 and json.loads(out)["error"] == "usage"
    good = data.draw(st.floats(min_value=low, max_value=high))
    argv = numeric.argv(repr(good))[len(numeric.path) :]
    ctx = numeric.command.make_context(numeric.path[-1], argv)
    assert ctx.params[numeric.option.name or ""] == good


def test_the_number_type_converts_numbers_and_refuses_the_rest() -> None:
    seconds = Number(0.1, 10.0, unit="of seconds")
    assert seconds.convert("2.5", None, None) == 2.5
    assert seconds.convert(" 10 ", None, None) == 10.0
    assert seconds.convert(3, None, None) == 3.0
    for bad in (math.nan, math.inf, -1.0, True, "0x10", "", "10.0001"):
        with pytest.raises(click.BadParameter, match=r"number of seconds from 0\.1 to 10"):
            seconds.convert(bad, None, None)
    with pytest.raises(ValueError, match="bad bounds"):
        Number(0, math.inf)


def test_a_runtime_with_a_nan_timeout_is_a_usage_error_not_a_crash() -> None:
    """``runtime --cri-timeout nan`` used to reach the CRI client and raise ValueError."""
    code, out, err = _run(["runtime", "--cri-timeout", "nan", "--endpoint", "unix:///nonexistent"])
    assert code == 2 and "--cri-timeout" in err and "Traceback" not in err and out == ""


# --- configuration files -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("limits: {result_ttl: .inf}", "limits.result_ttl"),
        ("limits: {result_ttl: .nan}", "limits.result_ttl"),
        ("agent: {connectivity_ttl: .inf}", "agent.connectivity_ttl"),
        ("aggregator: {discovery: {refresh: .inf}}", "aggregator.discovery.refresh"),
        ("aggregator: {node_timeout: .nan}", "aggregator.node_timeout"),
    ],
)
def test_config_values_reject_nan_and_inf(tmp_path: Path, yaml_text: str, key: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml_text + "\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}: Input should be a finite number"):
        load_settings(config)


def test_config_environment_overrides_reject_nan_and_inf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("read_only: false\n")
    monkeypatch.setenv("PULLCHECK_AGENT__CONNECTIVITY_TTL", "inf")
    with pytest.raises(ConfigError, match=r"agent\.connectivity_ttl"):
        load_settings(config)
    monkeypatch.setenv("PULLCHECK_AGENT__CONNECTIVITY_TTL", "45")
    assert load_settings(config).agent.connectivity_ttl == 45.0


def test_prepull_models_reject_nan_and_inf() -> None:
    """An agent's pre-pull answer or a job file cannot smuggle nan/inf into the scheduler."""
    for field in ("ratelimit_remaining", "ratelimit_window", "duration_ms"):
        for bad in (math.nan, math.inf):
            with pytest.raises(ValidationError, match="finite number"):
                PullOutcome.model_validate({"ok": True, field: bad})
    assert PullOutcome(ok=True, ratelimit_remaining=3.0).ratelimit_remaining == 3.0
    with pytest.raises(ValidationError, match="finite number"):
        Backoff.model_validate({"initial": math.nan})
    with pytest.raises(ValidationError, match="finite number"):
        NodeImageStatus.model_validate({"node": "n", "image": "i", "duration_ms": math.inf})
    status = JobStatus(name="j", schedule=None, timezone="UTC", on_new_node=True, policy="Always")
    assert status.running is False


@pytest.mark.parametrize(
    "value",
    [".inf", "-.inf", ".nan", "-1", "1e400", "'" + "9" * 400 + "'", "'9' "],
)
def test_config_sizes_reject_nan_inf_negative_and_overflow(tmp_path: Path, value: str) -> None:
    """Sizes go through their own parser first: it must refuse what the model would."""
    config = tmp_path / "config.yaml"
    config.write_text(f"limits: {{max_image_size: {value}}}\n")
    if value == "'9' ":
        assert load_settings(config).limits.max_image_size == 9
        return
    with pytest.raises(ConfigError, match=r"limits\.max_image_size"):
        load_settings(config)


def test_config_body_limit_has_an_upper_bound(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("limits: {max_body_bytes: 1GiB}\n")
    with pytest.raises(ConfigError, match=r"limits\.max_body_bytes"):
        load_settings(config)
