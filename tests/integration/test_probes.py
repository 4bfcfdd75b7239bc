"""Registry path probes against the local lab (dnsmasq, docker-registry, nginx, token server).

Every name is resolved through the lab's resolv.conf (dnsmasq at 127.0.53.1) with an empty hosts
file; endpoints come from the lab's hosts.toml tree exactly as containerd would read it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.credentials import Credential
from agent.hosts import registry_endpoints
from agent.models import (
    Cause,
    Endpoint,
    EndpointReport,
    HttpEvidence,
    ManifestEvidence,
    TlsEvidence,
    TokenEvidence,
)
from agent.probes import ProbeContext, RegistryProbe, probe_endpoint, probe_http
from lab.info import LabInfo
from lab.layout import SERVER_CERT_IPS, SERVER_CERT_NAMES, TLS_PORT
from tests.unit.test_probes_support import (
    ResolverSpy,
    endpoint,
    forbid_system_resolver,  # noqa: F401  (fixture)
)

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("forbid_system_resolver")]


def _ctx(lab: LabInfo, tmp_path: Path, image: str, **kwargs: object) -> ProbeContext:
    """A context for one lab image ``host/repo:tag`` (or ``@digest``)."""
    _, _, rest = image.partition("/")
    if "@" in rest:
        repository, _, obj = rest.partition("@")
    else:
        repository, _, obj = rest.rpartition(":")
    hosts = tmp_path / "hosts"
    hosts.write_text("")
    options: dict[str, object] = {"timeout": 3.0, **kwargs}
    return ProbeContext(
        resolv_conf=lab.resolv_conf,
        hosts_file=str(hosts),
        repository=repository,
        tag_or_digest=obj,
        **options,  # type: ignore[arg-type]
    )


def _endpoints(lab: LabInfo, name: str) -> list[Endpoint]:
    return registry_endpoints(lab.registries[name], lab.registry_config_path)


async def _upstream(
    lab: LabInfo, tmp_path: Path, name: str, image: str, **kw: object
) -> EndpointReport:
    upstream = _endpoints(lab, name)[-1]
    assert upstream.role == "upstream"
    return await probe_endpoint(upstream, _ctx(lab, tmp_path, lab.images[image], **kw))


def _creds(lab: LabInfo) -> list[Credential]:
    return [Credential(username=lab.username, password=lab.password, source="lab htpasswd")]


def _manifest(report: EndpointReport) -> ManifestEvidence:
    evidence = report.probes[-1].evidence
    assert isinstance(evidence, ManifestEvidence), report
    return evidence


async def test_ok_plain(lab: LabInfo, tmp_path: Path) -> None:
    reports = await RegistryProbe(
        _endpoints(lab, "plain"), _ctx(lab, tmp_path, lab.images["good"])
    ).run()
    assert reports and all(r.success for r in reports), [r.summary for r in reports]
    report = reports[-1]
    assert [p.probe for p in report.probes] == ["dns", "tcp", "http", "manifest"]
    digest = lab.images["good_digest"].rpartition("@")[2]
    assert _manifest(report).digest == digest
    dns = report.probes[0].evidence
    assert dns is not None and dns.kind == "dns" and dns.nameservers == [lab.dns_server]


async def test_ok_tls(lab: LabInfo, tmp_path: Path) -> None:
    report = await _upstream(lab, tmp_path, "tls", "tls")
    assert report.success, report.summary
    tls = next(p.evidence for p in report.probes if p.probe == "tls")
    assert isinstance(tls, TlsEvidence)
    assert tls.verified and tls.server_name == "tls.pullcheck.test" and lab.ca_file in tls.ca_files


@pytest.mark.parametrize(
    ("name", "verified"),
    [("tls.pullcheck.test", True), ("plain.pullcheck.test", False)],
    ids=["name-in-the-certificate", "name-not-in-the-certificate"],
)
async def test_https_requests_verify_the_name_not_the_address(
    lab: LabInfo, tmp_path: Path, name: str, verified: bool
) -> None:
    """The lab's TLS registry has one certificate whose SANs hold 127.0.0.1 and the TLS names:
    reached by another name that resolves to the same address, the request must fail, because
    the HTTP client connects to the address but verifies the name."""
    assert "127.0.0.1" in SERVER_CERT_IPS  # a client checking the address would accept both
    assert (name in SERVER_CERT_NAMES) is verified
    ctx = _ctx(lab, tmp_path, lab.images["tls"])
    result = await probe_http(endpoint(name, TLS_PORT, "https", ca_files=[lab.ca_file]), ctx)
    assert ctx.state.host_addresses == {name: "127.0.0.1"}  # resolved by the lab's dnsmasq
    if verified:
        assert result.success, result.error
    else:
        assert result.cause == Cause.TLS_ERROR, result.error
        assert "x509: certificate is not valid for the requested name" in result.error


async def test_tls_error_untrusted(lab: LabInfo, tmp_path: Path) -> None:
    report = await _upstream(lab, tmp_path, "untrusted", "untrusted")
    assert report.cause == Cause.TLS_ERROR
    assert "x509: certificate signed by unknown authority" in report.summary
    tls = report.probes[-1].evidence
    assert isinstance(tls, TlsEvidence) and tls.issuer and tls.not_after  # captured anyway


async def test_http_https_mismatch(lab: LabInfo, tmp_path: Path) -> None:
    [endpoint] = _endpoints(lab, "mismatch")
    assert endpoint.scheme == "https" and endpoint.config_file == ""  # no hosts.toml → https
    report = await probe_endpoint(endpoint, _ctx(lab, tmp_path, lab.images["mismatch"]))
    assert report.cause == Cause.HTTP_HTTPS_MISMATCH, report.summary


async def test_unauthorized_basic_without_credentials(lab: LabInfo, tmp_path: Path) -> None:
    report = await _upstream(lab, tmp_path, "auth", "private")
    assert report.cause == Cause.UNAUTHORIZED, report.summary
    http = next(p.evidence for p in report.probes if p.probe == "http")
    assert isinstance(http, HttpEvidence) and http.status == 401 and http.auth_scheme == "Basic"
    assert report.summary.endswith("401 Unauthorized (no basic auth credentials)")


async def test_ok_basic_with_lab_credentials(lab: LabInfo, tmp_path: Path) -> None:
    report = await _upstream(lab, tmp_path, "auth", "private", credentials=_creds(lab))
    assert report.success, report.summary


async def test_bearer_anonymous_public(lab: LabInfo, tmp_path: Path) -> None:
    report = await _upstream(lab, tmp_path, "token", "token_public")
    assert report.success, report.summary
    token_server = lab.registries["token_server"]
    targets = [(p.probe, p.target) for p in report.probes]
    assert ("tcp", token_server) in targets and ("tls", token_server) in targets
    token = next(p.evidence for p in report.probes if p.probe == "token")
    assert isinstance(token, TokenEvidence)
    assert token.status == 200 and not token.authenticated
    assert token.realm == f"https://{token_server}/token"
    assert token.scope == "repository:public/good:pull"


async def test_bearer_private_with_credentials(lab: LabInfo, tmp_path: Path) -> None:
    anonymous = await _upstream(lab, tmp_path, "token", "token_private")
    assert anonymous.cause == Cause.UNAUTHORIZED and "insufficient_scope" in anonymous.summary
    wrong = [Credential(username=lab.username, password="not-the-password", source="wrong")]
    refused = await _upstream(lab, tmp_path, "token", "token_private", credentials=wrong)
    assert refused.cause == Cause.UNAUTHORIZED and refused.probes[-1].probe == "token"
    report = await _upstream(lab, tmp_path, "token", "token_private", credentials=_creds(lab))
    assert report.success, report.summary
    token = next(p.evidence for p in report.probes if p.probe == "token")
    assert isinstance(token, TokenEvidence) and token.authenticated
    dumped = json.dumps([r.model_dump(mode="json") for r in (anonymous, refused, report)])
    assert lab.password not in dumped and "not-the-password" not in dumped


async def test_rate_limited_headers(lab: LabInfo, tmp_path: Path) -> None:
    report = await _upstream(lab, tmp_path, "policy", "ratelimited")
    assert report.cause == Cause.RATE_LIMITED, report.summary
    manifest = _manifest(report)
    assert manifest.status == 429 and manifest.method == "HEAD"
    assert manifest.ratelimit_remaining.startswith("0")
    assert manifest.ratelimit_limit and manifest.ratelimit_source
    url = f"http://{lab.registries['policy']}/v2/ratelimited/app/manifests/1.0"
    assert report.summary.startswith(
        f"HEAD {url} → 429 Too Many Requests (ratelimit-remaining {manifest.ratelimit_remaining}"
    )


async def test_forbidden(lab: LabInfo, tmp_path: Path) -> None:
    report = await _upstream(lab, tmp_path, "policy", "denied")
    assert report.cause == Cause.FORBIDDEN, report.summary
    assert "403 Forbidden" in report.summary


async def test_server_error(lab: LabInfo, tmp_path: Path) -> None:
    report = await _upstream(lab, tmp_path, "policy", "broken")
    assert report.cause == Cause.REGISTRY_ERROR and "500 Internal Server Error" in report.summary


async def test_manifest_vs_repository_not_found(lab: LabInfo, tmp_path: Path) -> None:
    missing_tag = await _upstream(lab, tmp_path, "plain", "missing_tag")
    assert missing_tag.cause == Cause.MANIFEST_NOT_FOUND, missing_tag.summary
    assert _manifest(missing_tag).repository_exists is True
    missing_repo = await _upstream(lab, tmp_path, "plain", "missing_repo")
    assert missing_repo.cause == Cause.REPOSITORY_NOT_FOUND, missing_repo.summary
    assert _manifest(missing_repo).repository_exists is False


async def test_connection_refused(lab: LabInfo, tmp_path: Path) -> None:
    report = await _upstream(lab, tmp_path, "refused", "refused")
    assert report.cause == Cause.CONNECTION_REFUSED
    assert report.summary == f"TCP connect to {lab.registries['refused']} (127.0.0.1) refused"


async def test_timeout_on_blackhole(lab: LabInfo, tmp_path: Path) -> None:
    # https (TLS handshake) or http (response headers), depending on the lab's hosts.toml
    report = await _upstream(lab, tmp_path, "blackhole", "blackhole", timeout=0.5)
    assert report.cause == Cause.TIMEOUT, report.summary
    assert "after 0.5 s" in report.summary


async def test_dns_failure_nxdomain(
    lab: LabInfo,
    tmp_path: Path,
    forbid_system_resolver: ResolverSpy,  # noqa: F811
) -> None:
    report = await _upstream(lab, tmp_path, "nxdomain", "nxdomain")
    assert report.cause == Cause.DNS_FAILURE
    assert report.summary == f"lookup nxdomain.pullcheck.test: NXDOMAIN from {lab.dns_server}"
    assert [p.probe for p in report.probes] == ["dns"]
    assert forbid_system_resolver.calls == []


async def test_mirror_endpoint_list(lab: LabInfo, tmp_path: Path) -> None:
    registry = lab.registries["mirrored"]
    endpoints = _endpoints(lab, "mirrored")
    assert [(e.url, e.role, e.namespace) for e in endpoints] == [
        (f"http://{lab.registries['refused']}/v2", "mirror", registry),
        (f"http://{registry}/v2", "upstream", ""),
    ]
    assert all(e.config_file.endswith("hosts.toml") for e in endpoints)
    mirror, upstream = await RegistryProbe(
        endpoints, _ctx(lab, tmp_path, lab.images["mirrored"])
    ).run()
    assert mirror.cause == Cause.CONNECTION_REFUSED
    assert upstream.success, upstream.summary


async def test_docker_hub_mirror_sends_ns(lab: LabInfo, tmp_path: Path) -> None:
    endpoints = _endpoints(lab, "dockerhub")
    assert endpoints[-1].url == "https://registry-1.docker.io/v2"
    mirror = endpoints[0]
    assert mirror.role == "mirror" and mirror.namespace == "docker.io"
    report = await probe_endpoint(mirror, _ctx(lab, tmp_path, lab.images["dockerhub_mirror"]))
    assert report.success, report.summary
    assert _manifest(report).url.endswith("/v2/pullcheck/good/manifests/1.0?ns=docker.io")
