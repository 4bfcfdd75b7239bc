"""The one redaction rule set (agent/redaction.py) and its users: logs, probe results, errors."""

from __future__ import annotations

import base64
import re
import string
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from agent.diagnosis import sanitize_error
from agent.models import PullTestResult
from agent.probes._runner import redact
from agent.redaction import REDACTED, is_secret_key, redact_fields, redact_text, redact_url

DIGEST = "sha256:" + "ab" * 32
N = 64 * 1024  # the size of the hostile inputs


def result(**update: Any) -> PullTestResult:
    base = PullTestResult(
        pullcheck_version="0.1.0",
        node="node-a",
        image="quay.io/org/app:1",
        reference="quay.io/org/app:1",
        mode="pull",
        success=True,
        started_at="2025-01-01T00:00:00Z",
        duration_ms=1234.5678,
    )
    return base.model_copy(update=update)


# --- the rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://u:p@host/v2/", "https://<redacted>@host/v2/"),
        ("http://user:p@ss@host:5000/x", "http://<redacted>@host:5000/x"),
        ("u:p@host", "<redacted>@host"),
        (f"alpine@{DIGEST}", f"alpine@{DIGEST}"),
        (f"alpine:3.19@{DIGEST}", f"alpine:3.19@{DIGEST}"),
        (f"quay.io/a/b:1@{DIGEST}", f"quay.io/a/b:1@{DIGEST}"),
        (
            'Bearer realm="https://auth.docker.io/token"',
            'Bearer realm="https://auth.docker.io/token"',
        ),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic <redacted>"),
        ("?password=x&service=y", "?password=<redacted>&service=y"),
        ('{"token": "abc.def"}', '{"token": "<redacted>"}'),
        ("{'password': 'a b'}", "{'password': '<redacted>'}"),
        ('{\\"auth\\":\\"Ym9iOnB3\\"}', '{\\"auth\\":\\"<redacted>\\"}'),
        ('{"identity_token": null}', '{"identity_token": <redacted>}'),
        ("creds=bob:pw&image=x", "creds=<redacted>&image=x"),
        (
            '{"docker_config": {"auths": {"r.io": {"auth": "Ym9iOnB3", "pwd": "pw1"}}}}',
            '{"docker_config": {"auths": {"r.io": {"auth": "<redacted>", "pwd": "<redacted>"}}}}',
        ),
        ("registry_password = hunter2", "registry_password = <redacted>"),
        ("X-Auth-Token=abc;path=/", "X-Auth-Token=<redacted>;path=/"),
        ("password: hunter2\nuser: bob", "password: <redacted>\nuser: bob"),
        ("  - registry_token: abc def", "  - registry_token: <redacted>"),
        ("auths:\n  x: 1", "auths:\n  x: 1"),
        ("plain text with user@example.com", "plain text with user@example.com"),
        ("failed to fetch oauth token: 401", "failed to fetch oauth token: 401"),
        ("auth.pullcheck.test:46713", "auth.pullcheck.test:46713"),
        ("auth.example.com: connection refused", "auth.example.com: connection refused"),
        ("basic auth needed", "basic auth needed"),
        ("", ""),
    ],
)
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "key",
    [
        "creds",
        "auth",
        "Authorization",
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "pass",
        "access_token",
        "refresh_token",
        "identity_token",
        "registry_token",
        "X-Auth-Token",
        "client_secret",
        "docker_config",
        "dockerconfigjson",
        ".dockercfg",
        "Set-Cookie",
        "api_key",
        "apiKey",
        "private-key",
        "session_id",
        "signature",
        "registry_password",
    ],
)
def test_credential_keys(key: str) -> None:
    assert is_secret_key(key)
    assert redact_text(f"{key}=s3cr3t-v4lue") == f"{key}={REDACTED}"


@pytest.mark.parametrize("key", ["image", "mode", "timeout", "nodes", "stream", "passport", "user"])
def test_ordinary_keys(key: str) -> None:
    assert not is_secret_key(key)
    assert redact_text(f"{key}=value1") == f"{key}=value1"


def test_sanitize_removes_secrets() -> None:
    text = (
        'Get "https://bob:hunter2secret@r.example/token?account=bob&password=hunter2secret": '
        "Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.payload.sig"
    )
    clean = sanitize_error(text)
    assert "hunter2secret" not in clean
    assert "eyJhbGciOiJSUzI1NiJ9" not in clean
    assert "r.example" in clean


def test_probe_redaction_is_one_line_with_known_secrets() -> None:
    text = (
        "Authorization: Bearer eyJhbGciOi.abc.def and Basic YWxpY2U6c2VjcmV0 "
        '{"token": "tok123456", "access_token":"zzz"} refresh_token=r-1&x=1 with pw hunter2\nnext'
    )
    out = redact(text, ["hunter2"])
    for secret in ("eyJhbGciOi", "YWxpY2U6c2VjcmV0", "tok123456", "zzz", "r-1", "hunter2"):
        assert secret not in out
    assert "\n" not in out
    assert "Bearer <redacted>" in out and "x=1" in out
    # ordinary words around "token" are kept
    assert redact("failed to fetch oauth token: 401", []) == "failed to fetch oauth token: 401"


def test_known_secrets_longest_first_and_percent_encoded() -> None:
    pair = base64.b64encode(b"bob:p@ss/w0rd").decode()
    text = f"sent {pair} then p@ss/w0rd then {quote('p@ss/w0rd', safe='')} then p@ss"
    out = redact_text(text, ["p@ss", "p@ss/w0rd", pair, ""])
    assert out == "sent <redacted> then <redacted> then <redacted> then <redacted>"


def test_redact_fields_handles_models_and_depth() -> None:
    clean, dropped = redact_fields({"result": result(), "nested": {"a": {"api_key": "k"}}})
    assert clean["result"]["node"] == "node-a"
    assert clean["nested"] == {"a": {}} and dropped == ["nested.a.api_key"]


def test_redact_fields_scrubs_every_string_at_any_depth() -> None:
    deep: dict[str, Any] = {"url": "https://u:pw1@h/"}
    for _ in range(10):
        deep = {"next": deep, "items": ("Bearer Zm9vYmFy1", 3, None)}
    clean, dropped = redact_fields(deep)
    assert dropped == [] and "pw1" not in repr(clean) and "Zm9vYmFy1" not in repr(clean)


# --- URLs for the access log -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/healthz", "/healthz"),
        ("/healthz?password=hunter2", "/healthz?password=<redacted>"),
        ("/v1/pulltest?image=a&creds=bob:pw", "/v1/pulltest?image=a&creds=<redacted>"),
        ("/v1/pulltest?image=a&%63reds=bob%3Apw", "/v1/pulltest?image=a&creds=<redacted>"),
        (
            "/x?AUTH=Ym9i&Token=&docker_config=%7B%7D",
            "/x?AUTH=<redacted>&Token=<redacted>&docker_config=<redacted>",
        ),
        (
            "/v1/pulltest?image=bob%3Ahunter2%40registry.example.com%2Fapp%3A1",
            "/v1/pulltest?image=<redacted>@registry.example.com/app:1",
        ),
        ("/v1/pulltest?note=Bearer%20abc123XYZ", "/v1/pulltest?note=Bearer <redacted>"),
        ("/v1/pulltest?note=a%26password%3Dpw", "/v1/pulltest?note=a&password=<redacted>"),
        ("/a%2Fb?flag", "/a/b?flag="),
    ],
)
def test_redact_url(target: str, expected: str) -> None:
    assert redact_url(target, 2048) == expected


def test_redact_url_caps_after_redacting() -> None:
    out = redact_url("/healthz?x=" + "a" * 5000 + "&password=pw123456", 100)
    assert out == "/healthz?x=" + "a" * 89 + "…(+4931 chars)"
    with pytest.raises(ValueError, match="limit"):
        redact_url("/", -1)


# --- hostile input: linear time ----------------------------------------------------------------

# (shape, whether it holds something to redact)
HOSTILE: dict[str, tuple[str, bool]] = {
    "word characters": ("a" * N, False),
    "a.a.a": ("a." * (N // 2), False),
    "repeated key names": ("token=" * (N // 6), True),
    "glued key names": ("token" * (N // 5), False),
    "thousands of &k=v": ("&k=v" * (N // 4), False),
    "colons": ("a:a=" * (N // 4), False),
    "at signs": ("@:" * (N // 2), False),
    "schemes": ("://a" * (N // 4), False),
    "auth schemes": ("bearer " * (N // 7), False),
    "quoted keys": ('"token":' * (N // 8), True),
    "lines of keys": ("\ntoken" * (N // 6), False),
    "open quotes": ('password="' * (N // 10), True),
    "userinfo": (" u:p@" * (N // 5), True),
}


@pytest.mark.parametrize(("text", "secretive"), list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_input(text: str, secretive: bool) -> None:
    """What the rules make of the benchmark's shapes (their speed is measured in bench/)."""
    out = redact_text(text)
    assert (REDACTED in out) if secretive else (out == text)
    url = redact_url(f"/healthz?x={text}", 2048)
    assert url.startswith("/healthz?x=")
    assert len(url) <= 2048 or re.fullmatch(r"…\(\+\d+ chars\)", url[2048:])


# --- properties: a planted secret never survives -----------------------------------------------

_ALPHABET = string.ascii_letters + string.digits + "._~+/-"
secrets = st.text(_ALPHABET, min_size=8, max_size=40).filter(
    lambda s: any(c.isdigit() for c in s)  # not prose ("Bearer realm"), as real secrets are
)
keys = st.sampled_from(
    [
        "password",
        "Passwd",
        "token",
        "access_token",
        "X-Auth-Token",
        "auth",
        "Authorization",
        "creds",
        "registry_password",
        "client_secret",
        "api_key",
        "docker_config",
        "signature",
    ]
)
around = st.text(max_size=60)
gaps = st.sampled_from(["", " ", "\n", "\t", ", ", "; "])


def _planted(form: str, key: str, secret: str) -> str:
    return {
        "equals": f"{key}={secret}",
        "spaced": f"{key} = {secret}",
        "json": f'"{key}": "{secret}"',
        "python": f"'{key}': '{secret}'",
        "escaped": f'\\"{key}\\":\\"{secret}\\"',
        "bearer": f"Bearer {secret}",
        "basic": f"Basic {secret}",
        "header": f"Authorization: Bearer {secret}",
        "url": f"https://bob:{secret}@registry.example.com/v2/",
        "bare": f"bob:{secret}@registry.example.com",
        "line": f"\n{key}: {secret}\n",
    }[form]


@given(
    form=st.sampled_from(
        [
            "equals",
            "spaced",
            "json",
            "python",
            "escaped",
            "bearer",
            "basic",
            "header",
            "url",
            "bare",
            "line",
        ]
    ),
    key=keys,
    secret=secrets,
    before=around,
    after=around,
    gap=gaps,
)
def test_a_planted_secret_never_survives(
    form: str, key: str, secret: str, before: str, after: str, gap: str
) -> None:
    if form in ("url", "bare"):  # a "/" in userinfo is percent-encoded in a real URL
        secret = secret.replace("/", "")
    if form == "bare":  # "host/bob:pw@…" is a path, not userinfo: a bare form stands alone
        assume(gap != "")
    assume(secret not in before and secret not in after)
    text = f"{before}{gap}{_planted(form, key, secret)}{gap}{after}"
    assert secret not in redact_text(text)


@given(secret=st.text(min_size=1, max_size=30), before=around, after=around)
def test_a_known_secret_never_survives(secret: str, before: str, after: str) -> None:
    assume(secret not in before and secret not in after and secret not in REDACTED)
    assume(not any(c in secret for c in "<>"))
    for text in (f"{before}{secret}{after}", f"{before}{quote(secret, safe='')}{after}"):
        assert secret not in redact_text(text, [secret])


@given(key=keys, secret=secrets, before=st.lists(st.tuples(around, around), max_size=5))
def test_a_secret_query_parameter_never_reaches_the_access_log(
    key: str, secret: str, before: list[tuple[str, str]]
) -> None:
    assume(all(secret not in k + v and quote(secret, safe="") not in k + v for k, v in before))
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in before)
    for encoded in (f"{key}={secret}", f"{quote(key, safe='')}={quote(secret, safe='')}"):
        out = redact_url(f"/v1/pulltest?{query}&{encoded}", 1 << 20)
        assert secret not in out and quote(secret, safe="") not in out
