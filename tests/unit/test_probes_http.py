"""HTTP (/v2/), token and manifest probes and the endpoint chain, against real fake registries."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.credentials import Credential
from agent.models import (
    Cause,
    EndpointReport,
    HttpEvidence,
    ManifestEvidence,
    ProbeResult,
    TokenEvidence,
)
from agent.probes import (
    MANIFEST_ACCEPT,
    RegistryProbe,
    probe_endpoint,
    probe_http,
    probe_manifest,
    probe_token,
)
from tests.unit.test_probes_support import (
    BAD,
    GOOD,
    MANIFEST_TYPE,
    PASSWORD,
    USER,
    Pki,
    RegistryConfig,
    RegistryHandler,
    RunningServer,
    blackhole,
    endpoint,
    forbid_system_resolver,  # noqa: F401  (fixture)
    make_ctx,
    make_pki,
    manifest_bytes,
    refused_port,
    server_ssl_context,
    start_registry,
)

pytestmark = pytest.mark.usefixtures("forbid_system_resolver")

REG = "registry.pullcheck.test"
AUTH = "auth.pullcheck.test"
HOSTS = {REG: "127.0.0.1", AUTH: "127.0.0.1", "mirror.pullcheck.test": "127.0.0.1"}
REPOS = {
    "pullcheck/good": {"1.0": manifest_bytes("1.0")},
    "pullcheck/private": {"1.0": manifest_bytes("private")},
}
RATE_BODY = (
    b'{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}]}'
)


def _rate_limited(handler: RegistryHandler) -> tuple[int, dict[str, str], bytes]:
    headers = {
        "Content-Type": "application/json",
        "ratelimit-limit": "100;w=21600",
        "ratelimit-remaining": "0;w=21600",
        "docker-ratelimit-source": "192.0.2.1",
    }
    return 429, headers, RATE_BODY


def _denied(handler: RegistryHandler) -> tuple[int, dict[str, str], bytes]:
    return 403, {}, b'{"errors":[{"code":"DENIED","message":"requested access is denied"}]}'


def _broken(handler: RegistryHandler) -> tuple[int, dict[str, str], bytes]:
    return 500, {}, b'{"errors":[{"code":"UNKNOWN","message":"boom"}]}'


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def plain() -> Iterator[RunningServer]:
    config = RegistryConfig(
        repos=dict(REPOS),
        routes={
            "/v2/ratelimited/": _rate_limited,
            "/v2/denied/": _denied,
            "/v2/broken/": _broken,
        },
    )
    server = start_registry(config)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def basic(pki: Pki) -> Iterator[RunningServer]:
    config = RegistryConfig(auth="basic", users={USER: PASSWORD}, repos=dict(REPOS))
    server = start_registry(config, tls=server_ssl_context(pki.cert_file, pki.key_file))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bearer(pki: Pki) -> Iterator[tuple[RunningServer, RunningServer]]:
    """A Bearer registry (TLS) and its token server on another port (TLS), sharing state."""
    config = RegistryConfig(
        auth="bearer", users={USER: PASSWORD}, repos=dict(REPOS), private={"pullcheck/private"}
    )
    tls = server_ssl_context(pki.cert_file, pki.key_file)
    token_server = start_registry(config, tls=tls)
    config.realm = f"https://{AUTH}:{token_server.port}/token"
    registry = start_registry(config, tls=tls)
    yield registry, token_server
    registry.stop()
    token_server.stop()


def _ev(result: ProbeResult, kind: type) -> object:
    assert isinstance(result.evidence, kind), result
    return result.evidence


# --- GET /v2/ ----------------------------------------------------------------------------------


async def test_v2_open_registry(tmp_path: Path, plain: RunningServer) -> None:
    ctx = make_ctx(tmp_path, hosts=HOSTS)
    result = await probe_http(endpoint(REG, plain.port), ctx)
    assert result.success and result.probe == "http"
    ev = _ev(result, HttpEvidence)
    assert isinstance(ev, HttpEvidence)
    assert ev.status == 200 and ev.api_version == "registry/2.0" and ev.auth_scheme == ""
    assert ev.url == f"http://{REG}:{plain.port}/v2/"
    assert {p.name for p in result.phases} >= {"connect", "processing"}
    request = plain.config.requests[-1]
    assert request["headers"]["Host"] == f"{REG}:{plain.port}"  # name kept, address connected
    assert request["headers"]["User-Agent"].startswith("pullcheck/")


async def test_v2_challenge_parsed(
    tmp_path: Path, pki: Pki, bearer: tuple[RunningServer, RunningServer]
) -> None:
    registry, token_server = bearer
    ctx = make_ctx(tmp_path, hosts=HOSTS)
    ep = endpoint(REG, registry.port, "https", ca_files=[str(pki.ca_file)])
    result = await probe_http(ep, ctx)
    ev = _ev(result, HttpEvidence)
    assert isinstance(ev, HttpEvidence)
    assert result.success and ev.status == 401 and ev.auth_scheme == "Bearer"
    assert ev.realm == f"https://{AUTH}:{token_server.port}/token" and ev.service == "fake-registry"
    assert ev.error_codes == ["UNAUTHORIZED"]
    assert ctx.state.challenge is not None and ctx.state.challenge.is_bearer


async def test_v2_not_a_registry(tmp_path: Path) -> None:
    server = start_registry(RegistryConfig(v2_status=404))
    try:
        result = await probe_http(endpoint(REG, server.port), make_ctx(tmp_path, hosts=HOSTS))
    finally:
        server.stop()
    assert result.cause == Cause.UNKNOWN
    assert (
        result.error == f"GET http://{REG}:{server.port}/v2/ → 404 Not Found: not a registry v2 API"
    )


async def test_http_endpoint_on_tls_server_is_mismatch(
    tmp_path: Path, basic: RunningServer
) -> None:
    result = await probe_http(endpoint(REG, basic.port), make_ctx(tmp_path, hosts=HOSTS))
    assert result.cause == Cause.HTTP_HTTPS_MISMATCH, result.error
    assert "http:// but the server speaks TLS" in result.error


async def test_https_endpoint_on_plain_server(tmp_path: Path, plain: RunningServer) -> None:
    result = await probe_http(endpoint(REG, plain.port, "https"), make_ctx(tmp_path, hosts=HOSTS))
    assert result.cause == Cause.HTTP_HTTPS_MISMATCH, result.error


async def test_http_read_timeout(tmp_path: Path) -> None:
    port, close = blackhole()
    try:
        ctx = make_ctx(tmp_path, hosts={"blackhole.pullcheck.test": "127.0.0.1"}, timeout=0.3)
        result = await probe_http(endpoint("blackhole.pullcheck.test", port), ctx)
    finally:
        close()
    assert result.cause == Cause.TIMEOUT
    assert result.error == (
        f"GET http://blackhole.pullcheck.test:{port}/v2/ (127.0.0.1): "
        "timed out awaiting response after 0.3 s"
    )
    assert any(not p.ok and p.name == "processing" for p in result.phases)


async def test_http_refused(tmp_path: Path) -> None:
    port = refused_port()
    result = await probe_http(endpoint(REG, port), make_ctx(tmp_path, hosts=HOSTS))
    assert result.cause == Cause.CONNECTION_REFUSED


# --- manifest on an open registry --------------------------------------------------------------


async def test_manifest_found(tmp_path: Path, plain: RunningServer) -> None:
    ctx = make_ctx(tmp_path, hosts=HOSTS, repository="pullcheck/good", tag_or_digest="1.0")
    report = await probe_endpoint(endpoint(REG, plain.port), ctx)
    assert report.success, report.summary
    assert [p.probe for p in report.probes] == ["dns", "tcp", "http", "manifest"]
    ev = _ev(report.probes[-1], ManifestEvidence)
    assert isinstance(ev, ManifestEvidence)
    assert ev.status == 200 and ev.method == "HEAD" and ev.digest.startswith("sha256:")
    assert ev.media_type == MANIFEST_TYPE and ev.content_length == len(manifest_bytes("1.0"))
    head = next(r for r in plain.config.requests if r["method"] == "HEAD")
    assert head["headers"]["Accept"] == MANIFEST_ACCEPT
    assert MANIFEST_ACCEPT == (
        "application/vnd.docker.distribution.manifest.v2+json, "
        "application/vnd.docker.distribution.manifest.list.v2+json, "
        "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*"
    )
    assert report.summary.startswith(f"http://{REG}:{plain.port} (127.0.0.1) reachable")
    assert ev.digest in report.summary


async def test_manifest_not_found_vs_repository_not_found(
    tmp_path: Path, plain: RunningServer
) -> None:
    ctx = make_ctx(tmp_path, hosts=HOSTS, repository="pullcheck/good", tag_or_digest="9.9")
    missing_tag = await probe_manifest(endpoint(REG, plain.port), ctx)
    assert missing_tag.cause == Cause.MANIFEST_NOT_FOUND
    ev = _ev(missing_tag, ManifestEvidence)
    assert isinstance(ev, ManifestEvidence) and ev.repository_exists is True
    assert missing_tag.error.endswith("→ 404 Not Found: 9.9 not found in repository pullcheck/good")

    ctx = make_ctx(tmp_path, hosts=HOSTS, repository="pullcheck/nothere", tag_or_digest="1.0")
    missing_repo = await probe_manifest(endpoint(REG, plain.port), ctx)
    assert missing_repo.cause == Cause.REPOSITORY_NOT_FOUND
    ev = _ev(missing_repo, ManifestEvidence)
    assert isinstance(ev, ManifestEvidence)
    assert ev.repository_exists is False and "NAME_UNKNOWN" in ev.error_codes


async def test_rate_limited(tmp_path: Path, plain: RunningServer) -> None:
    ctx = make_ctx(tmp_path, hosts=HOSTS, repository="ratelimited/app", tag_or_digest="1.0")
    report = await probe_endpoint(endpoint(REG, plain.port), ctx)
    assert report.cause == Cause.RATE_LIMITED
    ev = _ev(report.probes[-1], ManifestEvidence)
    assert isinstance(ev, ManifestEvidence)
    assert (ev.ratelimit_limit, ev.ratelimit_remaining, ev.ratelimit_source) == (
        "100;w=21600",
        "0;w=21600",
        "192.0.2.1",
    )
    assert report.summary == (
        f"HEAD http://{REG}:{plain.port}/v2/ratelimited/app/manifests/1.0 → 429 Too Many Requests "
        "(ratelimit-remaining 0;w=21600; ratelimit-limit 100;w=21600)"
    )


async def test_forbidden_reads_codes_with_get(tmp_path: Path, plain: RunningServer) -> None:
    ctx = make_ctx(tmp_path, hosts=HOSTS, repository="denied/app", tag_or_digest="1.0")
    result = await probe_manifest(endpoint(REG, plain.port), ctx)
    assert result.cause == Cause.FORBIDDEN
    assert result.error.endswith("→ 403 Forbidden: denied: requested access is denied")
    ev = _ev(result, ManifestEvidence)
    assert isinstance(ev, ManifestEvidence) and ev.error_codes == ["DENIED"]


async def test_server_error(tmp_path: Path, plain: RunningServer) -> None:
    ctx = make_ctx(tmp_path, hosts=HOSTS, repository="broken/app", tag_or_digest="1.0")
    result = await probe_manifest(endpoint(REG, plain.port), ctx)
    assert result.cause == Cause.REGISTRY_ERROR and "500 Internal Server Error" in result.error


async def test_head_405_retried_as_get(tmp_path: Path) -> None:
    server = start_registry(RegistryConfig(repos=dict(REPOS), head_405=True))
    try:
        ctx = make_ctx(tmp_path, hosts=HOSTS, repository="pullcheck/good", tag_or_digest="1.0")
        result = await probe_manifest(endpoint(REG, server.port), ctx)
    finally:
        server.stop()
    ev = _ev(result, ManifestEvidence)
    assert isinstance(ev, ManifestEvidence)
    assert result.success and ev.method == "GET" and ev.status == 200
    assert [p.name for p in result.phases if not p.name.startswith(("HEAD ", "GET "))] == [
        "HEAD",
        "GET",
    ]


async def test_mirror_sends_ns_and_override_path(tmp_path: Path) -> None:
    def prefixed(handler: RegistryHandler) -> tuple[int, dict[str, str], bytes] | None:
        if handler.path.startswith("/api/pullcheck/good/manifests/1.0"):
            return 200, {"Docker-Content-Digest": "sha256:" + "0" * 64}, b""
        return None

    server = start_registry(RegistryConfig(repos=dict(REPOS), routes={"/api/": prefixed}))
    try:
        ctx = make_ctx(tmp_path, hosts=HOSTS, repository="pullcheck/good", tag_or_digest="1.0")
        mirror = endpoint(
            "mirror.pullcheck.test", server.port, role="mirror", namespace="docker.io"
        )
        assert (await probe_manifest(mirror, ctx)).success
        api = endpoint(
            "mirror.pullcheck.test",
            server.port,
            role="mirror",
            path="/api",
            override_path=True,
            namespace="docker.io",
        )
        assert (await probe_manifest(api, ctx)).success
    finally:
        server.stop()
    heads = [r for r in server.config.requests if r["method"] == "HEAD"]
    assert [h["path"] for h in heads] == [
        "/v2/pullcheck/good/manifests/1.0",
        "/api/pullcheck/good/manifests/1.0",
    ]
    assert all(h["query"] == {"ns": ["docker.io"]} for h in heads)


async def test_capability_without_resolve_skips_manifest(
    tmp_path: Path, plain: RunningServer
) -> None:
    ctx = make_ctx(tmp_path, hosts=HOSTS, repository="pullcheck/good", tag_or_digest="1.0")
    ep = endpoint("mirror.pullcheck.test", plain.port, role="mirror", capabilities=["pull"])
    report = await probe_endpoint(ep, ctx)
    assert report.success and [p.probe for p in report.probes] == ["dns", "tcp", "http"]
    assert "lacks the 'resolve' capability" in report.summary


# --- Basic auth --------------------------------------------------------------------------------


async def test_basic_without_credentials(tmp_path: Path, pki: Pki, basic: RunningServer) -> None:
    ctx = make_ctx(tmp_path, hosts=HOSTS, repository="pullcheck/good", tag_or_digest="1.0")
    report = await probe_endpoint(
        endpoint(REG, basic.port, "https", ca_files=[str(pki.ca_file)]), ctx
    )
    assert report.cause == Cause.UNAUTHORIZED
    assert [p.probe for p in report.probes] == ["dns", "tcp", "tls", "http", "manifest"]
    assert report.summary.endswith("→ 401 Unauthorized (no basic auth credentials)")


async def test_basic_credentials_in_order(tmp_path: Path, pki: Pki, basic: RunningServer) -> None:
    ctx = make_ctx(
        tmp_path,
        hosts=HOSTS,
        repository="pullcheck/good",
        tag_or_digest="1.0",
        credentials=[BAD, GOOD],
    )
    report = await probe_endpoint(
        endpoint(REG, basic.port, "https", ca_files=[str(pki.ca_file)]), ctx
    )
    assert report.success, report.summary
    names = [p.name for p in report.probes[-1].phases]
    assert (
        "HEAD credential 1 (stale-secret)" in names and "HEAD credential 2 (test-secret)" in names
    )


async def test_basic_wrong_credentials(tmp_path: Path, pki: Pki, basic: RunningServer) -> None:
    ctx = make_ctx(
        tmp_path, hosts=HOSTS, repository="pullcheck/good", tag_or_digest="1.0", credentials=[BAD]
    )
    report = await probe_endpoint(
        endpoint(REG, basic.port, "https", ca_files=[str(pki.ca_file)]), ctx
    )
    assert report.cause == Cause.UNAUTHORIZED and "1 credential(s) refused" in report.summary


# --- Bearer tokens -----------------------------------------------------------------------------


def _bearer_ep(pki: Pki, registry: RunningServer) -> object:
    return endpoint(REG, registry.port, "https", ca_files=[str(pki.ca_file)])


async def test_bearer_anonymous_public(
    tmp_path: Path, pki: Pki, bearer: tuple[RunningServer, RunningServer]
) -> None:
    registry, token_server = bearer
    ctx = make_ctx(tmp_path, hosts=HOSTS, repository="pullcheck/good", tag_or_digest="1.0")
    report = await probe_endpoint(
        endpoint(REG, registry.port, "https", ca_files=[str(pki.ca_file)]), ctx
    )
    assert report.success, report.summary
    assert [(p.probe, p.target) for p in report.probes][3:] == [
        ("http", f"https://{REG}:{registry.port}/v2/"),
        ("dns", AUTH),
        ("tcp", f"{AUTH}:{token_server.port}"),
        ("tls", f"{AUTH}:{token_server.port}"),
        ("token", f"https://{AUTH}:{token_server.port}/token"),
        ("manifest", f"https://{REG}:{registry.port}/v2/pullcheck/good/manifests/1.0"),
    ]
    token = _ev(report.probes[-2], TokenEvidence)
    assert isinstance(token, TokenEvidence)
    assert token.status == 200 and not token.authenticated and token.expires_in == 300
    assert token.scope == "repository:pullcheck/good:pull" and token.service == "fake-registry"
    token_request = next(r for r in registry.config.requests if r["path"] == "/token")
    assert token_request["query"] == {
        "scope": ["repository:pullcheck/good:pull"],
        "service": ["fake-registry"],
    }
    assert "token ok" in report.summary


async def test_bearer_private_needs_credentials(
    tmp_path: Path, pki: Pki, bearer: tuple[RunningServer, RunningServer]
) -> None:
    registry, _ = bearer
    ep = endpoint(REG, registry.port, "https", ca_files=[str(pki.ca_file)])
    anon = make_ctx(tmp_path, hosts=HOSTS, repository="pullcheck/private", tag_or_digest="1.0")
    report = await probe_endpoint(ep, anon)
    assert report.cause == Cause.UNAUTHORIZED
    assert "insufficient_scope" in report.summary

    authed = make_ctx(
        tmp_path,
        hosts=HOSTS,
        repository="pullcheck/private",
        tag_or_digest="1.0",
        credentials=[BAD, GOOD],
    )
    report = await probe_endpoint(ep, authed)
    assert report.success, report.summary
    token = next(p for p in report.probes if p.probe == "token")
    ev = _ev(token, TokenEvidence)
    assert isinstance(ev, TokenEvidence)
    assert ev.authenticated and ev.credential_source == "test-secret"
    assert [(p.name, p.ok, p.detail) for p in token.phases if p.name.endswith(")")] == [
        ("token credential 1 (stale-secret)", False, "401 Unauthorized"),
        ("token credential 2 (test-secret)", True, "200 OK"),
    ]


async def test_bearer_bad_credentials(
    tmp_path: Path, pki: Pki, bearer: tuple[RunningServer, RunningServer]
) -> None:
    registry, token_server = bearer
    ctx = make_ctx(
        tmp_path,
        hosts=HOSTS,
        repository="pullcheck/private",
        tag_or_digest="1.0",
        credentials=[BAD],
    )
    report = await probe_endpoint(
        endpoint(REG, registry.port, "https", ca_files=[str(pki.ca_file)]), ctx
    )
    assert report.cause == Cause.UNAUTHORIZED
    assert report.probes[-1].probe == "token"
    assert report.summary == (
        f"GET https://{AUTH}:{token_server.port}/token?scope=repository%3Apullcheck%2Fprivate%3Apull"
        "&service=fake-registry → 401 Unauthorized (credential 1 (stale-secret)): "
        "incorrect username or password"
    )


async def test_identity_token_uses_oauth_post(
    tmp_path: Path, pki: Pki, bearer: tuple[RunningServer, RunningServer]
) -> None:
    registry, _ = bearer
    cred = Credential(identity_token="refresh-ok", source="provider")
    ctx = make_ctx(
        tmp_path,
        hosts=HOSTS,
        repository="pullcheck/private",
        tag_or_digest="1.0",
        credentials=[cred],
    )
    report = await probe_endpoint(
        endpoint(REG, registry.port, "https", ca_files=[str(pki.ca_file)]), ctx
    )
    assert report.success, report.summary
    post = next(r for r in registry.config.requests if r["method"] == "POST")
    assert (
        b"grant_type=refresh_token" in post["body"]
        and b"client_id=containerd-client" in post["body"]
    )


async def test_token_realm_unreachable(tmp_path: Path, pki: Pki) -> None:
    dead = refused_port()
    config = RegistryConfig(auth="bearer", repos=dict(REPOS), realm=f"https://{AUTH}:{dead}/token")
    registry = start_registry(config, tls=server_ssl_context(pki.cert_file, pki.key_file))
    try:
        ctx = make_ctx(tmp_path, hosts=HOSTS, repository="pullcheck/good", tag_or_digest="1.0")
        report = await probe_endpoint(
            endpoint(REG, registry.port, "https", ca_files=[str(pki.ca_file)]), ctx
        )
    finally:
        registry.stop()
    assert report.cause == Cause.CONNECTION_REFUSED
    assert report.summary == (
        f"token realm https://{AUTH}:{dead}/token: TCP connect to {AUTH}:{dead} (127.0.0.1) refused"
    )
    assert [p.probe for p in report.probes][-3:] == ["dns", "tcp", "token"]


async def test_fresh_challenge_on_manifest(tmp_path: Path, pki: Pki) -> None:
    """/v2/ is open but the repository challenges: the manifest probe fetches a token itself."""
    config = RegistryConfig(auth="bearer", repos=dict(REPOS), v2_status=200)
    tls = server_ssl_context(pki.cert_file, pki.key_file)
    registry = start_registry(config, tls=tls)
    config.realm = f"https://{AUTH}:{registry.port}/token"
    try:
        ctx = make_ctx(tmp_path, hosts=HOSTS, repository="pullcheck/good", tag_or_digest="1.0")
        report = await probe_endpoint(
            endpoint(REG, registry.port, "https", ca_files=[str(pki.ca_file)]), ctx
        )
    finally:
        registry.stop()
    assert report.success, report.summary
    assert [p.probe for p in report.probes] == [
        "dns",
        "tcp",
        "tls",
        "http",
        "dns",
        "tcp",
        "tls",
        "manifest",
    ]


async def test_token_skipped_without_bearer(tmp_path: Path) -> None:
    result = await probe_token(endpoint(REG, 5000), make_ctx(tmp_path))
    assert result.success and result.phases[0].name == "skip"


# --- chain-wide properties ---------------------------------------------------------------------


async def test_registry_probe_concurrent_in_order(tmp_path: Path, plain: RunningServer) -> None:
    ctx = make_ctx(tmp_path, hosts=HOSTS, repository="pullcheck/good", tag_or_digest="1.0")
    dead = refused_port()
    reports = await RegistryProbe(
        [endpoint("mirror.pullcheck.test", dead, role="mirror"), endpoint(REG, plain.port)], ctx
    ).run()
    assert [r.success for r in reports] == [False, True]
    assert reports[0].cause == Cause.CONNECTION_REFUSED
    assert reports[0].summary == f"TCP connect to mirror.pullcheck.test:{dead} (127.0.0.1) refused"
    assert ctx.state.addresses is None  # the caller's context is not mutated


async def test_no_secret_anywhere(
    tmp_path: Path,
    pki: Pki,
    bearer: tuple[RunningServer, RunningServer],
    basic: RunningServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    registry, _ = bearer
    reports: list[EndpointReport] = []
    for repo, creds in (
        ("pullcheck/private", [BAD, GOOD]),
        ("pullcheck/private", [BAD]),
        ("pullcheck/nothere", [GOOD]),
    ):
        ctx = make_ctx(
            tmp_path, hosts=HOSTS, repository=repo, tag_or_digest="1.0", credentials=creds
        )
        reports.append(await probe_endpoint(_bearer_ep(pki, registry), ctx))  # type: ignore[arg-type]
        reports.append(
            await probe_endpoint(
                endpoint(REG, basic.port, "https", ca_files=[str(pki.ca_file)]), ctx
            )
        )
    dumped = json.dumps([r.model_dump(mode="json") for r in reports]) + caplog.text
    secrets = [PASSWORD, BAD.password, *registry.config.tokens]
    assert registry.config.tokens  # tokens were issued
    for secret in secrets:
        assert secret not in dumped
    assert "Authorization" not in dumped and "Basic YWxp" not in dumped


async def test_ipv6_literal_endpoint_chain(tmp_path: Path) -> None:
    server = start_registry(RegistryConfig(repos=dict(REPOS)), host="::1")
    try:
        ctx = make_ctx(tmp_path, repository="pullcheck/good", tag_or_digest="1.0")
        report = await probe_endpoint(endpoint("::1", server.port), ctx)
    finally:
        server.stop()
    assert report.success, report.summary
    assert report.summary.startswith(f"http://[::1]:{server.port} (::1) reachable")
    assert server.config.requests[0]["headers"]["Host"] == f"[::1]:{server.port}"


async def test_client_never_resolves_names_itself(tmp_path: Path) -> None:
    from agent.probes._classify import classify
    from agent.probes._transport import open_client

    ctx = make_ctx(tmp_path)  # nothing resolved in ctx.state.host_addresses
    async with open_client(endpoint("x.pullcheck.test", 80), ctx) as client:
        with pytest.raises(Exception) as info:
            await client.get("http://x.pullcheck.test/v2/")
    assert classify(info.value) == (
        Cause.DNS_FAILURE,
        "x.pullcheck.test was not resolved by the DNS probe (the system resolver is never used)",
    )


@pytest.mark.parametrize(
    ("leaf", "verified"),
    [("name_only", True), ("ip_only", False)],
    ids=["cert-for-the-name", "cert-for-the-address-only"],
)
async def test_https_request_goes_to_the_address_but_verifies_the_name(
    tmp_path: Path, pki: Pki, leaf: str, verified: bool
) -> None:
    """The request connects to the resolved address; SNI, Host and the certificate check are
    the registry's NAME, never the address (a certificate for 127.0.0.1 alone must fail)."""
    cert, key = (getattr(pki, f"{leaf}_{part}_file") for part in ("cert", "key"))
    server_names: list[str | None] = []
    tls = server_ssl_context(cert, key)
    tls.sni_callback = lambda _sock, name, _ctx: server_names.append(name)
    server = start_registry(RegistryConfig(), tls=tls)
    try:
        ctx = make_ctx(tmp_path, hosts=HOSTS)
        ep = endpoint(REG, server.port, "https", ca_files=[str(pki.ca_file)])
        result = await probe_http(ep, ctx)  # run alone: the DNS probe resolves REG first
    finally:
        server.stop()
    assert ctx.state.host_addresses == {REG: "127.0.0.1"}
    assert server_names == [REG]  # SNI: the name, not the address connected to
    if verified:
        assert result.success, result.error
        [request] = server.config.requests
        assert request["headers"]["Host"] == f"{REG}:{server.port}"
    else:
        assert result.cause is Cause.TLS_ERROR
        assert "x509: certificate is not valid for the requested name" in result.error
        assert server.config.requests == []


async def test_token_probe_returns_the_realm_chain_as_a_value(
    tmp_path: Path, pki: Pki, bearer: tuple[RunningServer, RunningServer]
) -> None:
    """Run alone, the token probe hands back the realm host's dns → tcp → tls with its result
    (no side channel in the context); the chain lists them first, the JSON does not nest them."""
    registry, token_server = bearer
    ctx = make_ctx(tmp_path, hosts=HOSTS, repository="pullcheck/good", tag_or_digest="1.0")
    ep = endpoint(REG, registry.port, "https", ca_files=[str(pki.ca_file)])
    assert (await probe_http(ep, ctx)).success  # the Bearer challenge, in ctx.state
    token = await probe_token(ep, ctx)
    assert token.success, token.error
    assert [(p.probe, p.target, p.success) for p in token.preceding] == [
        ("dns", AUTH, True),
        ("tcp", f"{AUTH}:{token_server.port}", True),
        ("tls", f"{AUTH}:{token_server.port}", True),
    ]
    assert "preceding" not in token.model_dump_json()
    again = ProbeResult.model_validate_json(token.model_dump_json())
    assert again.preceding == [] and again.model_dump() == token.model_dump()
    report = await probe_endpoint(ep, ctx)
    assert [p.probe for p in report.probes] == [
        *("dns", "tcp", "tls", "http"),
        *("dns", "tcp", "tls", "token", "manifest"),
    ]
