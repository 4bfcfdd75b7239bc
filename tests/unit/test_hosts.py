"""containerd hosts.toml resolution (agent.hosts) against temporary config directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.hosts import (
    HostsConfigError,
    host_dir_lookup,
    is_loopback_registry,
    loopback_rule,
    registry_endpoints,
)


def _hosts(root: Path, host_dir: str, text: str) -> Path:
    directory = root / host_dir
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "hosts.toml"
    path.write_text(text)
    return path


# --- defaults ----------------------------------------------------------------------------------


def test_no_config_path_defaults_to_https_registry() -> None:
    [ep] = registry_endpoints("quay.io", "")
    assert ep.url == "https://quay.io/v2"
    assert (ep.scheme, ep.host, ep.port, ep.path) == ("https", "quay.io", 443, "/v2")
    assert ep.role == "upstream"
    assert ep.capabilities == ["pull", "resolve", "push"]
    assert ep.namespace == "" and ep.config_file == "" and ep.ca_files == []


def test_docker_io_means_registry_1(tmp_path: Path) -> None:
    [ep] = registry_endpoints("docker.io", str(tmp_path))
    assert ep.url == "https://registry-1.docker.io/v2"
    assert ep.host == "registry-1.docker.io"
    assert ep.namespace == ""  # registry-1.docker.io serving docker.io is not a proxy


def test_host_with_port_and_ipv6_literal(tmp_path: Path) -> None:
    [ep] = registry_endpoints("plain.pullcheck.test:15000", str(tmp_path))
    assert (ep.scheme, ep.host, ep.port) == ("https", "plain.pullcheck.test", 15000)
    assert ep.url == "https://plain.pullcheck.test:15000/v2"
    [v6] = registry_endpoints("[::1]:5000", str(tmp_path))
    assert (v6.host, v6.port, v6.url) == ("::1", 5000, "https://[::1]:5000/v2")


# --- directory lookup order --------------------------------------------------------------------


def test_lookup_order_host_port_underscore_first(tmp_path: Path) -> None:
    _hosts(tmp_path, "reg.test_5000_", 'server = "http://first.test:1"')
    _hosts(tmp_path, "reg.test:5000", 'server = "http://second.test:2"')
    _hosts(tmp_path, "_default", 'server = "http://default.test:3"')
    [ep] = registry_endpoints("reg.test:5000", str(tmp_path))
    assert ep.host == "first.test"
    lookup = host_dir_lookup("reg.test:5000", str(tmp_path))
    assert lookup.tried == [str(tmp_path / "reg.test_5000_")]
    assert lookup.found == str(tmp_path / "reg.test_5000_")
    assert lookup.hosts_toml == str(tmp_path / "reg.test_5000_" / "hosts.toml")


def test_lookup_colon_form_then_default(tmp_path: Path) -> None:
    _hosts(tmp_path, "reg.test:5000", 'server = "http://second.test:2"')
    _hosts(tmp_path, "_default", 'server = "http://default.test:3"')
    assert registry_endpoints("reg.test:5000", str(tmp_path))[0].host == "second.test"
    [other] = registry_endpoints("other.test", str(tmp_path))
    assert other.host == "default.test"
    assert other.namespace == "other.test"  # the default mirror serves another namespace
    lookup = host_dir_lookup("other.test", str(tmp_path))
    assert lookup.tried == [str(tmp_path / "other.test"), str(tmp_path / "_default")]


def test_host_without_port_has_no_underscore_candidate(tmp_path: Path) -> None:
    lookup = host_dir_lookup("quay.io", str(tmp_path))
    assert lookup.tried == [str(tmp_path / "quay.io"), str(tmp_path / "_default")]
    assert lookup.found is None


def test_ipv6_directory_name(tmp_path: Path) -> None:
    lookup = host_dir_lookup("[::1]:5000", str(tmp_path))
    assert lookup.tried[0] == str(tmp_path / "[::1]_5000_")
    assert lookup.tried[1] == str(tmp_path / "[::1]:5000")


def test_multiple_roots_first_root_with_any_match_wins(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    _hosts(one, "_default", 'server = "https://root-one-default.test"')
    _hosts(two, "quay.io", 'server = "https://root-two-quay.test"')
    # containerd tries every candidate of root one (incl. _default) before root two
    [ep] = registry_endpoints("quay.io", f"{one}:{two}")
    assert ep.host == "root-one-default.test"
    [ep2] = registry_endpoints("quay.io", f"{tmp_path / 'missing'}::{two}")
    assert ep2.host == "root-two-quay.test"
    lookup = host_dir_lookup("quay.io", f"{tmp_path / 'missing'}::{two}")
    assert lookup.roots == [str(tmp_path / "missing"), str(two)]
    assert lookup.tried[-1] == str(two / "quay.io")


# --- hosts.toml contents -----------------------------------------------------------------------


def test_mirrors_in_file_order_then_upstream(tmp_path: Path) -> None:
    path = _hosts(
        tmp_path,
        "docker.io",
        """
server = "https://registry-1.docker.io"

[host."https://mirror-b.test"]
  capabilities = ["pull"]

[host."http://mirror-a.test:5000"]
  capabilities = ["pull", "resolve"]
  skip_verify = true

[host."https://mirror-c.test/sub/path"]
""",
    )
    eps = registry_endpoints("docker.io", str(tmp_path))
    assert [e.url for e in eps] == [
        "https://mirror-b.test/v2",
        "http://mirror-a.test:5000/v2",
        "https://mirror-c.test/sub/path/v2",
        "https://registry-1.docker.io/v2",
    ]
    assert [e.role for e in eps] == ["mirror", "mirror", "mirror", "upstream"]
    assert eps[0].capabilities == ["pull"]
    assert eps[1].capabilities == ["pull", "resolve"] and eps[1].skip_verify
    assert eps[1].port == 5000 and eps[0].port == 443
    assert eps[2].capabilities == ["pull", "resolve", "push"]
    assert eps[2].path == "/sub/path/v2"
    assert [e.namespace for e in eps] == ["docker.io"] * 3 + [""]
    assert all(e.config_file == str(path) for e in eps)


def test_no_server_means_the_registry_itself_last(tmp_path: Path) -> None:
    _hosts(
        tmp_path,
        "quay.io",
        """
capabilities = ["pull"]
ca = "upstream-ca.pem"
[host."https://mirror.test"]
  capabilities = ["pull", "resolve"]
""",
    )
    mirror, upstream = registry_endpoints("quay.io", str(tmp_path))
    assert mirror.url == "https://mirror.test/v2" and mirror.namespace == "quay.io"
    assert upstream.url == "https://quay.io/v2" and upstream.namespace == ""
    # containerd resets the capabilities of a defaulted upstream, keeps its TLS settings
    assert upstream.capabilities == ["pull", "resolve", "push"]
    assert upstream.ca_files == [str(tmp_path / "quay.io" / "upstream-ca.pem")]


def test_server_without_scheme_gets_https_and_port(tmp_path: Path) -> None:
    _hosts(tmp_path, "reg.test", 'server = "mirror.test:8443"')
    [ep] = registry_endpoints("reg.test", str(tmp_path))
    assert (ep.scheme, ep.host, ep.port, ep.url) == (
        "https",
        "mirror.test",
        8443,
        "https://mirror.test:8443/v2",
    )
    assert ep.role == "upstream" and ep.namespace == "reg.test"


def test_same_host_server_has_no_namespace(tmp_path: Path) -> None:
    _hosts(tmp_path, "plain.test_15000_", 'server = "http://plain.test:15000"')
    [ep] = registry_endpoints("plain.test:15000", str(tmp_path))
    assert ep.scheme == "http" and ep.port == 15000 and ep.namespace == ""


def test_ca_and_client_forms_relative_to_hosts_toml(tmp_path: Path) -> None:
    _hosts(
        tmp_path,
        "reg.test",
        """
[host."https://a.test"]
  ca = ["ca1.pem", "/abs/ca2.pem"]
  client = "client.pem"
[host."https://b.test"]
  ca = "/abs/b.pem"
  client = [["c.cert", "c.key"], ["d.pem", ""]]
[host."https://c.test"]
  client = ["e.pem", "f.pem"]
""",
    )
    a, b, c, _ = registry_endpoints("reg.test", str(tmp_path))
    base = tmp_path / "reg.test"
    assert a.ca_files == [str(base / "ca1.pem"), "/abs/ca2.pem"]
    assert a.client_certs == [(str(base / "client.pem"), "")]
    assert b.ca_files == ["/abs/b.pem"]
    assert b.client_certs == [
        (str(base / "c.cert"), str(base / "c.key")),
        (str(base / "d.pem"), ""),
    ]
    assert c.client_certs == [(str(base / "e.pem"), ""), (str(base / "f.pem"), "")]


def test_override_path(tmp_path: Path) -> None:
    _hosts(
        tmp_path,
        "reg.test",
        """
[host."https://nc.test/registry/api"]
  override_path = true
[host."https://plain.test/v2"]
[host."https://root.test"]
  override_path = true
""",
    )
    nc, plain, root, _ = registry_endpoints("reg.test", str(tmp_path))
    assert nc.path == "/registry/api" and nc.override_path
    assert nc.url == "https://nc.test/registry/api"
    assert plain.path == "/v2" and not plain.override_path
    assert root.path == "" and root.url == "https://root.test"


def test_header_and_dial_timeout_accepted(tmp_path: Path) -> None:
    _hosts(
        tmp_path,
        "reg.test",
        """
dial_timeout = "5s"
[header]
  x-custom = "1"
[host."https://m.test"]
  dial_timeout = "2s"
  [host."https://m.test".header]
    x-other = ["a", "b"]
""",
    )
    assert [e.host for e in registry_endpoints("reg.test", str(tmp_path))] == ["m.test", "reg.test"]


def test_empty_hosts_toml_falls_back_to_cert_files(tmp_path: Path) -> None:
    directory = tmp_path / "reg.test"
    directory.mkdir()
    (directory / "hosts.toml").write_text("")
    (directory / "b.crt").write_text("x")
    [ep] = registry_endpoints("reg.test", str(tmp_path))
    assert ep.ca_files == [str(directory / "b.crt")] and ep.config_file == ""


def test_docker_certs_d_layout(tmp_path: Path) -> None:
    directory = tmp_path / "reg.test_5000_"
    directory.mkdir()
    for name in ("z.crt", "a.crt", "client.cert", "client.key", "solo.cert", "notes.txt"):
        (directory / name).write_text("x")
    (directory / "sub.crt").mkdir()  # directories are ignored
    [ep] = registry_endpoints("reg.test:5000", str(tmp_path))
    assert ep.url == "https://reg.test:5000/v2" and ep.role == "upstream"
    assert ep.ca_files == [str(directory / "a.crt"), str(directory / "z.crt")]
    assert ep.client_certs == [
        (str(directory / "client.cert"), str(directory / "client.key")),
        (str(directory / "solo.cert"), ""),
    ]
    assert ep.config_file == ""


# --- errors ------------------------------------------------------------------------------------


def test_invalid_toml_names_file_and_error(tmp_path: Path) -> None:
    path = _hosts(tmp_path, "reg.test", '[host."https://m.test"\ncapabilities = ["pull"]\n')
    with pytest.raises(HostsConfigError) as info:
        registry_endpoints("reg.test", str(tmp_path))
    assert info.value.path == str(path)
    assert str(path) in str(info.value) and "invalid TOML" in str(info.value)
    assert "line" in str(info.value)  # tomllib's position is kept


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('capabilities = ["pull", "fly"]', "unknown capability 'fly'"),
        ("ca = 3", "invalid type for 'ca'"),
        ('client = [["only-one"]]', "invalid pair"),
        ('skip_verify = "yes"', "'skip_verify' must be true or false"),
        ("server = 5", "'server' must be a string"),
        ('server = "ftp://x"', "unable to parse server"),
        ("host = 1", "'host' must be a table"),
    ],
)
def test_invalid_values(tmp_path: Path, text: str, fragment: str) -> None:
    _hosts(tmp_path, "reg.test", text + "\n")
    with pytest.raises(HostsConfigError, match=fragment):
        registry_endpoints("reg.test", str(tmp_path))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('capabilities = "pull"', "'capabilities' must be a list of strings"),
        ("capabilities = [1]", "'capabilities' must be a list of strings"),
        ("ca = [1]", "invalid type for 'ca': 1"),
        ("client = [3]", "invalid type for 'client': 3"),
        ('client = [["a", "b", "c"]]', "invalid pair ['a', 'b', 'c'] for 'client'"),
        ("override_path = 1", "'override_path' must be true or false"),
        ("header = 3", "'header' must be a table"),
        ("dial_timeout = 5", "'dial_timeout' must be a duration string"),
        ('host = {"https://m.test" = 1}', "host 'https://m.test' must be a table"),
        (
            '[host."https://m.test"]\ncapabilities = ["fly"]',
            "host 'https://m.test': unknown capability 'fly'",
        ),
        (
            '[host."https://m.test"]\nskip_verify = "no"',
            "host 'https://m.test': 'skip_verify' must be true or false",
        ),
    ],
)
def test_each_bad_key_is_named_with_its_table(tmp_path: Path, text: str, message: str) -> None:
    path = _hosts(tmp_path, "reg.test", text + "\n")
    with pytest.raises(HostsConfigError) as info:
        registry_endpoints("reg.test", str(tmp_path))
    assert info.value.path == str(path) and str(info.value).startswith(f"{path}: ")
    assert message in info.value.message


def test_every_bad_key_is_reported_once_and_long_values_are_clipped(tmp_path: Path) -> None:
    long = "x" * 500
    _hosts(
        tmp_path,
        "reg.test",
        f'ca = 3\nskip_verify = "yes"\nclient = [["{long}"]]\n'
        '[host."https://a.test"]\n  override_path = 2\n',
    )
    with pytest.raises(HostsConfigError) as info:
        registry_endpoints("reg.test", str(tmp_path))
    problems = info.value.message.split("; ")
    assert len(problems) == 4  # a union's several errors for one key are one problem
    assert "invalid type for 'ca': 3" in problems
    assert "'skip_verify' must be true or false" in problems
    assert "host 'https://a.test': 'override_path' must be true or false" in problems
    pair = next(p for p in problems if p.startswith("invalid pair"))
    assert long not in pair and "…" in pair


def test_unknown_keys_are_ignored_like_containerd(tmp_path: Path) -> None:
    _hosts(
        tmp_path,
        "reg.test",
        'server = "https://reg.test"\nfuture_key = 1\n[host."https://m.test"]\nother = "x"\n',
    )
    assert [e.host for e in registry_endpoints("reg.test", str(tmp_path))] == ["m.test", "reg.test"]


def test_capabilities_case_insensitive(tmp_path: Path) -> None:
    _hosts(tmp_path, "reg.test", '[host."https://m.test"]\ncapabilities = ["Pull", "RESOLVE"]\n')
    assert registry_endpoints("reg.test", str(tmp_path))[0].capabilities == ["pull", "resolve"]


def test_containerd_1x_needs_a_host_table(tmp_path: Path) -> None:
    directory = tmp_path / "reg.test"
    path = _hosts(tmp_path, "reg.test", 'server = "https://reg.test"\nca = "ca.pem"\n')
    (directory / "docker.crt").write_text("x")
    # 2.x (default): fine
    [ep] = registry_endpoints("reg.test", str(tmp_path))
    assert ep.ca_files == [str(directory / "ca.pem")]
    assert registry_endpoints("reg.test", str(tmp_path), containerd_version="2.0.1") == [ep]
    # 1.6.20: "invalid `host` tree", containerd falls back to the *.crt files
    with pytest.raises(HostsConfigError, match="invalid `host` tree") as info:
        registry_endpoints("reg.test", str(tmp_path), containerd_version="1.6.20~ds1")
    assert info.value.path == str(path)
    [fallback] = info.value.fallback
    assert fallback.url == "https://reg.test/v2" and fallback.ca_files == [
        str(directory / "docker.crt")
    ]
    assert fallback.config_file == ""


def test_invalid_toml_carries_fallback(tmp_path: Path) -> None:
    _hosts(tmp_path, "docker.io", "server = ")
    with pytest.raises(HostsConfigError) as info:
        registry_endpoints("docker.io", str(tmp_path))
    assert [e.url for e in info.value.fallback] == ["https://registry-1.docker.io/v2"]


# --- loopback registries (containerd's docker.IsLocalhost default) ------------------------------


@pytest.mark.parametrize(
    ("registry", "version", "url", "skip_verify", "fallback"),
    [
        # the lab's containerd: plain HTTP for any loopback literal and for "localhost"
        ("127.0.0.1:15000", "1.6.20~ds1", "http://127.0.0.1:15000/v2", True, False),
        ("localhost:15000", "1.6.20~ds1", "http://localhost:15000/v2", True, False),
        ("127.0.0.2:5000", "1.6.20~ds1", "http://127.0.0.2:5000/v2", True, False),
        ("[::1]:5000", "v1.7.2", "http://[::1]:5000/v2", True, False),
        ("[::ffff:127.0.0.1]:5000", "1.7.6", "http://[::ffff:127.0.0.1]:5000/v2", True, False),
        # before 1.6.9 a config_path turned the loopback default off: https like any registry
        ("127.0.0.1:5000", "1.6.8", "https://127.0.0.1:5000/v2", False, False),
        # 1.6.24+ / 1.7.7+ / 2.0: HTTPS first without verification, then plain HTTP
        ("127.0.0.1:5000", "1.6.24", "https://127.0.0.1:5000/v2", True, True),
        ("127.0.0.1:5000", "1.7.7", "https://127.0.0.1:5000/v2", True, True),
        ("localhost:443", "2.0.1", "https://localhost:443/v2", True, True),
        ("localhost", "2.0.1", "http://localhost/v2", True, False),
        ("localhost:80", "2.0.1", "http://localhost:80/v2", True, False),
        # 2.1+: no port or 443 → https only (unverified); 80 → http; other ports → fallback
        ("localhost", "2.1.0", "https://localhost/v2", True, False),
        ("localhost:443", "2.1.4", "https://localhost:443/v2", True, False),
        ("localhost:80", "2.1.4", "http://localhost:80/v2", False, False),
        ("localhost:5000", "2.2.0", "https://localhost:5000/v2", True, True),
        # unknown or unparsable version: the newest family
        ("localhost:5000", None, "https://localhost:5000/v2", True, True),
        ("localhost:5000", "devel", "https://localhost:5000/v2", True, True),
        # not loopback by containerd's rule: names that resolve there, other addresses
        (
            "plain.pullcheck.test:15000",
            "1.6.20~ds1",
            "https://plain.pullcheck.test:15000/v2",
            False,
            False,
        ),
        (
            "localhost.localdomain:5000",
            "1.6.20",
            "https://localhost.localdomain:5000/v2",
            False,
            False,
        ),
        ("10.0.0.1:5000", "1.6.20", "https://10.0.0.1:5000/v2", False, False),
        ("[::2]:5000", "1.6.20", "https://[::2]:5000/v2", False, False),
    ],
)
def test_loopback_registry_without_hosts_toml(
    tmp_path: Path,
    registry: str,
    version: str | None,
    url: str,
    skip_verify: bool,
    fallback: bool,
) -> None:
    [ep] = registry_endpoints(registry, str(tmp_path), containerd_version=version)
    assert (ep.url, ep.skip_verify, ep.http_fallback) == (url, skip_verify, fallback)
    assert ep.scheme == url.partition(":")[0] and ep.role == "upstream" and ep.namespace == ""


def test_is_loopback_registry_is_containerds_is_localhost() -> None:
    loopback = ["localhost", "localhost:5000", "127.0.0.1", "127.9.9.9:1", "[::1]:5000", "::1"]
    loopback.append("[::ffff:127.0.0.1]:80")
    assert all(is_loopback_registry(r) for r in loopback)
    other = ["LOCALHOST:5000", "localhost.:5000", "my.localhost:5000", "127.0.0.1.nip.io:5000"]
    other += ["[::1]", "[::1%lo]:5000", "0.0.0.0:5000", "[::]:5000", "128.0.0.1:5000", ""]
    assert not any(is_loopback_registry(r) for r in other)


def test_loopback_rule_per_version() -> None:
    assert [
        loopback_rule(v)
        for v in ("1.5.18", "1.6.8", "1.6.9", "1.6.23", "1.6.24", "1.7.6", "1.7.27", "2.0.5")
    ] == ["https", "https", "http", "http", "fallback", "http", "fallback", "fallback"]
    assert loopback_rule("2.1.0") == loopback_rule("v3.0.0") == loopback_rule("") == "fallback-2.1"


def test_loopback_default_applies_to_a_hosts_toml_without_server(tmp_path: Path) -> None:
    _hosts(tmp_path, "127.0.0.1:5000", '[host."http://mirror.test:5000"]\n')
    mirror, upstream = registry_endpoints(
        "127.0.0.1:5000", str(tmp_path), containerd_version="1.6.20"
    )
    assert mirror.url == "http://mirror.test:5000/v2" and mirror.namespace == "127.0.0.1:5000"
    assert upstream.url == "http://127.0.0.1:5000/v2" and upstream.role == "upstream"


def test_loopback_default_applies_when_the_runtime_ignores_hosts_toml(tmp_path: Path) -> None:
    _hosts(tmp_path, "localhost:5000", 'server = "https://localhost:5000"\nca = "ca.pem"\n')
    with pytest.raises(HostsConfigError, match="invalid `host` tree") as info:
        registry_endpoints("localhost:5000", str(tmp_path), containerd_version="1.6.20~ds1")
    [fallback] = info.value.fallback
    assert fallback.url == "http://localhost:5000/v2" and fallback.skip_verify


def test_explicit_server_is_kept_for_loopback(tmp_path: Path) -> None:
    _hosts(
        tmp_path,
        "127.0.0.1:5000",
        'server = "https://127.0.0.1:5000"\n[host."https://127.0.0.1:5000"]\n',
    )
    [ep] = registry_endpoints("127.0.0.1:5000", str(tmp_path), containerd_version="1.6.20")
    assert ep.url == "https://127.0.0.1:5000/v2" and not ep.skip_verify and not ep.http_fallback


# --- one endpoint, one entry --------------------------------------------------------------------


def test_server_repeated_as_host_table_is_one_endpoint(tmp_path: Path) -> None:
    """The form containerd 1.x needs: the server again as a [host] table."""
    path = _hosts(
        tmp_path,
        "plain.test_15000_",
        'server = "http://plain.test:15000"\n\n'
        '[host."http://plain.test:15000"]\n  capabilities = ["pull", "resolve"]\n',
    )
    [ep] = registry_endpoints("plain.test:15000", str(tmp_path), containerd_version="1.6.20")
    assert ep.url == "http://plain.test:15000/v2" and ep.role == "upstream"
    assert ep.capabilities == ["pull", "resolve"]  # the first occurrence's settings
    assert ep.config_file == str(path)


def test_repeated_mirror_keeps_runtime_order_and_first_settings(tmp_path: Path) -> None:
    _hosts(
        tmp_path,
        "reg.test",
        """
server = "https://mirror-a.test"
[host."https://mirror-a.test"]
  capabilities = ["pull"]
[host."https://mirror-b.test"]
[host."https://MIRROR-A.test/"]
[host."https://mirror-a.test/other"]
""",
    )
    eps = registry_endpoints("reg.test", str(tmp_path))
    assert [(e.url, e.role) for e in eps] == [
        ("https://mirror-a.test/v2", "upstream"),  # the server repeats it: it is the upstream
        ("https://mirror-b.test/v2", "mirror"),
        ("https://mirror-a.test/other/v2", "mirror"),  # another path is another endpoint
    ]
    assert eps[0].capabilities == ["pull"] and eps[0].namespace == "reg.test"
