"""The classifier over a corpus of real runtime error texts, per containerd version and CRI-O.

Texts come from ../shared/reference/cri-kubelet-registry-facts.md §4.1/§4.2 (containerd source per
tag and issue threads) and from the lab (lab/OBSERVED.md, containerd 1.6.20).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from agent.diagnosis import classify_error, diagnose, remedy, sanitize_error
from agent.models import Cause, Endpoint, EndpointReport

R = "docker.io/library/nginx:1.99"
DENIED = "pull access denied, repository does not exist or may require authorization"
CORPUS = tomllib.loads((Path(__file__).parent / "data" / "runtime_errors.toml").read_text())["case"]


@pytest.mark.parametrize("case", CORPUS, ids=[c["label"] for c in CORPUS])
def test_classify_corpus(case: dict[str, str]) -> None:
    assert classify_error(case["text"], case.get("code")) is Cause(case["cause"])


def test_every_cause_is_reachable_from_text_or_code() -> None:
    covered = {Cause(c["cause"]) for c in CORPUS}
    assert covered == set(Cause), set(Cause) - covered


def _report(
    host: str, cause: Cause | None, summary: str = "", *, ok: bool = False, role: str = "upstream"
) -> EndpointReport:
    ep = Endpoint(url=f"https://{host}", scheme="https", host=host, port=443, role=role)  # type: ignore[arg-type]
    return EndpointReport(endpoint=ep, success=ok, cause=cause, summary=summary)


def test_probe_settles_pull_access_denied_as_missing_repository() -> None:
    text = (
        f'failed to pull and unpack image "{R}": failed to resolve reference "{R}": {DENIED}:'
        " server message: insufficient_scope: authorization failed"
    )
    missing = _report("r.example", Cause.REPOSITORY_NOT_FOUND, "GET tags/list → 404 NAME_UNKNOWN")
    d = diagnose(image=R, runtime_error=text, grpc_code="UNKNOWN", reports=[missing])
    assert d is not None and d.cause is Cause.REPOSITORY_NOT_FOUND
    assert d.summary == "GET tags/list → 404 NAME_UNKNOWN"
    denied = _report("r.example", Cause.UNAUTHORIZED, "HEAD → 401")
    d = diagnose(image=R, runtime_error=text, grpc_code="UNKNOWN", reports=[denied])
    assert d is not None and d.cause is Cause.UNAUTHORIZED


def test_probe_settles_not_found_as_missing_repository() -> None:
    text = (
        f'failed to pull and unpack image "{R}": failed to resolve reference "{R}": {R}: not found'
    )
    d = diagnose(
        image=R,
        runtime_error=text,
        grpc_code="NOT_FOUND",
        reports=[_report("r.example", Cause.REPOSITORY_NOT_FOUND, "repo missing")],
    )
    assert d is not None and d.cause is Cause.REPOSITORY_NOT_FOUND


def test_unknown_text_takes_probe_cause_and_names_endpoint() -> None:
    reports = [
        _report("m.example", Cause.MANIFEST_NOT_FOUND, "404", role="mirror"),
        _report("r.example", Cause.CONNECTION_REFUSED, "TCP connect to r.example:443 refused"),
    ]
    d = diagnose(image=R, runtime_error="unexpected EOF", grpc_code="UNKNOWN", reports=reports)
    assert d is not None and d.cause is Cause.CONNECTION_REFUSED
    assert "r.example:443" in d.summary and "r.example:443" in d.remedy


def test_resolve_mode_success_when_any_endpoint_succeeds() -> None:
    reports = [
        _report("m.example", Cause.CONNECTION_REFUSED, role="mirror"),
        _report("r.example", None, ok=True),
    ]
    assert diagnose(image=R, runtime_error=None, grpc_code=None, reports=reports) is None
    d = diagnose(image=R, runtime_error=None, grpc_code=None, reports=reports[:1])
    assert d is not None and d.cause is Cause.CONNECTION_REFUSED


def test_sanitize_removes_secrets() -> None:
    text = (
        'Get "https://bob:hunter2secret@r.example/token?account=bob&password=hunter2secret": '
        "Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.payload.sig"
    )
    clean = sanitize_error(text)
    assert "hunter2secret" not in clean
    assert "eyJhbGciOiJSUzI1NiJ9" not in clean
    assert "r.example" in clean


def test_every_cause_has_a_remedy_naming_the_endpoint() -> None:
    report = _report("reg.example", Cause.TIMEOUT)
    for cause in Cause:
        text = remedy(cause, report, R)
        assert text.endswith(".") and len(text) > 40
    assert "reg.example:443" in remedy(Cause.CONNECTION_REFUSED, report, R)
    assert "certs.d/reg.example:443/hosts.toml" in remedy(Cause.TLS_ERROR, report, R)


def _case(label: str) -> dict[str, str]:
    return next(c for c in CORPUS if c["label"] == label)


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("invalid tar", "layer sha256:0f3a… of "),
        (
            "1.6.20 blob gone",
            "sha256:40a67ac7995735143478148b4f92947e03af11b6ad612e5ea553718a00c75c60 of",
        ),
        ("1.6.20 ingest full", "writing /var/tmp/pullcheck-lab/root/io.containerd.content.v1"),
        ("platform", "no manifest for linux/arm64"),
    ],
)
def test_text_only_causes_get_a_specific_summary(label: str, expected: str) -> None:
    case = _case(label)
    d = diagnose(
        image=R,
        runtime_error=case["text"],
        grpc_code=case.get("code"),
        reports=[],
        platform="linux/arm64",
    )
    assert d is not None and d.cause is Cause(case["cause"])
    assert expected in d.summary and not d.summary.startswith("runtime:")
    assert "archive/tar: invalid tar header" in d.summary or label != "invalid tar"


def test_unauthorized_remedy_names_the_pull_secret_key_with_port() -> None:
    text = remedy(Cause.UNAUTHORIZED, None, "auth.example:5443/team/app:1")
    assert "key matching auth.example:5443" in text
    assert remedy(Cause.BLOB_NOT_FOUND, None, "r.example/a:1")[0].isupper()
