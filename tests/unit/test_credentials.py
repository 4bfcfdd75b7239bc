"""agent.credentials: crictl flags, docker config files and kubelet's keyring rules.

The keyring tables reproduce the behaviour kubelet's ``pkg/credentialprovider`` tests describe
(``TestURLsMatch``, ``TestDockerKeyringForGlob``, ``TestKeyringMiss``, ``TestDockerKeyringLookup``,
``TestIssue3797``, ``TestIsDefaultRegistryMatch`` and the Docker Hub fallback tests).
"""

from __future__ import annotations

import base64
import json
import traceback
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.credentials import (
    Credential,
    CredentialError,
    Keyring,
    KeyringMatch,
    _glob_match,
    from_auth,
    from_cli,
    from_creds,
    key_matches,
    load_docker_config,
    loads_docker_config,
)
from agent.reference import parse

DATA = Path(__file__).parent / "data"

# a distinctive secret: no window of it may ever show up in any message
SECRET = "Zq7-Wv3xK9pL"
SECRET_AUTH = base64.b64encode(f"alice:{SECRET}".encode()).decode()


def b64(text: str, *, padded: bool = True) -> str:
    encoded = base64.b64encode(text.encode()).decode()
    return encoded if padded else encoded.rstrip("=")


def assert_no_secret(*texts: str, secrets: tuple[str, ...] = (SECRET, SECRET_AUTH)) -> None:
    """No 5-character window of any secret appears in any of ``texts``."""
    for secret in secrets:
        windows = {secret[i : i + 5] for i in range(len(secret) - 4)}
        for text in texts:
            leaked = [w for w in windows if w in text]
            assert not leaked, f"secret fragment {leaked} in {text!r}"


def error_texts(exc: BaseException) -> tuple[str, ...]:
    formatted = "".join(traceback.format_exception(exc))
    return (str(exc), repr(exc), formatted, *(str(a) for a in exc.args))


def cred(name: str) -> Credential:
    return Credential(username=name, password=f"pw-{name}", source=name)


def keyring(entries: dict[str, Credential] | list[tuple[str, Credential]]) -> Keyring:
    ring = Keyring()
    for key, value in entries.items() if isinstance(entries, dict) else entries:
        ring.add(key, value)
    return ring


def write(tmp_path: Path, content: str | bytes | dict[str, Any], name: str = "config.json") -> Path:
    path = tmp_path / name
    if isinstance(content, dict):
        content = json.dumps(content)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


# --- Credential -----------------------------------------------------------------------------


def test_credential_repr_and_str_hide_secrets() -> None:
    credential = Credential("alice", SECRET, identity_token=SECRET_AUTH, source="--creds")
    for text in (repr(credential), str(credential), f"{credential}", f"{[credential]}"):
        assert "alice" in text
        assert "--creds" in text
        assert "<redacted>" in text
        assert_no_secret(text)


# --- crictl --creds / --auth -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "username", "password"),
    [
        ("alice:pw", "alice", "pw"),
        ("alice", "alice", ""),
        ("alice:", "alice", ""),
        ("alice:p:w:x", "alice", "p:w:x"),  # split at the first ':'
        ("alice::", "alice", ":"),
        ("user@example.com:pa ss", "user@example.com", "pa ss"),
    ],
)
def test_from_creds(value: str, username: str, password: str) -> None:
    credential = from_creds(value)
    assert (credential.username, credential.password) == (username, password)
    assert credential.source == "--creds"
    assert credential.identity_token == ""


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "--creds: credentials can't be empty"),
        (":" + SECRET, "--creds: username can't be empty (expected USER[:PASS])"),
        (":", "--creds: username can't be empty (expected USER[:PASS])"),
    ],
)
def test_from_creds_errors(value: str, message: str) -> None:
    with pytest.raises(CredentialError) as info:
        from_creds(value)
    assert str(info.value) == message
    assert_no_secret(*error_texts(info.value))


@pytest.mark.parametrize(
    ("value", "username", "password"),
    [
        (b64("alice:pw"), "alice", "pw"),
        (b64("alice:pw", padded=False), "alice", "pw"),
        (b64("alice:password"), "alice", "password"),  # '==' padding
        (b64("alice:password", padded=False), "alice", "password"),
        (b64("alice:p:w"), "alice", "p:w"),
        (b64("alice"), "alice", ""),
        (b64("alice:"), "alice", ""),
        (b64("alice:pw") + "\n", "alice", "pw"),  # Go's decoder skips CR/LF
        (b64("j\u00f6rg:p\u00e4ss"), "j\u00f6rg", "p\u00e4ss"),
    ],
)
def test_from_auth(value: str, username: str, password: str) -> None:
    credential = from_auth(value)
    assert (credential.username, credential.password) == (username, password)
    assert credential.source == "--auth"


NOT_BASE64 = "--auth: not valid base64; the value must be base64(username:password)"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "--auth: value can't be empty"),
        ("not base64!", NOT_BASE64),
        (SECRET, NOT_BASE64),
        (SECRET_AUTH + "=", NOT_BASE64),
        (SECRET_AUTH[:-1] + " ", NOT_BASE64),
        ("a", NOT_BASE64),
        (b64(":" + SECRET), "--auth: the decoded username is empty; the value must be "
         "base64(username:password)"),
        (base64.b64encode(b"alice:\xff\xfe" + SECRET.encode()).decode(),
         "--auth: the decoded value is not UTF-8 text"),
    ],
)  # fmt: skip
def test_from_auth_errors(value: str, message: str) -> None:
    with pytest.raises(CredentialError) as info:
        from_auth(value)
    assert str(info.value) == message
    assert_no_secret(*error_texts(info.value))


def test_from_cli() -> None:
    assert from_cli(None, None) is None
    assert from_cli("alice:pw", None) == Credential("alice", "pw", source="--creds")
    assert from_cli(None, b64("bob:pw")) == Credential("bob", "pw", source="--auth")
    with pytest.raises(CredentialError, match=r"^both --creds and --auth are specified$"):
        from_cli(f"alice:{SECRET}", SECRET_AUTH)
    with pytest.raises(CredentialError, match="can't be empty"):
        from_cli("", None)


@given(
    st.text(min_size=1).filter(lambda u: ":" not in u),
    st.text(),
    st.booleans(),
)
def test_property_creds_and_auth_agree(username: str, password: str, padded: bool) -> None:
    creds = from_creds(f"{username}:{password}")
    auth = from_auth(b64(f"{username}:{password}", padded=padded))
    assert (creds.username, creds.password) == (auth.username, auth.password)
    assert (creds.username, creds.password) == (username, password)


@given(st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", min_size=12, max_size=24))
def test_property_errors_never_contain_the_password(password: str) -> None:
    for call in (
        lambda: from_creds(":" + password),
        lambda: from_auth(password + "!"),
        lambda: from_auth(b64(":" + password)),
        lambda: from_cli("u:" + password, b64("u:" + password)),
        lambda: loads_docker_config(json.dumps({"auths": {"x.io": {"auth": password + "$"}}})),
        lambda: loads_docker_config(json.dumps({"auths": {"x.io": {"auth": b64(password)}}})),
        lambda: loads_docker_config('{"auths": {"x.io": {"password": "' + password + '"}'),
    ):
        with pytest.raises(CredentialError) as info:
            call()
        assert_no_secret(*error_texts(info.value), secrets=(password, b64(password)))


# --- key normalisation and matching (kubelet's URLsMatchStr) -----------------------------------

URLS_MATCH = [
    # kubelet TestURLsMatch: match when there is no path component
    ("*.kubernetes.io", "prefix.kubernetes.io", True),
    ("prefix.*.io", "prefix.kubernetes.io", True),
    ("prefix.kubernetes.*", "prefix.kubernetes.io", True),
    ("*-good.kubernetes.io", "prefix-good.kubernetes.io", True),
    # match with path components
    ("*.kubernetes.io/blah", "prefix.kubernetes.io/blah", True),
    ("prefix.*.io/foo", "prefix.kubernetes.io/foo/bar", True),
    # match with path components and ports
    ("*.kubernetes.io:1111/blah", "prefix.kubernetes.io:1111/blah", True),
    ("prefix.*.io:1111/foo", "prefix.kubernetes.io:1111/foo/bar", True),
    # no match when number of parts mismatch
    ("*.kubernetes.io", "kubernetes.io", False),
    ("*.*.kubernetes.io", "prefix.kubernetes.io", False),
    ("*.*.kubernetes.io", "kubernetes.io", False),
    ("*.example.com", "a.b.example.com", False),
    # no match when some parts mismatch
    ("kubernetes.io", "kubernetes.com", False),
    ("k*.io", "quay.io", False),
    # no match when ports mismatch
    ("*.kubernetes.io:1234/blah", "prefix.kubernetes.io:1111/blah", False),
    ("prefix.*.io/foo", "prefix.kubernetes.io:1111/foo/bar", False),
    ("prefix.kubernetes.io:1111/foo", "prefix.kubernetes.io/foo", False),
    # the key path is a plain string prefix, not a path-component prefix
    ("quay.io/org", "quay.io/organisation/app", True),
    ("quay.io/org", "quay.io/org/app", True),
    ("quay.io/org/", "quay.io/org/app", True),
    ("quay.io/org/", "quay.io/organisation/app", False),
    ("quay.io/org/app", "quay.io/org", False),
    # globs stay within one label: '?', classes, negation, escapes
    # '?' starts a URL query and '^' is not allowed in a URL host: kubelet's url.Parse means
    # neither works in a key (see test_glob_match for the glob semantics themselves)
    ("quay.i?", "quay.io", False),
    ("qu?y.io", "quay.io", False),
    ("q[a-z]ay.io", "quuay.io", False),
    ("q[a-z]ay.io", "quay.io", True),
    ("qu[a-c]y.io", "quay.io", True),
    ("qu[^a-c]y.io", "quay.io", False),
    ("qu[^x-z]y.io", "quay.io", False),
    ("qu[!x-z]y.io", "quay.io", False),  # Go's filepath.Match has no '!' negation
    ("*", "localhost", True),
    ("*", "docker.io", False),
    ("*.*", "docker.io", True),
    ("qu[a-.io", "quay.io", False),  # malformed class: never matches
    # hosts compare case-sensitively, as Go's filepath.Match does
    ("Quay.io", "quay.io", False),
    # ports and IPv6
    ("localhost:5000", "localhost:5000/foo", True),
    ("localhost", "localhost:5000/foo", False),
    ("[::1]:5000", "[::1]:5000/foo", True),
    ("[::1]:5000", "[::1]:5001/foo", False),
    ("10.0.0.1:5000", "10.0.0.1:5000/a", True),
    ("10.0.0.*:5000", "10.0.0.1:5000/a", True),
    # Docker Hub: docker.io matches, the API host and the legacy index host do not
    ("docker.io", "docker.io/library/nginx", True),
    ("registry-1.docker.io", "docker.io/library/nginx", False),
    ("index.docker.io", "docker.io/library/nginx", False),
    ("*.docker.io", "docker.io/library/nginx", False),
    ("*.io", "docker.io/library/nginx", True),
    # keys that do not parse as URLs never match
    ("quay.io:abc", "quay.io/a", False),
]


@pytest.mark.parametrize(("key", "image", "expected"), URLS_MATCH)
def test_key_matches(key: str, image: str, expected: bool) -> None:
    assert key_matches(key, image) is expected


KEY_NORMALISATION = [
    ("https://index.docker.io/v1/", "index.docker.io"),
    ("index.docker.io/v1/", "index.docker.io"),
    ("https://index.docker.io/v1", "index.docker.io/v1"),  # no trailing slash: a path
    ("http://registry.example.com/v2/", "registry.example.com"),
    ("registry.example.com/v2/foo", "registry.example.com/foo"),
    ("https://registry.example.com/", "registry.example.com"),
    ("quay.io/org", "quay.io/org"),
    ("quay.io/org/", "quay.io/org/"),
    ("quay.io:443", "quay.io:443"),
    ("docker.io", "docker.io"),
    ("*.azurecr.io", "*.azurecr.io"),
    ("[::1]:5000", "[::1]:5000"),
    ("https://user@quay.io/org", "quay.io/org"),
    ("quay.io/a%2Fb", "quay.io/a/b"),
    ("quay.io/org?x=1#frag", "quay.io/org"),
    ("HTTPS://quay.io", "HTTPS://quay.io"),  # scheme check is case-sensitive, as in kubelet
]


@pytest.mark.parametrize(("key", "normalised"), KEY_NORMALISATION)
def test_add_normalises_keys(key: str, normalised: str) -> None:
    ring = Keyring()
    assert ring.add(key, cred("x")) == normalised
    assert ring.keys() == [normalised]


GLOB = [
    # Go's filepath.Match on one label
    ("*", "", True),
    ("*", "abc", True),
    ("a*c", "abbbc", True),
    ("a*c", "ab", False),
    ("*c*", "abcd", True),
    ("a?c", "abc", True),
    ("a?c", "ac", False),
    ("[a-c]x", "bx", True),
    ("[a-c]x", "dx", False),
    ("[^a-c]x", "bx", False),
    ("[^a-c]x", "dx", True),
    ("[!a]", "!", True),  # '!' is a literal in Go classes
    ("[ab-]", "a", False),  # malformed: bare '-' at the end
    ("[]a]", "a", False),  # malformed: ']' cannot open a class
    ("[z-a]", "m", False),  # empty range: valid, matches nothing
    ("[\\]]", "]", True),
    ("\\*", "*", True),
    ("\\*", "a", False),
    ("a\\", "a", False),  # malformed: trailing backslash
    ("a[", "a", False),
    ("", "", True),
    ("", "a", False),
]


@pytest.mark.parametrize(("pattern", "name", "expected"), GLOB)
def test_glob_match(pattern: str, name: str, expected: bool) -> None:
    assert _glob_match(pattern, name) is expected


@pytest.mark.parametrize(
    "key",
    ["quay.io:abc", "quay .io", "quay.io:5000:x", "[::1", "[::1]x", "qu%zzay.io", "q\x00uay.io"],
)
def test_add_ignores_bad_urls(key: str) -> None:
    ring = Keyring()
    assert ring.add(key, cred("x")) is None
    assert len(ring) == 0
    assert ring.ignored == (key,)
    assert ring.lookup("quay.io/a") == []


# --- lookup ------------------------------------------------------------------------------------

# kubelet TestDockerKeyringForGlob: (key, image host); lookup of "<host>/foo/bar" must hit
GLOB_HITS = [
    ("https://hello.kubernetes.io", "hello.kubernetes.io"),
    ("https://*.docker.io", "prefix.docker.io"),
    ("https://prefix.*.io", "prefix.docker.io"),
    ("https://prefix.docker.*", "prefix.docker.io"),
    ("https://*.docker.io/path", "prefix.docker.io/path"),
    ("https://prefix.*.io/path", "prefix.docker.io/path/subpath"),
    ("https://prefix.docker.*/path", "prefix.docker.io/path"),
    ("https://*.docker.io:8888", "prefix.docker.io:8888"),
    ("https://prefix.*.io:8888", "prefix.docker.io:8888"),
    ("https://prefix.docker.*:8888", "prefix.docker.io:8888"),
    ("https://*.docker.io/path:1111", "prefix.docker.io/path:1111"),
    ("https://*.docker.io/v1/", "prefix.docker.io/path:1111"),
    ("https://*.docker.io/v2/", "prefix.docker.io/path:1111"),
    ("https://prefix.docker.*/path:1111", "prefix.docker.io/path:1111"),
    ("prefix.docker.io:1111", "prefix.docker.io:1111/path"),
    ("*.docker.io:1111", "prefix.docker.io:1111/path"),
]

# kubelet TestKeyringMiss: (key, image); lookup of "<image>/foo/bar" must miss
GLOB_MISSES = [
    ("https://hello.kubernetes.io", "world.mesos.org/foo/bar"),
    ("https://*.docker.com", "prefix.docker.io"),
    ("https://suffix.*.io", "prefix.docker.io"),
    ("https://prefix.docker.c*", "prefix.docker.io"),
    ("https://prefix.*.io/path:1111", "prefix.docker.io/path/subpath:1111"),
    ("suffix.*.io", "prefix.docker.io"),
]


@pytest.mark.parametrize(("key", "target"), GLOB_HITS)
def test_lookup_glob_hits(key: str, target: str) -> None:
    alice = cred("alice")
    assert keyring({key: alice}).lookup(target + "/foo/bar") == [alice]


@pytest.mark.parametrize(("key", "target"), GLOB_MISSES)
def test_lookup_glob_misses(key: str, target: str) -> None:
    assert keyring({key: cred("alice")}).lookup(target + "/foo/bar") == []


# kubelet TestDockerKeyringLookup: keys "bar.example.com/pong" (grace) and "bar.example.com" (ada)
DOCKER_KEYRING_LOOKUP = [
    ("bar.example.com", ["ada"]),  # direct match
    ("bar.example.com/pong", ["grace", "ada"]),  # direct match deeper than other matches
    ("bar.example.com/ping", ["ada"]),  # no direct match, deeper path ignored
    ("bar.example.com/pongz", ["grace", "ada"]),  # match first part of path token
    ("bar.example.com/pong/pang", ["grace", "ada"]),  # match regardless of sub-path
    ("example.com", []),  # no host match
    ("foo.example.com", []),
]


@pytest.mark.parametrize(("image", "expected"), DOCKER_KEYRING_LOOKUP)
def test_lookup_most_specific_first(image: str, expected: list[str]) -> None:
    ring = keyring({"bar.example.com/pong": cred("grace"), "bar.example.com": cred("ada")})
    assert [c.username for c in ring.lookup(image)] == expected


@pytest.mark.parametrize("image", ["quay.io", "quay.io/foo", "quay.io/foo/bar"])
def test_lookup_scheme_and_v1_path_match_host_images(image: str) -> None:
    """kubelet TestIssue3797: "https://quay.io/v1/" covers every quay.io image."""
    rex = cred("rex")
    assert keyring({"https://quay.io/v1/": rex}).lookup(image) == [rex]


# Docker Hub: (keys, image, expected usernames)
DOCKER_HUB = [
    # https://index.docker.io/v1/ only works through the fallback
    (["https://index.docker.io/v1/"], "docker.io/library/nginx", ["hub"]),
    (["https://index.docker.io/v1/"], "docker.io/user/app", ["hub"]),
    (["https://index.docker.io/v1/"], "google/docker-registry", ["hub"]),  # unqualified
    (["https://index.docker.io/v1/"], "jenkins", ["hub"]),  # unqualified library image
    (["https://index.docker.io/v1/"], "index.docker.io/v1//google/docker-registry", ["hub"]),
    (["https://index.docker.io/v1/"], "world.mesos.org/foo/bar", []),
    (["https://index.docker.io/v1/"], "quay.io/org/app", []),
    (["https://index.docker.io/v1/"], "localhost:5000/app", []),
    (["index.docker.io"], "docker.io/library/nginx", ["hub"]),
    # without the trailing slash the key keeps its /v1 path and the fallback finds nothing
    (["https://index.docker.io/v1"], "docker.io/library/nginx", []),
    # docker.io matches directly, registry-1.docker.io never does
    (["docker.io"], "docker.io/library/nginx", ["hub"]),
    (["registry-1.docker.io"], "docker.io/library/nginx", []),
    (["https://registry-1.docker.io/v2/"], "docker.io/library/nginx", []),
    # the fallback is only used when nothing matched
    (["docker.io/other", "https://index.docker.io/v1/"], "docker.io/library/nginx", ["hub2"]),
    (["docker.io/library", "https://index.docker.io/v1/"], "docker.io/library/nginx", ["hub"]),
    (["*.io", "https://index.docker.io/v1/"], "docker.io/library/nginx", ["hub"]),
]


@pytest.mark.parametrize(("keys", "image", "expected"), DOCKER_HUB)
def test_lookup_docker_hub(keys: list[str], image: str, expected: list[str]) -> None:
    names = ["hub", "hub2", "hub3"]
    ring = keyring([(key, cred(names[i])) for i, key in enumerate(keys)])
    assert [c.username for c in ring.lookup(image)] == expected


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("foo/bar", True),
        ("docker.io/foo/bar", True),
        ("index.docker.io/foo/bar", True),
        ("foo", True),
        ("", False),
        ("registry.tld/foo/bar", False),
        ("registry:5000/foo/bar", False),
        ("myhostdocker.io/foo/bar", False),
    ],
)
def test_default_registry_match(image: str, expected: bool) -> None:
    """kubelet TestIsDefaultRegistryMatch, observed through the fallback."""
    ring = keyring({"https://index.docker.io/v1/": cred("hub")})
    assert bool(ring.lookup(image)) is expected


def test_keys_are_reverse_lexical_and_deduplicated() -> None:
    ring = keyring(
        [
            ("quay.io", cred("a")),
            ("https://quay.io/org", cred("b")),
            ("quay.io/org/team", cred("c")),
            ("http://quay.io/v2/", cred("d")),
            ("*.quay.io", cred("e")),
            ("quay.io/Org", cred("f")),
        ]
    )
    assert ring.keys() == ["quay.io/org/team", "quay.io/org", "quay.io/Org", "quay.io", "*.quay.io"]
    assert len(ring) == 5
    assert [c.username for c in ring.lookup("quay.io/org/team/app")] == ["c", "b", "a", "d"]
    assert [c.username for c in ring.lookup("quay.io/Org/app")] == ["f", "a", "d"]
    assert [c.username for c in ring.lookup("x.quay.io/app")] == ["e"]
    assert [(k, c.username) for k, c in ring.items()][:2] == [
        ("quay.io/org/team", "c"),
        ("quay.io/org", "b"),
    ]


def test_lookup_returns_each_credential_once() -> None:
    same = Credential("alice", "pw", source="docker-config:a[quay.io]")
    again = Credential("alice", "pw", source="docker-config:b[quay.io/org]")
    other = Credential("bob", "pw", source="docker-config:b[quay.io]")
    ring = keyring([("quay.io/org", again), ("quay.io", same), ("quay.io", other)])
    assert ring.lookup("quay.io/org/app") == [again, other]


def test_lookup_accepts_a_reference() -> None:
    ring = keyring({"docker.io": cred("hub"), "quay.io/org": cred("org")})
    assert [c.username for c in ring.lookup(parse("nginx:1.25"))] == ["hub"]
    assert [c.username for c in ring.lookup(parse("quay.io/org/app@sha256:" + "a" * 64))] == ["org"]
    assert ring.lookup(parse("quay.io/other/app")) == []


def test_merge_and_extend() -> None:
    first = keyring({"quay.io": cred("a"), "bad:port": cred("x")})
    second = keyring({"quay.io": cred("b"), "https://index.docker.io/v1/": cred("hub")})
    merged = first.merge(second)
    assert merged.keys() == ["quay.io", "index.docker.io"]
    assert [c.username for c in merged.lookup("quay.io/app")] == ["a", "b"]
    assert [c.username for c in merged.lookup("docker.io/library/nginx")] == ["hub"]
    assert merged.ignored == ("bad:port",)
    assert first.keys() == ["quay.io"]  # merge does not modify its operands
    # keys stay as kubelet normalised them (no second normalisation of "/v1/..." or "%xx")
    odd = keyring({"https://quay.io/v1/v1/x": cred("v"), "quay.io/a%2541": cred("p")})
    combined = Keyring()
    combined.extend(odd)
    assert combined.keys() == odd.keys() == ["quay.io/v1/x", "quay.io/a%41"]


def test_keyring_repr_hides_secrets() -> None:
    ring = keyring({"quay.io": Credential("alice", SECRET, SECRET_AUTH, source="s")})
    assert repr(ring) == "Keyring(keys=['quay.io'])"
    assert_no_secret(repr(ring), str(ring), repr(ring.items()), repr(ring.lookup("quay.io/a")))


@given(
    st.lists(
        st.from_regex(r"[a-z]{1,5}(\.[a-z]{1,5}){0,2}(:[1-9][0-9]{0,3})?", fullmatch=True),
        min_size=1,
        max_size=6,
    ),
    st.from_regex(r"[a-z]{1,5}(/[a-z]{1,5}){0,2}", fullmatch=True),
)
def test_property_plain_host_keys_match_exactly_their_host(hosts: list[str], path: str) -> None:
    ring = keyring([(host, cred(host)) for host in hosts])
    assert ring.keys() == sorted(set(hosts), reverse=True)
    for host in hosts:
        assert [c.username for c in ring.lookup(f"{host}/{path}")] == [host]


# --- docker config files ------------------------------------------------------------------------


def _usernames(ring: Keyring, image: str) -> list[tuple[str, str]]:
    return [(c.username, c.source) for c in ring.lookup(image)]


def test_load_dockerconfigjson() -> None:
    path = DATA / "dockerconfigjson.json"
    ring = load_docker_config(path)
    assert ring.keys() == [
        "quay.io/org",
        "plain.pullcheck.test:15000",
        "index.docker.io",
        "*.azurecr.io",
    ]
    assert _usernames(ring, "docker.io/library/nginx") == [
        ("hubuser", f"docker-config:{path}[https://index.docker.io/v1/]")
    ]
    [hub] = ring.lookup("docker.io/library/nginx")
    assert hub.password == "hub-Fixture-Pw1"
    [org] = ring.lookup("quay.io/org/app")
    assert (org.username, org.password) == ("orguser", "org-Fixture-Pw2")
    assert org.source == f"docker-config:{path}[quay.io/org]"
    assert ring.lookup("quay.io/other/app") == []
    [lab] = ring.lookup("plain.pullcheck.test:15000/pullcheck/good")  # unpadded auth
    assert (lab.username, lab.password) == ("labuser", "lab-Fixture-Pw3")
    [acr] = ring.lookup("myreg.azurecr.io/app")
    assert acr.identity_token == "id-Fixture-Tok4"
    assert acr.password == ""


def test_load_legacy_dockercfg() -> None:
    path = DATA / "dockercfg.json"
    ring = load_docker_config(path)
    assert ring.keys() == ["registry.example.com", "index.docker.io"]
    [hub] = ring.lookup("docker.io/user/app")
    assert (hub.username, hub.password) == ("hubuser", "hub-Fixture-Pw1")
    [reg] = ring.lookup("registry.example.com/team/app")
    assert (reg.username, reg.password) == ("reguser", "reg-Fixture-Pw5")
    assert reg.source == f"docker-config:{path}[registry.example.com]"


def test_load_kubernetes_secrets() -> None:
    path = DATA / "secret-dockerconfigjson.json"
    ring = load_docker_config(path)
    [lab] = ring.lookup("plain.pullcheck.test:15000/pullcheck/good")
    assert (lab.username, lab.password) == ("labuser", "lab-Fixture-Pw3")
    assert lab.source == f"docker-config:{path}[plain.pullcheck.test:15000]"

    legacy = load_docker_config(DATA / "secret-dockercfg.json")
    assert legacy.keys() == ["registry.example.com"]

    both = load_docker_config(DATA / "secret-list.json")
    assert both.keys() == ["registry.example.com", "plain.pullcheck.test:15000"]


def test_load_secret_with_string_data(tmp_path: Path) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s"},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {
            ".dockerconfigjson": json.dumps({"auths": {"quay.io": {"auth": b64("a:b")}}})
        },
    }
    [found] = load_docker_config(write(tmp_path, secret)).lookup("quay.io/x")
    assert (found.username, found.password) == ("a", "b")


@pytest.mark.parametrize(
    ("entry", "username", "password", "token"),
    [
        ({"username": "u", "password": "p"}, "u", "p", ""),
        ({"auth": b64("u:p")}, "u", "p", ""),
        ({"auth": b64("u:p", padded=False)}, "u", "p", ""),
        ({"auth": b64("u:password")}, "u", "password", ""),
        ({"auth": b64("u:password", padded=False)}, "u", "password", ""),
        ({"auth": b64("u:p:q")}, "u", "p:q", ""),
        ({"auth": b64(":p")}, "", "p", ""),  # kubelet accepts an empty user here
        ({"auth": b64("u:")}, "u", "", ""),
        # auth overrides username/password
        ({"auth": b64("user:pass"), "username": "foo", "password": "bar"}, "user", "pass", ""),
        ({"auth": "", "username": "foo", "password": "bar"}, "foo", "bar", ""),
        ({"auth": None, "username": "foo"}, "foo", "", ""),
        ({"username": "u", "identitytoken": "tok"}, "u", "", "tok"),
        ({"email": "a@b.c", "serveraddress": "x", "registrytoken": "r"}, "", "", ""),
        # Go's encoding/json matches field names case-insensitively; the last one wins
        ({"Username": "u", "PASSWORD": "p"}, "u", "p", ""),
        ({"Auth": b64("u:p"), "IdentityToken": "tok"}, "u", "p", "tok"),
        ({}, "", "", ""),
    ],
)
def test_entry_decoding(entry: dict[str, Any], username: str, password: str, token: str) -> None:
    [found] = loads_docker_config(json.dumps({"auths": {"quay.io": entry}})).lookup("quay.io/a")
    assert (found.username, found.password, found.identity_token) == (username, password, token)
    assert found.source == "docker-config:<string>[quay.io]"


ORIGIN = "/etc/cfg.json"

CONFIG_ERRORS: list[tuple[str | bytes, str]] = [
    ("", f"{ORIGIN}: not valid JSON: Expecting value at line 1 column 1"),
    ('{"auths": {"quay.io": {"auth": "' + SECRET + '"', f"{ORIGIN}: not valid JSON: Expecting "
     "',' delimiter at line 1 column 46"),
    (b"\xff\xfe{}", f"{ORIGIN}: not UTF-8 text"),
    ("[]", f"{ORIGIN}: expected a JSON object (.dockerconfigjson, .dockercfg or a Kubernetes "
     "Secret), got an array"),
    ("{}", f'{ORIGIN}: no "auths" object and no registry entries; expected '
     '{"auths": {"<registry>": {...}}} or a legacy .dockercfg map'),
    ('{"credsStore": "desktop"}', f'{ORIGIN}: docker CLI config without an "auths" object (has '
     "credsStore); credential helpers are not used by kubelet"),
    ('{"quay.io": "' + SECRET + '"}', f'{ORIGIN}: not a docker config: no "auths" object, and key '
     "'quay.io' is not a registry entry (a string, expected an object)"),
    ('{"auths": ["' + SECRET + '"]}', f'{ORIGIN}: "auths" must be an object, got an array'),
    ('{"auths": {"quay.io": "' + SECRET + '"}}', f"{ORIGIN}: entry 'quay.io' must be an object, "
     "got a string"),
    ('{"auths": {"quay.io": {"password": 12345}}}', f"{ORIGIN}: entry 'quay.io': field "
     "'password' must be a string"),
    ('{"auths": {"quay.io": {"auth": "' + SECRET + '"}}}', f"{ORIGIN}: entry 'quay.io': auth "
     "field is not valid base64; auth field must be base64(username:password)"),
    ('{"auths": {"quay.io": {"auth": "' + SECRET_AUTH + '=="}}}', f"{ORIGIN}: entry 'quay.io': "
     "auth field is not valid base64; auth field must be base64(username:password)"),
    ('{"auths": {"quay.io": {"auth": "' + b64(SECRET) + '"}}}', f"{ORIGIN}: entry 'quay.io': "
     "decoded auth field has no ':'; auth field must be base64(username:password)"),
    ('{"auths": {"quay.io": {"auth": "' + base64.b64encode(b"u:\xff" + SECRET.encode()).decode()
     + '"}}}', f"{ORIGIN}: entry 'quay.io': auth field does not decode to UTF-8 text"),
    ('{"apiVersion": "v1", "kind": "ConfigMap", "data": {}}',
     f"{ORIGIN}: a Kubernetes ConfigMap is not a Secret"),
    ('{"apiVersion": "v1", "kind": "List", "items": []}', f"{ORIGIN}: the List has no items"),
    ('{"apiVersion": "v1", "kind": "List", "items": [{"kind": "Pod"}]}',
     f"{ORIGIN}: List item 0 is not a Secret"),
]  # fmt: skip


def _secret(secret_type: str, data: dict[str, str], name: str = "regcred") -> str:
    return json.dumps(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": secret_type,
         "data": data}
    )  # fmt: skip


SECRET_ERRORS: list[tuple[str, str]] = [
    (_secret("Opaque", {"password": b64(SECRET)}), f"{ORIGIN}: Secret regcred has type 'Opaque'; "
     "kubelet only uses secrets of type kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg"),
    (_secret("kubernetes.io/dockerconfigjson", {".dockercfg": b64("{}")}),
     f"{ORIGIN}: Secret regcred has no data[.dockerconfigjson]"),
    (_secret("kubernetes.io/dockerconfigjson", {".dockerconfigjson": SECRET + "!"}),
     f"{ORIGIN}: Secret regcred data[.dockerconfigjson] is not valid base64"),
    (_secret("kubernetes.io/dockerconfigjson", {".dockerconfigjson": b64(SECRET)}),
     f"{ORIGIN}: Secret regcred data[.dockerconfigjson]: not valid JSON: Expecting value at "
     "line 1 column 1"),
    (_secret("kubernetes.io/dockerconfigjson", {".dockerconfigjson": b64('"x"')}),
     f"{ORIGIN}: Secret regcred data[.dockerconfigjson]: expected a JSON object"),
    (_secret("kubernetes.io/dockerconfigjson",
             {".dockerconfigjson": b64(json.dumps({"quay.io": {"auth": SECRET_AUTH}}))}),
     f'{ORIGIN}: Secret regcred data[.dockerconfigjson]: has no "auths" object, so kubelet finds '
     "no credentials in it (legacy .dockercfg content belongs in a kubernetes.io/dockercfg "
     "secret)"),
    (_secret("kubernetes.io/dockerconfigjson",
             {".dockerconfigjson": b64(json.dumps({"auths": {"q.io": {"auth": SECRET}}}))}),
     f"{ORIGIN}: Secret regcred data[.dockerconfigjson]: entry 'q.io': auth field is not valid "
     "base64; auth field must be base64(username:password)"),
    (_secret("kubernetes.io/dockercfg",
             {".dockercfg": b64(json.dumps({"auths": {"q.io": {"auth": SECRET_AUTH}}}))}),
     f'{ORIGIN}: Secret regcred data[.dockercfg]: a legacy .dockercfg has no "auths" object '
     "(.dockerconfigjson content belongs in a kubernetes.io/dockerconfigjson secret)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("content", "message"),
    [*CONFIG_ERRORS, *SECRET_ERRORS],
    ids=[f"config-{i}" for i in range(len(CONFIG_ERRORS))]
    + [f"secret-{i}" for i in range(len(SECRET_ERRORS))],
)
def test_config_errors(content: str | bytes, message: str) -> None:
    with pytest.raises(CredentialError) as info:
        loads_docker_config(content, origin=ORIGIN)
    assert str(info.value) == message
    exc = info.value
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__  # no chained input in tracebacks
    assert_no_secret(*error_texts(info.value), secrets=(SECRET, SECRET_AUTH, b64(SECRET)))


def test_load_docker_config_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(CredentialError, match=rf"^cannot read docker config {missing}: No such"):
        load_docker_config(missing)
    with pytest.raises(CredentialError, match="Is a directory"):
        load_docker_config(tmp_path)
    bad = write(tmp_path, '{"auths": {"quay.io": {"auth": "' + SECRET + '"}}}')
    with pytest.raises(CredentialError) as info:
        load_docker_config(bad)
    assert str(info.value).startswith(f"{bad}: entry 'quay.io': auth field is not valid base64")
    assert_no_secret(*error_texts(info.value))


def test_load_docker_config_with_bom_and_other_cli_keys(tmp_path: Path) -> None:
    content = {"auths": {"quay.io": {"auth": b64("a:b")}}, "credsStore": "desktop"}
    path = write(tmp_path, b"\xef\xbb\xbf" + json.dumps(content).encode())
    assert load_docker_config(path).keys() == ["quay.io"]


def test_empty_auths_and_bad_keys(tmp_path: Path) -> None:
    assert len(loads_docker_config('{"auths": {}}')) == 0
    assert len(loads_docker_config('{"auths": null}')) == 0
    ring = loads_docker_config(json.dumps({"auths": {"quay.io:abc": {}, "quay.io": {}}}))
    assert ring.keys() == ["quay.io"]
    assert ring.ignored == ("quay.io:abc",)


# --- explain: which keys matched an image, and why the others did not --------------------------


def _explain(keys: list[str], image: str, origin: str = "/etc/cfg.json") -> KeyringMatch:
    entries = {key: {"auth": SECRET_AUTH} for key in keys}
    return loads_docker_config(json.dumps({"auths": entries}), origin=origin).explain(image)


def _reasons(match: KeyringMatch) -> list[tuple[str, str, bool]]:
    return [(c.key, c.reason, c.near) for c in match.checks]


def test_explain_the_issue_example_names_the_file_the_entries_and_the_ports() -> None:
    match = _explain(["quay.io", "ghcr.io"], "10.0.0.5:5000/app")
    assert not match.matched and not match.near_misses
    assert _reasons(match) == [
        ("quay.io", "other_host_and_port", False),
        ("ghcr.io", "other_host_and_port", False),
    ]
    assert match.sources == ("docker-config:/etc/cfg.json",)
    assert match.registry == "10.0.0.5:5000"
    assert match.fix == 'add an entry for "10.0.0.5:5000"'
    # truthful: the hosts differ, and the ports too
    assert match.checks[0].detail == (
        "another host (quay.io, not 10.0.0.5:5000) and another port; ports must be equal "
        "(the key has none, the image has :5000)"
    )
    assert match.describe() == (
        "docker-config:/etc/cfg.json has 2 entries, but none matches 10.0.0.5:5000/app under "
        "kubelet's rules (host, port, path prefix, glob). Entries: quay.io, ghcr.io — other "
        "hosts, none with port :5000 (ports must be equal)."
    )


def test_explain_same_host_other_port_is_a_near_miss_named_first() -> None:
    match = _explain(["quay.io", "ghcr.io", "10.0.0.5"], "10.0.0.5:5000/app")
    assert _reasons(match)[0] == ("10.0.0.5", "port", True)
    [near] = match.near_misses
    assert near.detail == (
        "same host, other port: ports must be equal (the key has none, the image has :5000)"
    )
    text = match.describe()
    assert "Near miss: 10.0.0.5 — same host, other port: ports must be equal" in text
    assert "Other entries: quay.io, ghcr.io — other hosts, none with port :5000" in text
    assert text.index("Near miss") < text.index("Other entries")
    reverse = _explain(["localhost:5000"], "localhost/app")
    assert reverse.checks[0].detail.endswith("(the key has :5000, the image has none)")
    assert reverse.fix == 'add an entry for "localhost"'


@pytest.mark.parametrize(
    ("keys", "image", "note"),
    [
        (["quay.io"], "ghcr.io/app", "Entries: quay.io — another host."),
        (["quay.io", "ghcr.io"], "gcr.io/app", "Entries: quay.io, ghcr.io — other hosts."),
        (["quay.io:443"], "ghcr.io/app", "another host with a port, while ghcr.io has none"),
        (["quay.io"], "ghcr.io:5000/app", "another host, without port :5000 (ports must be"),
        (["quay.io", "ghcr.io:5000"], "gcr.io/app", "other hosts, some with other ports too"),
    ],
)
def test_explain_other_hosts_say_how_ports_differ(keys: list[str], image: str, note: str) -> None:
    match = _explain(keys, image)
    assert not match.near_misses
    assert note in match.describe()


@pytest.mark.parametrize(
    ("key", "image", "reason", "detail"),
    [
        ("*.example.com", "example.com/app", "label_count",
         "a glob stands for exactly one host label: *.example.com covers hosts of 3 labels, "
         "example.com has 2"),
        ("*.example.com", "a.b.example.com/app", "label_count",
         "a glob stands for exactly one host label: *.example.com covers hosts of 3 labels, "
         "a.b.example.com has 4"),
        ("quay.io/org", "quay.io/other/app", "path_prefix_miss",
         "quay.io/org covers only names starting with quay.io/org, not quay.io/other/app"),
        ("https://quay.io/v1", "quay.io/org/app", "path_form",
         "kubelet reads /v1 without a trailing slash as a repository path; write quay.io or "
         "https://quay.io/v1/"),
        ("registry-1.docker.io", "nginx", "docker_hub_alias",
         'registry-1.docker.io is a Docker Hub host, but Docker Hub images are matched as '
         'docker.io (3 labels vs 2), so it never matches: use "docker.io" or '
         '"https://index.docker.io/v1/"'),
        ("https://registry-1.docker.io/v2/", "docker.io/user/app", "docker_hub_alias",
         'registry-1.docker.io is a Docker Hub host'),
        ("*.docker.io", "nginx", "docker_hub_alias", "*.docker.io is a Docker Hub host"),
        ("https://index.docker.io/v1", "nginx", "docker_hub_alias",
         "kubelet falls back to the Docker Hub entry only under the exact key index.docker.io; "
         "this key has the path /v1 (write https://index.docker.io/v1/ with the trailing slash)"),
        ("Quay.io", "quay.io/org/app", "host_case",
         "host names compare case-sensitively: Quay.io is not quay.io"),
        ("HTTPS://quay.io", "quay.io/org/app", "scheme",
         "kubelet strips only a lower-case https:// or http:// scheme, so it reads the host "
         "'HTTPS:'; write the key without the scheme"),
        ("quay.io/a%25zz", "quay.io/a/b", "unparsable",
         "kubelet cannot parse it as a URL when matching, so it never matches"),
    ],
)  # fmt: skip
def test_explain_near_misses(key: str, image: str, reason: str, detail: str) -> None:
    match = _explain([key, "other.example.org"], image)
    assert not match.matched
    near = match.near_misses[0]
    assert (near.reason, near.near) == (reason, True)
    assert near.detail.startswith(detail)
    assert [c.key for c in match.others] == ["other.example.org"]
    assert f"Near miss: {near.key} — {near.detail}." in match.describe()


def test_explain_a_glob_of_another_domain_is_no_near_miss() -> None:
    match = _explain(["*.example.org"], "a.b.example.com/app")
    assert _reasons(match) == [("*.example.org", "other_host", False)]


def test_explain_docker_hub_fix_names_both_key_forms() -> None:
    match = _explain(["registry-1.docker.io"], "docker.io/library/nginx")
    assert match.registry == "docker.io"
    assert match.fix == 'add an entry for "docker.io" or "https://index.docker.io/v1/" (Docker Hub)'
    assert _explain([], "localhost/app").fix == 'add an entry for "localhost"'


@pytest.mark.parametrize(
    ("keys", "image", "matched"),
    [
        (["quay.io"], "quay.io/org/app", [("quay.io", "exact")]),
        (["quay.io/org", "quay.io", "*.io"], "quay.io/org/app",
         [("quay.io/org", "path_prefix"), ("quay.io", "exact"), ("*.io", "glob")]),
        (["https://index.docker.io/v1/"], "nginx", [("index.docker.io", "docker_hub_fallback")]),
        (["docker.io"], "docker.io/library/nginx", [("docker.io", "exact")]),
    ],
)  # fmt: skip
def test_explain_says_how(keys: list[str], image: str, matched: list[tuple[str, str]]) -> None:
    match = _explain(keys, image)
    assert [(c.key, c.reason) for c in match.matched] == matched
    assert all(c.matched and not c.near for c in match.matched)
    words = {"exact": "exact host", "glob": "glob", "path_prefix": "path prefix",
             "docker_hub_fallback": "Docker Hub fallback"}  # fmt: skip
    shown = ", ".join(f"{key} ({words[how]})" for key, how in matched)
    assert match.describe() == f"{match.image} matches {shown} in docker-config:/etc/cfg.json."


def test_explain_fallback_unused_when_another_key_matches() -> None:
    match = _explain(["https://index.docker.io/v1/", "docker.io"], "docker.io/library/nginx")
    assert _reasons(match) == [
        ("docker.io", "exact", False),
        ("index.docker.io", "fallback_unused", False),
    ]
    assert "only when no other key matches" in match.checks[1].detail


def test_explain_ignored_keys_are_listed_escaped() -> None:
    match = _explain(["quay.io:abc", "q\x01.io", "x.io"], "quay.io/org/app")
    assert match.ignored == ("quay.io:abc", "q\x01.io")
    text = match.describe()
    assert "has 1 entry, but none matches" in text
    assert "Ignored because they do not parse as URLs: 'quay.io:abc', 'q\\x01.io'." in text
    assert "\x01" not in text


def test_explain_an_empty_keyring() -> None:
    match = _explain([], "quay.io/a")
    assert match.keys == () and match.checks == ()
    assert match.describe() == (
        "docker-config:/etc/cfg.json has no entries, so none matches quay.io/a under kubelet's "
        "rules (host, port, path prefix, glob)."
    )
    bare = Keyring().explain("quay.io/a")
    assert bare.describe().startswith("the keyring has no entries")


def test_explain_agrees_with_lookup_on_the_kubelet_tables() -> None:
    cases = [(key, image) for key, image, _ in URLS_MATCH]
    cases += [(key, target + "/foo/bar") for key, target in GLOB_HITS + GLOB_MISSES]
    cases += [(key, image) for keys, image, _ in DOCKER_HUB for key in keys]
    for key, image in cases:
        ring = keyring({key: cred("a")})
        match = ring.explain(image)
        assert bool(match.matched) == bool(ring.lookup(image)), (key, image)
        assert len(match.checks) == len(ring), (key, image)
        assert all(c.detail for c in match.checks)


def test_explain_accepts_a_reference() -> None:
    ring = keyring({"quay.io/org": cred("org")})
    match = ring.explain(parse("quay.io/other/app:1.0"))
    assert match.image == "quay.io/other/app" and match.registry == "quay.io"
    assert match.near_misses[0].reason == "path_prefix_miss"


def test_explain_is_bounded_for_large_configs() -> None:
    many = [f"r{i}.example.com" for i in range(1000)]
    match = _explain(many, "quay.io/app")
    text = match.describe()
    assert len(match.others) == 1000
    assert "and 992 more — other hosts." in text and len(text) < 600
    near = _explain([f"quay.io:{port}" for port in range(1, 51)], "quay.io/app").describe()
    assert near.count("same host, other port") == 8 and "; and 42 more." in near
    long_key = "a" * 5000 + ".io"
    clipped = _explain([long_key], "quay.io/app").describe()
    assert len(clipped) < 600 and "…" in clipped
    assert _explain(["quay.io"], "x.io/a").describe(limit=1)
    with pytest.raises(ValueError, match="limit must be at least 1, got 0"):
        match.describe(limit=0)


def test_explain_never_shows_a_secret() -> None:
    match = _explain(["quay.io", "x.io:5000", "quay.io:abc"], "quay.io:5000/a")
    assert_no_secret(match.describe(), repr(match), *(c.detail for c in match.checks))


def test_sources_name_files_and_secrets(tmp_path: Path) -> None:
    plain = write(tmp_path, {"auths": {"quay.io": {"auth": b64("a:b")}}})
    assert load_docker_config(plain).sources == (f"docker-config:{plain}",)
    legacy = load_docker_config(DATA / "dockercfg.json")
    assert legacy.sources == (f"docker-config:{DATA / 'dockercfg.json'}",)
    listed = load_docker_config(DATA / "secret-list.json")
    assert listed.sources == (
        f"docker-config:{DATA / 'secret-list.json'} (Secret default/regcred)",
        f"docker-config:{DATA / 'secret-list.json'} (Secret default/oldcred)",
    )
    unnamed = _secret("kubernetes.io/dockerconfigjson", {".dockerconfigjson": b64('{"auths": {}}')})
    assert loads_docker_config(unnamed, origin="request").sources == (
        "docker-config:request (Secret regcred)",
    )
    merged = load_docker_config(plain).merge(listed).merge(load_docker_config(plain))
    assert merged.sources == (f"docker-config:{plain}", *listed.sources)
    text = merged.explain("ghcr.io/app").describe()
    assert text.startswith(f"docker-config:{plain}, docker-config:{DATA / 'secret-list.json'} (")
    assert " have 3 entries, but none matches ghcr.io/app" in text
