"""The YAML configuration: where it is read from, sizes, environment overrides, and errors that
name the file, the line or the key (never a secret value)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import defaults
from agent.service.config import MAX_FILE_BYTES, MAX_SIZE, ConfigError, Settings, load_settings

pytestmark = pytest.mark.usefixtures("no_pullcheck_env")


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


# --- where the file comes from -----------------------------------------------------------------


def test_a_missing_file_at_the_default_path_means_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(defaults, "CONFIG_FILE", tmp_path / "absent.yaml")
    assert load_settings() == Settings()
    monkeypatch.setattr(defaults, "CONFIG_FILE", _config(tmp_path, "read_only: true\n"))
    assert load_settings().read_only is True


def test_a_missing_or_unreadable_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.yaml: no such file$"):
        load_settings(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not a regular file"):
        load_settings(tmp_path)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"read_only: \xff\n")
    with pytest.raises(ConfigError, match=r"binary\.yaml: not UTF-8 text"):
        load_settings(binary)


def test_a_file_larger_than_a_configmap_is_refused_unread(tmp_path: Path) -> None:
    path = _config(tmp_path, "# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    with pytest.raises(ConfigError, match=r"config\.yaml: larger than 1024 KiB$"):
        load_settings(path)


def test_an_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_settings(_config(tmp_path, "")) == Settings()
    assert load_settings(_config(tmp_path, "# only a comment\n")) == Settings()


def test_the_defaults_are_the_nodes_paths() -> None:
    agent = Settings().agent
    assert agent.resolv_conf == str(defaults.RESOLV_CONF) == "/etc/resolv.conf"
    assert agent.hosts_file == "/etc/hosts" and agent.registry_config_path == (
        defaults.REGISTRY_CONFIG_PATH
    )
    assert agent.probe_timeout == defaults.PROBE_TIMEOUT
    assert Settings().token_file == str(defaults.TOKEN_FILE)
    assert Settings().limits.default_timeout == defaults.PULL_TIMEOUT


# --- environment -----------------------------------------------------------------------------


def test_the_environment_overrides_the_file_key_by_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _config(tmp_path, "read_only: false\nagent: {probe_timeout: 3, listen: '1.2.3.4:1'}\n")
    monkeypatch.setenv("PULLCHECK_READ_ONLY", "true")
    monkeypatch.setenv("PULLCHECK_AGENT__LISTEN", "127.0.0.1:9000")
    monkeypatch.setenv("PULLCHECK_ALLOW", '["quay.io/*"]')
    settings = load_settings(path)
    assert settings.read_only is True and settings.allow == ["quay.io/*"]
    assert settings.agent.listen == "127.0.0.1:9000"
    assert settings.agent.probe_timeout == 3.0  # the file's, beside the overridden key


def test_an_environment_value_that_is_not_json_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PULLCHECK_ALLOW", "[not json")
    with pytest.raises(ConfigError, match=r"^environment: .*allow"):
        load_settings(_config(tmp_path, ""))


# --- errors ------------------------------------------------------------------------------------


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = _config(tmp_path, "limits:\n  max_body_bytes: 1\n - bad\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value).startswith(f"{path}: line 3, column 2: invalid YAML: ")


def test_the_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="the top level must be a mapping of keys"):
        load_settings(_config(tmp_path, "- read_only\n- auth\n"))


def test_every_bad_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        "agent: {probe_timout: 3}\n"
        "aggregator: {discovery: {mode: nope, agents: [ok, 1]}}\n"
        "allow: 'docker.io/*'\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    problems = str(caught.value).removeprefix(f"{path}: ").split("; ")
    assert sorted(problems) == [
        "agent.probe_timout: unknown key (did you mean 'probe_timeout'?)",
        "aggregator.discovery.agents[1]: Input should be a valid string (got 1)",
        "aggregator.discovery.mode: Input should be 'dns', 'endpointslices' or 'static' "
        "(got 'nope')",
        "allow: must be a list, got 'docker.io/*'",
    ]


def test_a_bad_static_agent_is_a_config_error_naming_the_entry(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        "aggregator: {discovery: {mode: static, agents: ['10.0.0.1:8479', "
        "'http://10.0.0.2:8479']}}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value) == (
        f"{path}: aggregator.discovery: discovery.agents entry 'http://10.0.0.2:8479': "
        "write host:port without a scheme (the scheme is discovery.agent_scheme)"
    )


def test_settings_options_cannot_be_smuggled_in_through_the_file(tmp_path: Path) -> None:
    """``_env_prefix`` and friends are BaseSettings' own keyword arguments, not keys."""
    path = _config(tmp_path, "_env_prefix: OTHER_\n_cli_parse_args: true\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert "_env_prefix: unknown key" in str(caught.value)
    assert "_cli_parse_args: unknown key" in str(caught.value)


def test_errors_never_echo_secret_values(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        "auth: hunter2\n"
        "token_file: {path: hunter2}\n"
        "aggregator: {leader_election: {advertise_url: 'http://bob:hunter2@10.0.0.7:8480/x'}}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert "auth: Input should be a valid boolean" in message
    assert "token_file: Input should be a valid string" in message
    assert "aggregator.leader_election.advertise_url: " in message
    assert "hunter2" not in message


# --- sizes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("2Gi", 2 * 1024**3),
        ("2GiB", 2 * 1024**3),
        ("2 gi", 2 * 1024**3),
        ("1.5Mi", 1536 * 1024),
        ("500MB", 500 * 1000**2),
        ("2G", 2 * 1000**3),
        ("1073741824", 1024**3),
        ("' 9 '", 9),
        ("0", 0),
        (str(MAX_SIZE), MAX_SIZE),
    ],
)
def test_sizes_take_bytes_units_and_kubernetes_suffixes(
    tmp_path: Path, value: str, size: int
) -> None:
    settings = load_settings(_config(tmp_path, f"limits: {{max_image_size: {value}}}\n"))
    assert settings.limits.max_image_size == size


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("'2GiB junk'", "is not a size like"),
        ("'2 parsecs'", "could not interpret byte unit"),
        ("-1", "must be a finite, non-negative number of bytes"),
        (".inf", "must be a finite, non-negative number of bytes"),
        (".nan", "must be a finite, non-negative number of bytes"),
        (str(MAX_SIZE + 1), "less than or equal to 9223372036854775807"),
        ("16Ei", "less than or equal to 9223372036854775807"),
        ("'" + "9" * 5000 + "'", "is not a size like"),
    ],
)
def test_bad_sizes_name_the_key_and_why(tmp_path: Path, value: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_config(tmp_path, f"limits: {{min_free_space: {value}}}\n"))
    message = str(caught.value)
    assert "limits.min_free_space: " in message and reason in message
    assert len(message) < 400  # a hostile value is not echoed whole
