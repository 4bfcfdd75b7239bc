"""The classifier over a corpus of real runtime error texts, per containerd version and CRI-O.

Texts come from containerd's source per release tag (remotes/docker/, transfer/local/pull.go),
public issue threads that quote them, and the lab (lab/OBSERVED.md, containerd 1.6.20); see the
header of tests/unit/data/runtime_errors.toml.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from agent.diagnosis import classify_error, diagnose, path_findings, remedy
from agent.models import Cause, Endpoint, EndpointReport, Finding, ProbeResult, TcpEvidence

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


def test_unknown_text_takes_the_furthest_probe_failure_and_names_endpoint() -> None:
    reports = [
        _report("m.example", Cause.DNS_FAILURE, "lookup m.example: NXDOMAIN", role="mirror"),
        _report("r.example", Cause.CONNECTION_REFUSED, "TCP connect to r.example:443 refused"),
    ]
    d = diagnose(image=R, runtime_error="odd answer", grpc_code="UNKNOWN", reports=reports)
    assert d is not None and d.cause is Cause.CONNECTION_REFUSED
    assert "r.example:443" in d.summary and "r.example:443" in d.remedy
    # a mirror that answered about the content got further than an upstream that refused
    reports[0] = _report("m.example", Cause.MANIFEST_NOT_FOUND, "404", role="mirror")
    d = diagnose(image=R, runtime_error="odd answer", grpc_code="UNKNOWN", reports=reports)
    assert d is not None and d.cause is Cause.MANIFEST_NOT_FOUND and "m.example:443" in d.remedy
    assert [(f.cause, f.endpoint) for f in d.findings] == [
        (Cause.CONNECTION_REFUSED, "https://r.example")
    ]


def test_resolve_mode_success_when_any_endpoint_succeeds() -> None:
    reports = [
        _report("m.example", Cause.CONNECTION_REFUSED, role="mirror"),
        _report("r.example", None, ok=True),
    ]
    assert diagnose(image=R, runtime_error=None, grpc_code=None, reports=reports) is None
    d = diagnose(image=R, runtime_error=None, grpc_code=None, reports=reports[:1])
    assert d is not None and d.cause is Cause.CONNECTION_REFUSED


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


# --- the cause is the failure that still blocks the pull (issue 7) ----------------------------

MIRRORED = "mirrored.pullcheck.test:15000/pullcheck/good:9.9"
MIRROR_URL = "http://refused.pullcheck.test:15098/v2"
MANIFEST_URL = "http://mirrored.pullcheck.test:15000/v2/pullcheck/good/manifests/9.9"
# what containerd 1.6.20 says for it in the lab (lab/OBSERVED.md): the mirror's error, not the 404
MASKED_404 = (
    f'failed to pull and unpack image "{MIRRORED}": failed to resolve reference "{MIRRORED}": '
    f'failed to do request: Head "{MIRROR_URL}/pullcheck/good/manifests/9.9?ns=mirrored.pullcheck'
    '.test%3A15000": dial tcp 127.0.0.1:15098: connect: connection refused'
)
STEPS = ("dns", "tcp", "tls", "http", "token", "manifest")


def _chain(
    url: str,
    reached: str,
    cause: Cause | None,
    summary: str = "",
    *,
    role: str = "upstream",
    evidence: dict[str, object] | None = None,
) -> EndpointReport:
    """A report whose chain passed every step before ``reached`` and failed there with ``cause``
    (``cause`` None: it passed ``reached`` too, the endpoint works)."""
    scheme, _, rest = url.partition("://")
    host, _, port = rest.split("/", 1)[0].partition(":")
    ep = Endpoint(
        url=url,
        scheme=scheme,  # type: ignore[arg-type]
        host=host,
        port=int(port or 443),
        role=role,  # type: ignore[arg-type]
    )
    steps = [s for s in STEPS[: STEPS.index(reached) + 1] if s != "tls" or scheme == "https"]
    probes = [
        ProbeResult(probe=step, target=url, success=True, duration_ms=1.0)  # type: ignore[arg-type]
        for step in steps[:-1]
    ]
    probes.append(
        ProbeResult(
            probe=steps[-1],  # type: ignore[arg-type]
            target=url,
            success=cause is None,
            duration_ms=1.0,
            cause=cause,
            error=summary,
            evidence=evidence,  # type: ignore[arg-type]
        )
    )
    return EndpointReport(
        endpoint=ep, success=cause is None, cause=cause, summary=summary or "ok", probes=probes
    )


def _dead_mirror() -> EndpointReport:
    summary = "TCP connect to refused.pullcheck.test:15098 (127.0.0.1) refused"
    return _chain(MIRROR_URL, "tcp", Cause.CONNECTION_REFUSED, summary, role="mirror")


def _missing_tag() -> EndpointReport:
    summary = f"HEAD {MANIFEST_URL} → 404 Not Found: 9.9 not found in repository pullcheck/good"
    return _chain(
        "http://mirrored.pullcheck.test:15000/v2", "manifest", Cause.MANIFEST_NOT_FOUND, summary
    )


def test_masked_404_behind_a_dead_mirror_is_the_missing_tag() -> None:
    """containerd names the mirror's refusal; bringing the mirror back would not help."""
    assert classify_error(MASKED_404, "UNKNOWN") is Cause.CONNECTION_REFUSED  # the text alone
    mirror, upstream = _dead_mirror(), _missing_tag()
    d = diagnose(
        image=MIRRORED, runtime_error=MASKED_404, grpc_code="UNKNOWN", reports=[mirror, upstream]
    )
    assert d is not None and d.cause is Cause.MANIFEST_NOT_FOUND
    assert d.summary == upstream.summary
    assert "mirrored.pullcheck.test:15000" in d.remedy and "15098" not in d.remedy
    assert d.findings == [
        Finding(cause=Cause.CONNECTION_REFUSED, summary=mirror.summary, endpoint=MIRROR_URL),
        Finding(
            cause=Cause.CONNECTION_REFUSED,
            summary=(
                f'failed to do request: Head "{MIRROR_URL}/pullcheck/good/manifests/9.9'
                '?ns=mirrored.pullcheck.test%3A15000": dial tcp 127.0.0.1:15098: connect: '
                "connection refused"
            ),
            source="runtime",
        ),
    ]
    # the same without a runtime (resolve mode, `pullcheck probe`): the same cause and mirror
    d = diagnose(image=MIRRORED, runtime_error=None, grpc_code=None, reports=[mirror, upstream])
    assert d is not None and d.cause is Cause.MANIFEST_NOT_FOUND
    assert [(f.cause, f.endpoint, f.source) for f in d.findings] == [
        (Cause.CONNECTION_REFUSED, MIRROR_URL, "probe")
    ]


_SHAPES = [
    (
        "mirror refused, upstream TLS error: the upstream got further",
        'failed to do request: Head "https://m.test/v2/a/manifests/1": dial tcp '
        "10.0.0.1:443: connect: connection refused",
        ("https://m.test/v2", "tcp", Cause.CONNECTION_REFUSED),
        ("https://r.test/v2", "tls", Cause.TLS_ERROR),
        Cause.TLS_ERROR,
        "upstream",
        Cause.CONNECTION_REFUSED,
    ),
    (
        "mirror TLS error, upstream refused: the mirror got further, as the text says",
        'failed to do request: Head "https://m.test/v2/a/manifests/1": x509: certificate '
        "signed by unknown authority",
        ("https://m.test/v2", "tls", Cause.TLS_ERROR),
        ("https://r.test/v2", "tcp", Cause.CONNECTION_REFUSED),
        Cause.TLS_ERROR,
        "mirror",
        None,
    ),
    (
        "both fail at TLS: the runtime's order decides",
        "x509: certificate signed by unknown authority",
        ("https://m.test/v2", "tls", Cause.TLS_ERROR),
        ("https://r.test/v2", "tls", Cause.TLS_ERROR),
        Cause.TLS_ERROR,
        "mirror",
        None,
    ),
    (
        "mirror 401 on the manifest, upstream 404: the content answer is final",
        "pulling from host m.test failed with status code [manifests 1]: 401 Unauthorized",
        ("https://m.test/v2", "manifest", Cause.UNAUTHORIZED),
        ("https://r.test/v2", "manifest", Cause.REPOSITORY_NOT_FOUND),
        Cause.REPOSITORY_NOT_FOUND,
        "upstream",
        Cause.UNAUTHORIZED,
    ),
    (
        "mirror DNS failure, upstream times out at /v2/: an unknown text takes the probes",
        "an unexpected answer",
        ("https://m.test/v2", "dns", Cause.DNS_FAILURE),
        ("https://r.test/v2", "http", Cause.TIMEOUT),
        Cause.TIMEOUT,
        "upstream",
        None,
    ),
    (
        "runtime got further than the probes: its cause stands",
        "pulling from host r.test failed with status code [manifests 1]: 403 Forbidden",
        ("https://m.test/v2", "dns", Cause.DNS_FAILURE),
        ("https://r.test/v2", "tcp", Cause.TIMEOUT),
        Cause.FORBIDDEN,
        None,
        None,
    ),
]


@pytest.mark.parametrize(
    ("shape", "text", "mirror", "upstream", "cause", "decider", "runtime_finding"),
    _SHAPES,
    ids=[shape[0] for shape in _SHAPES],
)
def test_the_endpoint_that_got_furthest_decides(
    shape: str,
    text: str,
    mirror: tuple[str, str, Cause],
    upstream: tuple[str, str, Cause],
    cause: Cause,
    decider: str | None,
    runtime_finding: Cause | None,
) -> None:
    reports = [
        _chain(mirror[0], mirror[1], mirror[2], f"{mirror[1]} failed on m.test", role="mirror"),
        _chain(upstream[0], upstream[1], upstream[2], f"{upstream[1]} failed on r.test"),
    ]
    d = diagnose(image="r.test/a:1", runtime_error=text, grpc_code="UNKNOWN", reports=reports)
    assert d is not None and d.cause is cause, shape
    by_role = {"mirror": reports[0], "upstream": reports[1]}
    if decider is not None:
        assert d.summary == by_role[decider].summary
    others = [r for role, r in by_role.items() if role != decider]
    assert [(f.cause, f.endpoint) for f in d.findings if f.source == "probe"] == [
        (r.cause, r.endpoint.url) for r in others
    ]
    runtime = [f.cause for f in d.findings if f.source == "runtime"]
    assert runtime == ([runtime_finding] if runtime_finding else [])


def test_causes_only_the_runtime_sees_keep_its_classification() -> None:
    text = _case("invalid tar")["text"]
    reports = [_dead_mirror(), _chain("http://r.test/v2", "manifest", None)]
    d = diagnose(image=R, runtime_error=text, grpc_code="UNKNOWN", reports=reports)
    assert d is not None and d.cause is Cause.LAYER_CORRUPT and "cannot be unpacked" in d.summary
    assert [(f.cause, f.endpoint) for f in d.findings] == [(Cause.CONNECTION_REFUSED, MIRROR_URL)]


def test_a_working_endpoint_makes_the_others_findings() -> None:
    reports = [_dead_mirror(), _chain("http://r.test/v2", "manifest", None)]
    assert diagnose(image=R, runtime_error=None, grpc_code=None, reports=reports) is None
    assert [(f.cause, f.endpoint, f.source) for f in path_findings(reports)] == [
        (Cause.CONNECTION_REFUSED, MIRROR_URL, "probe")
    ]
    assert path_findings([reports[1]]) == []


# --- the test deadline: one duration, and where it stalls (issue 10) ---------------------------

BLACKHOLE = "https://blackhole.pullcheck.test:15099/v2"
_DURATION = re.compile(r"\d+(?:\.\d+)? ?s\b")


def _stalled() -> EndpointReport:
    report = _chain(
        BLACKHOLE,
        "tls",
        Cause.TIMEOUT,
        "TLS handshake with blackhole.pullcheck.test:15099 (127.0.0.1) timed out after 3.2 s",
    )
    tcp = report.probes[1]
    report.probes[1] = tcp.model_copy(
        update={"evidence": TcpEvidence(address="127.0.0.1", port=15099, family="ipv4")}
    )
    report.probes[2] = report.probes[2].model_copy(
        update={"target": "blackhole.pullcheck.test:15099"}
    )
    return report


def test_deadline_summary_names_one_duration_and_where_the_path_stalls() -> None:
    d = diagnose(
        image="blackhole.pullcheck.test:15099/pullcheck/good:1.0",
        runtime_error="Deadline Exceeded",
        grpc_code="DEADLINE_EXCEEDED",
        reports=[_stalled()],
        deadline=4.0,
    )
    assert d is not None and d.cause is Cause.TIMEOUT
    assert d.summary == (
        "the pull did not finish within the 4 s deadline; the registry path stalls at the TLS "
        "handshake with blackhole.pullcheck.test:15099 (127.0.0.1), which does not answer"
    )
    assert len(_DURATION.findall(d.summary)) == 1
    assert "blackhole.pullcheck.test:15099" in d.remedy and d.findings == []


def test_deadline_with_every_endpoint_answering_blames_the_transfer() -> None:
    d = diagnose(
        image=R,
        runtime_error="Deadline Exceeded",
        grpc_code="DEADLINE_EXCEEDED",
        reports=[_chain("https://r.test/v2", "manifest", None)],
        deadline=300,
    )
    assert d is not None and d.cause is Cause.TIMEOUT
    assert d.summary == (
        "the pull did not finish within the 300 s deadline; every endpoint answered the probes "
        "up to the manifest, so the pull stalled or crawled in the layer download (the blobs)"
    )
    assert "--timeout" in d.remedy and "blob storage" in d.remedy


def test_a_runtime_that_went_away_mid_pull_is_said_so_with_a_remedy() -> None:
    d = diagnose(
        image=R,
        runtime_error="Socket closed",
        grpc_code="UNAVAILABLE",
        reports=[_chain("https://r.test/v2", "manifest", None)],
    )
    assert d is not None and d.cause is Cause.RUNTIME_UNAVAILABLE
    assert d.summary.startswith("the container runtime went away in the middle of the call")
    assert d.summary.endswith(": Socket closed")
    assert "journalctl -u containerd" in d.remedy and "start containerd" not in d.remedy


def test_a_transfer_broken_by_a_registry_that_now_refuses_says_the_registry_went_down() -> None:
    text = (
        'failed to pull and unpack image "r.test/a:1": failed to copy: httpReadSeeker: failed '
        'open: failed to do request: Get "http://r.test/v2/a/blobs/sha256:0a": EOF'
    )
    refused = _chain("http://r.test/v2", "tcp", Cause.CONNECTION_REFUSED, "TCP connect refused")
    d = diagnose(image="r.test/a:1", runtime_error=text, grpc_code="UNKNOWN", reports=[refused])
    assert d is not None and d.cause is Cause.CONNECTION_RESET
    assert d.summary.endswith("; http://r.test/v2 now refuses connections: the registry went down")
    assert d.remedy.startswith("Registry r.test stopped listening during the pull")
    answering = _chain("http://r.test/v2", "manifest", None)
    d = diagnose(image="r.test/a:1", runtime_error=text, grpc_code="UNKNOWN", reports=[answering])
    assert d is not None and d.cause is Cause.CONNECTION_RESET
    assert "went down" not in d.summary and "stopped listening" not in d.remedy


# --- registry server errors get a remedy that says what to check (issue 10) --------------------

POLICY = "http://policy.pullcheck.test:15080/v2"
BROKEN_URL = f"{POLICY}/broken/app/manifests/1.0"


def test_http_500_from_the_registry_gets_a_specific_remedy() -> None:
    text = (
        'failed to pull and unpack image "policy.pullcheck.test:15080/broken/app:1.0": failed to '
        'resolve reference "policy.pullcheck.test:15080/broken/app:1.0": pulling from host '
        "policy.pullcheck.test:15080 failed with status code [manifests 1.0]: 500 Internal "
        "Server Error"
    )
    report = _chain(  # what the manifest probe reports for a 5xx
        POLICY,
        "manifest",
        Cause.REGISTRY_ERROR,
        f"HEAD {BROKEN_URL} → 500 Internal Server Error",
        evidence={"kind": "manifest", "url": BROKEN_URL, "status": 500},
    )
    report = EndpointReport.model_validate(report.model_dump())  # evidence as its model
    d = diagnose(
        image="policy.pullcheck.test:15080/broken/app:1.0",
        runtime_error=text,
        grpc_code="UNKNOWN",
        reports=[report],
    )
    assert d is not None and d.cause is Cause.REGISTRY_ERROR
    assert "500 Internal Server Error" in d.summary
    assert d.remedy.startswith(
        f"Registry policy.pullcheck.test:15080 is failing on its side (HTTP 500 to HEAD "
        f"{BROKEN_URL}): check the registry's health and logs, its storage backend"
    )
    assert "proxy" in d.remedy and "retry later" in d.remedy
    assert d.findings == []


def test_http_503_in_the_runtime_text_alone_is_named() -> None:
    text = (
        'failed to pull and unpack image "r.test/a:1": failed to copy: httpReadSeeker: failed '
        "open: unexpected status code https://r.test/v2/a/blobs/sha256:abc: 503 Service "
        "Unavailable"
    )
    d = diagnose(image="r.test/a:1", runtime_error=text, grpc_code="UNKNOWN", reports=[])
    assert d is not None and d.cause is Cause.REGISTRY_ERROR
    assert d.fragment.endswith("503 Service Unavailable")
    assert d.summary.startswith("r.test answered HTTP 503 Service Unavailable, a server-side error")
    assert "HTTP 503 Service Unavailable" in d.remedy and "storage backend" in d.remedy
    generic = diagnose(image=R, runtime_error="odd answer", grpc_code="UNKNOWN", reports=[])
    assert generic is not None and "storage backend" not in generic.remedy


def test_mismatch_remedy_follows_the_direction() -> None:
    tls_on_http = _chain("http://127.0.0.1:15443/v2", "http", Cause.HTTP_HTTPS_MISMATCH)
    text = remedy(Cause.HTTP_HTTPS_MISMATCH, tls_on_http, "127.0.0.1:15443/a:1")
    assert "speaks TLS but the runtime uses plain HTTP" in text
    assert 'server = "https://127.0.0.1:15443"' in text
    http_on_tls = _chain("https://r.test:5000/v2", "tls", Cause.HTTP_HTTPS_MISMATCH)
    text = remedy(Cause.HTTP_HTTPS_MISMATCH, http_on_tls, "r.test:5000/a:1")
    assert 'server = "http://r.test:5000"' in text


@pytest.mark.parametrize(
    ("image", "host", "where"),
    [
        ("[::1]:5000/team/app:1", "[::1]", "[::1]:5000"),
        ("localhost:5000/team/app:1", "localhost", "localhost:5000"),
        ("quay.io/team/app:1", "quay.io", "quay.io"),
    ],
)
def test_remedy_without_evidence_names_the_registry_host_and_port(
    image: str, host: str, where: str
) -> None:
    assert f"cannot resolve {host}:" in remedy(Cause.DNS_FAILURE, None, image)
    assert f"connections on {where} from" in remedy(Cause.CONNECTION_REFUSED, None, image)
