"""The classifier over a corpus of real runtime error texts, per containerd version and CRI-O.

Texts come from ../shared/reference/cri-kubelet-registry-facts.md §4.1/§4.2 (containerd source per
tag and issue threads) and from the lab (lab/OBSERVED.md, containerd 1.6.20).
"""

from __future__ import annotations

import pytest

from agent.diagnosis import classify_error, diagnose, remedy, sanitize_error
from agent.models import Cause, Endpoint, EndpointReport

R = "docker.io/library/nginx:1.99"
H = "https://registry-1.docker.io/v2/library/nginx/manifests/1.99"
DENIED = "pull access denied, repository does not exist or may require authorization"

# (label, text, grpc code name or None, expected cause)
CORPUS: list[tuple[str, str, str | None, Cause]] = [
    # --- manifest / tag not found ------------------------------------------------------------
    ("1.6/1.7 not found", f'failed to pull and unpack image "{R}": failed to resolve reference '
     f'"{R}": {R}: not found', "NOT_FOUND", Cause.MANIFEST_NOT_FOUND),
    ("kubelet<1.28 not found", f'rpc error: code = NotFound desc = failed to pull and unpack image '
     f'"{R}": failed to resolve reference "{R}": {R}: not found', None, Cause.MANIFEST_NOT_FOUND),
    ("2.1+ transfer not found", f'failed to pull and unpack image "{R}": failed to resolve image: '
     f"{R}: not found", "NOT_FOUND", Cause.MANIFEST_NOT_FOUND),
    ("cri-o manifest unknown", f"initializing source docker://{R}: reading manifest 1.99 in "
     "docker.io/library/nginx: manifest unknown", None, Cause.MANIFEST_NOT_FOUND),
    ("cri-o name unknown", "initializing source docker://quay.io/acme/nope:1: reading manifest 1 "
     "in quay.io/acme/nope: name unknown: repository name not known to registry", None,
     Cause.REPOSITORY_NOT_FOUND),
    # --- unauthorized ----------------------------------------------------------------------------
    ("1.4/1.5 401", f'failed to pull and unpack image "{R}": failed to resolve reference "{R}": '
     "unexpected status code [manifests 1.99]: 401 Unauthorized", None, Cause.UNAUTHORIZED),
    ("1.6.0 401", f'failed to pull and unpack image "{R}": failed to resolve reference "{R}": '
     "pulling from host registry-1.docker.io failed with status code [manifests 1.99]: "
     "401 Unauthorized", None, Cause.UNAUTHORIZED),
    ("1.7 oauth 401", f'failed to pull and unpack image "{R}": failed to resolve reference "{R}": '
     "failed to authorize: failed to fetch oauth token: unexpected status from GET request to "
     "https://auth.docker.io/token?scope=repository%3Alibrary%2Fnginx%3Apull&service="
     "registry.docker.io: 401 Unauthorized", None, Cause.UNAUTHORIZED),
    ("anonymous token 401", f'failed to pull and unpack image "{R}": failed to resolve reference '
     f'"{R}": failed to authorize: failed to fetch anonymous token: unexpected status from GET '
     "request to https://auth.example.com/token: 401 Unauthorized", None, Cause.UNAUTHORIZED),
    ("older token 401", f'failed to pull and unpack image "{R}": failed to resolve reference '
     f'"{R}": failed to authorize: failed to fetch anonymous token: unexpected status: '
     "401 Unauthorized", None, Cause.UNAUTHORIZED),
    ("basic no creds", 'failed to pull and unpack image "auth.example.com/a/b:1": failed to '
     f'resolve reference "auth.example.com/a/b:1": {DENIED}: authorization failed: no basic '
     "auth credentials", None, Cause.UNAUTHORIZED),
    ("hub insufficient scope", f'failed to pull and unpack image "{R}": failed to resolve '
     f'reference "{R}": {DENIED}: server message: insufficient_scope: authorization failed',
     None, Cause.UNAUTHORIZED),
    ("2.1 transfer oauth", f'failed to pull and unpack image "{R}": failed to resolve image: '
     "failed to authorize: failed to fetch oauth token: unexpected status from GET request to "
     "https://example.com/token: 401 UNAUTHORIZED", None, Cause.UNAUTHORIZED),
    ("plain 401 HEAD", f'failed to pull and unpack image "{R}": failed to resolve reference '
     f'"{R}": unexpected status from HEAD request to {H}: 401 Unauthorized', None,
     Cause.UNAUTHORIZED),
    ("cri-o unauthorized", f"initializing source docker://{R}: reading manifest 1.99 in "
     "docker.io/library/nginx: unauthorized: authentication required", None, Cause.UNAUTHORIZED),
    # --- forbidden -------------------------------------------------------------------------------
    ("1.7 403 HEAD", f'failed to pull and unpack image "{R}": failed to resolve reference "{R}": '
     f"unexpected status from HEAD request to {H}: 403 Forbidden", None, Cause.FORBIDDEN),
    ("1.x fetch 403", f'failed to pull and unpack image "{R}": failed to copy: httpReadSeeker: '
     "failed open: unexpected status code https://r.example.com/v2/a/blobs/sha256:abc: "
     "403 Forbidden - Server message: denied: access forbidden", None, Cause.FORBIDDEN),
    ("repo named denied", 'failed to pull and unpack image "r.example.com/denied/x509:1": failed '
     'to resolve reference "r.example.com/denied/x509:1": r.example.com/denied/x509:1: not found',
     "NOT_FOUND", Cause.MANIFEST_NOT_FOUND),
    # --- rate limit ------------------------------------------------------------------------------
    ("1.x fetch 429", f'failed to pull and unpack image "{R}": failed to copy: httpReadSeeker: '
     "failed open: unexpected status code https://registry-1.docker.io/v2/library/nginx/"
     "manifests/sha256:0123: 429 Too Many Requests - Server message: toomanyrequests: You have "
     "reached your pull rate limit. You may increase the limit by authenticating and upgrading: "
     "https://www.docker.com/increase-rate-limit", None, Cause.RATE_LIMITED),
    ("resolve 429", f'failed to pull and unpack image "{R}": failed to resolve reference "{R}": '
     f"unexpected status from HEAD request to {H}: 429 Too Many Requests", None,
     Cause.RATE_LIMITED),
    ("2.2 GET 429", f'failed to pull and unpack image "{R}": failed to resolve image: unexpected '
     f"status from GET request to {H}: 429 Too Many Requests\ntoomanyrequests: You have reached "
     "your unauthenticated pull rate limit.", None, Cause.RATE_LIMITED),
    # --- DNS ---------------------------------------------------------------------------------------
    ("go resolver nxdomain", f'failed to pull and unpack image "{R}": failed to resolve reference '
     f'"{R}": failed to do request: Head "{H}": dial tcp: lookup registry-1.docker.io on '
     "10.96.0.10:53: no such host", None, Cause.DNS_FAILURE),
    ("lookup no server", f'failed to pull and unpack image "{R}": failed to resolve reference '
     f'"{R}": failed to do request: Head "{H}": dial tcp: lookup registry-1.docker.io: no such '
     "host", None, Cause.DNS_FAILURE),
    ("servfail", f'failed to do request: Head "{H}": dial tcp: lookup registry-1.docker.io on '
     "127.0.0.53:53: server misbehaving", None, Cause.DNS_FAILURE),
    ("cgo resolver", f'failed to do request: Head "{H}": dial tcp: lookup registry-1.docker.io: '
     "Temporary failure in name resolution", None, Cause.DNS_FAILURE),
    ("dns timeout", f'failed to do request: Head "{H}": dial tcp: lookup registry-1.docker.io on '
     "10.96.0.10:53: read udp 10.0.0.4:41234->10.96.0.10:53: i/o timeout", None,
     Cause.DNS_FAILURE),
    ("cri-o dns", "pinging container registry registry.example.com: Get "
     '"https://registry.example.com/v2/": dial tcp: lookup registry.example.com: no such host',
     None, Cause.DNS_FAILURE),
    # --- connection refused / timeout -----------------------------------------------------------
    ("refused", f'failed to pull and unpack image "{R}": failed to resolve reference "{R}": '
     f'failed to do request: Head "{H}": dial tcp 10.0.0.5:443: connect: connection refused',
     None, Cause.CONNECTION_REFUSED),
    ("no route", f'failed to do request: Head "{H}": dial tcp 10.0.0.5:443: connect: no route to '
     "host", None, Cause.CONNECTION_REFUSED),
    ("dial timeout", f'failed to do request: Head "{H}": dial tcp 10.0.0.5:443: i/o timeout', None,
     Cause.TIMEOUT),
    ("kernel timeout", f'failed to do request: Head "{H}": dial tcp 10.0.0.5:443: connect: '
     "connection timed out", None, Cause.TIMEOUT),
    ("tls handshake timeout", f'failed to do request: Head "{H}": net/http: TLS handshake timeout',
     None, Cause.TIMEOUT),
    ("header timeout", f'failed to do request: Head "{H}": net/http: timeout awaiting response '
     "headers", None, Cause.TIMEOUT),
    ("client timeout", f'failed to do request: Head "{H}": context deadline exceeded '
     "(Client.Timeout exceeded while awaiting headers)", None, Cause.TIMEOUT),
    ("our deadline", "Deadline Exceeded", "DEADLINE_EXCEEDED", Cause.TIMEOUT),
    # --- TLS and HTTP/HTTPS ----------------------------------------------------------------------
    ("go1.20 x509", f'failed to pull and unpack image "{R}": failed to resolve reference "{R}": '
     f'failed to do request: Head "{H}": tls: failed to verify certificate: x509: certificate '
     "signed by unknown authority", None, Cause.TLS_ERROR),
    ("old x509", f'failed to do request: Head "{H}": x509: certificate signed by unknown '
     "authority", None, Cause.TLS_ERROR),
    ("expired", f'failed to do request: Head "{H}": x509: certificate has expired or is not yet '
     "valid: current time 2026-01-01T00:00:00Z is after 2025-01-01T00:00:00Z", None,
     Cause.TLS_ERROR),
    ("wrong name", f'failed to do request: Head "{H}": x509: certificate is valid for a.example, '
     "b.example, not registry-1.docker.io", None, Cause.TLS_ERROR),
    ("http to https", 'failed to pull and unpack image "r.example:5000/a:1": failed to resolve '
     'reference "r.example:5000/a:1": failed to do request: Head "https://r.example:5000/v2/a/'
     'manifests/1": http: server gave HTTP response to HTTPS client', None,
     Cause.HTTP_HTTPS_MISMATCH),
    ("tls record", 'failed to do request: Head "https://r.example:5000/v2/a/manifests/1": tls: '
     "first record does not look like a TLS handshake", None, Cause.HTTP_HTTPS_MISMATCH),
    # --- unpack, platform, blobs, disk -------------------------------------------------------------
    ("invalid tar", f'failed to pull and unpack image "{R}": failed to extract layer sha256:'
     "0f3a: mount callback failed on /var/lib/containerd/tmpmounts/containerd-mount123: "
     "archive/tar: invalid tar header: unknown", None, Cause.LAYER_CORRUPT),
    ("old unpack prefix", f'failed to pull and unpack image "{R}": failed to unpack image on '
     "snapshotter overlayfs: failed to extract layer sha256:0f3a: archive/tar: invalid tar header"
     ": unknown", None, Cause.LAYER_CORRUPT),
    ("2.x unpack", f'failed to pull and unpack image "{R}": failed to extract layer (application/'
     'vnd.oci.image.layer.v1.tar+gzip sha256:0f3a) to overlayfs as "extract-1-abc": gzip: '
     "invalid header", None, Cause.LAYER_CORRUPT),
    ("digest mismatch", f'failed to pull and unpack image "{R}": failed commit on ref '
     '"layer-sha256:0f3a": unexpected commit digest sha256:1111, expected sha256:0f3a: failed '
     "precondition", None, Cause.LAYER_CORRUPT),
    ("platform", f'failed to pull and unpack image "{R}": no match for platform in manifest: not '
     "found", "NOT_FOUND", Cause.PLATFORM_MISMATCH),
    ("cri-o platform", f"choosing an image from manifest list docker://{R}: no image found in "
     'manifest list for architecture arm64, variant "v8", OS linux', None,
     Cause.PLATFORM_MISMATCH),
    ("blob 404", f'failed to pull and unpack image "{R}": failed to copy: httpReadSeeker: failed '
     "open: content at https://r.example/v2/a/blobs/sha256:0f3a not found: not found",
     "NOT_FOUND", Cause.BLOB_NOT_FOUND),
    ("cri-o blob", "reading blob sha256:0f3a: fetching blob: blob unknown to registry", None,
     Cause.BLOB_NOT_FOUND),
    ("disk full", f'failed to pull and unpack image "{R}": failed to copy: failed to send write: '
     "write /var/lib/containerd/io.containerd.content.v1.content/ingest/abc/data: no space left "
     "on device: unknown", None, Cause.DISK_FULL),
    ("disk full unpack", f'failed to pull and unpack image "{R}": failed to extract layer '
     "sha256:0f3a: write /var/lib/containerd/x: no space left on device: unknown", None,
     Cause.DISK_FULL),
    # --- runtime, cancel, invalid --------------------------------------------------------------
    ("cancelled", f'rpc error: code = Canceled desc = failed to pull and unpack image "{R}": '
     'failed to copy: httpReadSeeker: failed open: failed to do request: Get "https://r.example/'
     'v2/a/blobs/sha256:0f3a": context canceled', "CANCELLED", Cause.CANCELLED),
    ("no progress", f'failed to pull and unpack image "{R}": context canceled', "CANCELLED",
     Cause.CANCELLED),
    ("invalid ref", 'failed to parse image reference "Nginx": invalid reference format: '
     "repository name (library/Nginx) must be lowercase", None, Cause.INVALID_REFERENCE),
    ("no cri", "unknown service runtime.v1.ImageService", "UNIMPLEMENTED",
     Cause.RUNTIME_UNAVAILABLE),
    ("socket gone", "failed to connect to all addresses; last error: UNAVAILABLE: "
     "unix:/run/containerd/containerd.sock: No such file or directory", "UNAVAILABLE",
     Cause.RUNTIME_UNAVAILABLE),
    # --- unknown -----------------------------------------------------------------------------------
    ("500", f'failed to pull and unpack image "{R}": failed to resolve reference "{R}": '
     f"unexpected status from HEAD request to {H}: 500 Internal Server Error", None, Cause.UNKNOWN),
    ("mirror 400", 'failed to pull and unpack image "docker.io/library/a:1": failed to resolve '
     'reference "docker.io/library/a:1": unexpected status from HEAD request to https://mirror.'
     "example/v2/library/a/manifests/1?ns=docker.io: 400 Bad Request", None, Cause.UNKNOWN),
]


@pytest.mark.parametrize(("text", "code", "expected"), [c[1:] for c in CORPUS],
                         ids=[c[0] for c in CORPUS])
def test_classify_corpus(text: str, code: str | None, expected: Cause) -> None:
    assert classify_error(text, code) is expected


def test_every_cause_is_reachable_from_text_or_code() -> None:
    covered = {c[3] for c in CORPUS}
    assert covered == set(Cause), set(Cause) - covered


def _report(host: str, cause: Cause | None, summary: str = "", *, ok: bool = False,
            role: str = "upstream") -> EndpointReport:
    ep = Endpoint(url=f"https://{host}", scheme="https", host=host, port=443, role=role)  # type: ignore[arg-type]
    return EndpointReport(endpoint=ep, success=ok, cause=cause, summary=summary)


def test_probe_settles_pull_access_denied_as_missing_repository() -> None:
    text = (f'failed to pull and unpack image "{R}": failed to resolve reference "{R}": {DENIED}:'
            " server message: insufficient_scope: authorization failed")
    missing = _report("r.example", Cause.REPOSITORY_NOT_FOUND, "GET tags/list → 404 NAME_UNKNOWN")
    d = diagnose(image=R, runtime_error=text, grpc_code="UNKNOWN", reports=[missing])
    assert d is not None and d.cause is Cause.REPOSITORY_NOT_FOUND
    assert d.summary == "GET tags/list → 404 NAME_UNKNOWN"
    denied = _report("r.example", Cause.UNAUTHORIZED, "HEAD → 401")
    d = diagnose(image=R, runtime_error=text, grpc_code="UNKNOWN", reports=[denied])
    assert d is not None and d.cause is Cause.UNAUTHORIZED


def test_probe_settles_not_found_as_missing_repository() -> None:
    text = f'failed to pull and unpack image "{R}": failed to resolve reference "{R}": {R}: not found'
    d = diagnose(image=R, runtime_error=text, grpc_code="NOT_FOUND",
                 reports=[_report("r.example", Cause.REPOSITORY_NOT_FOUND, "repo missing")])
    assert d is not None and d.cause is Cause.REPOSITORY_NOT_FOUND


def test_unknown_text_takes_probe_cause_and_names_endpoint() -> None:
    reports = [_report("m.example", Cause.MANIFEST_NOT_FOUND, "404", role="mirror"),
               _report("r.example", Cause.CONNECTION_REFUSED, "TCP connect to r.example:443 refused")]
    d = diagnose(image=R, runtime_error="unexpected EOF", grpc_code="UNKNOWN", reports=reports)
    assert d is not None and d.cause is Cause.CONNECTION_REFUSED
    assert "r.example:443" in d.summary and "r.example:443" in d.remedy


def test_resolve_mode_success_when_any_endpoint_succeeds() -> None:
    reports = [_report("m.example", Cause.CONNECTION_REFUSED, role="mirror"),
               _report("r.example", None, ok=True)]
    assert diagnose(image=R, runtime_error=None, grpc_code=None, reports=reports) is None
    d = diagnose(image=R, runtime_error=None, grpc_code=None, reports=reports[:1])
    assert d is not None and d.cause is Cause.CONNECTION_REFUSED


def test_sanitize_removes_secrets() -> None:
    text = ('Get "https://bob:hunter2secret@r.example/token?account=bob&password=hunter2secret": '
            "Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.payload.sig")
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
