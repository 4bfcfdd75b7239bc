"""The pull test end to end on the real lab: real containerd over CRI, real registries.

One test per cause of the vocabulary, plus success, already-present, cleanup, credentials chosen
from a docker config, and mirror fallback.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.credentials import Credential, load_docker_config
from agent.cri import connect
from agent.models import Cause, PullTestResult
from agent.pulltest import NodeSettings, PullTestRequest, run_probe, run_pull_test
from lab.info import LabInfo

pytestmark = pytest.mark.lab


def _run(node: NodeSettings, image: str, **kw: object) -> PullTestResult:
    return asyncio.run(run_pull_test(PullTestRequest(image=image, **kw), node))  # type: ignore[arg-type]


def _absent(node: NodeSettings, image: str) -> bool:
    async def check() -> bool:
        async with await connect(node.endpoint) as client:
            return await client.image_status(image) is None

    return asyncio.run(check())


def _remove(node: NodeSettings, image: str) -> None:
    async def rm() -> None:
        async with await connect(node.endpoint) as client:
            found = await client.image_status(image)
            if found is not None:
                await client.remove_image(found.id)

    asyncio.run(rm())


def _failed(result: PullTestResult, cause: Cause) -> PullTestResult:
    assert not result.success, result.summary
    assert result.cause is cause, (result.cause, result.summary, result.runtime_error)
    assert result.summary and result.remedy
    return result


# --- success, present, cleanup --------------------------------------------------------------


def test_pull_good_image_records_everything_and_cleans_up(node: NodeSettings, lab: LabInfo) -> None:
    image = lab.images["good"]
    _remove(node, image)
    result = _run(node, image)
    assert result.success, result.summary
    assert result.cause is None and result.runtime is not None
    assert result.runtime.runtime_name == "containerd" and result.runtime.api_version == "v1"
    info = result.image_info
    assert info is not None and not info.present_before and info.removed
    assert info.image_id.startswith("sha256:") and info.size_bytes and info.size_bytes > 0
    assert info.repo_digest.startswith(image.rsplit(":", 1)[0] + "@sha256:")
    assert [p.name for p in result.phases][:2] == ["parse", "runtime"] or "pull" in {
        p.name for p in result.phases
    }
    assert {"pull", "image_status_before", "image_status_after", "remove"} <= {
        p.name for p in result.phases
    }
    assert all(p.ok for p in result.phases)
    # one endpoint and a quick success: the pull proved the path, the probes were not needed
    probe = next(p for p in result.phases if p.name == "probe")
    assert probe.detail == "not run: the pull proved the registry path"
    assert result.endpoints == [] and "via http://plain.pullcheck.test:15000/v2" in result.summary
    assert _absent(node, image), "the test image was left on the node"


def test_a_pull_that_fails_still_gets_the_probes(node: NodeSettings, lab: LabInfo) -> None:
    result = _run(node, lab.images["missing_tag"])
    assert not result.success and result.cause == "manifest_not_found"
    assert result.endpoints and result.endpoints[0].probes, "a failure gets the full evidence"


def test_a_mirror_gets_probed_beside_a_pull_that_works(node: NodeSettings, lab: LabInfo) -> None:
    result = _run(node, lab.images["mirrored"])
    assert result.success, result.summary
    # the dead mirror first in hosts.toml: only the probes can tell the pull fell back past it
    assert len(result.endpoints) == 2 and not result.endpoints[0].success
    assert result.endpoints[1].success and result.findings


def test_already_present_image_is_not_removed(node: NodeSettings, lab: LabInfo) -> None:
    image = lab.images["good"]
    first = _run(node, image, keep=True)
    assert first.success and first.image_info is not None and not first.image_info.removed
    try:
        second = _run(node, image)
        assert second.success and second.image_info is not None
        assert second.image_info.present_before and not second.image_info.removed
        assert not _absent(node, image)
    finally:
        _remove(node, image)


def test_resolve_mode_downloads_nothing(node: NodeSettings, lab: LabInfo) -> None:
    image = lab.images["good"]
    _remove(node, image)
    result = _run(node, image, mode="resolve")
    assert result.success and "pull" not in {p.name for p in result.phases}
    manifest = [p for p in result.endpoints[0].probes if p.probe == "manifest"]
    assert manifest and manifest[0].evidence is not None
    assert manifest[0].evidence.kind == "manifest" and manifest[0].evidence.digest.startswith(
        "sha256:"
    )
    assert _absent(node, image)


def test_v1alpha2_runtime_api(lab: LabInfo) -> None:
    node = NodeSettings(
        endpoint=lab.endpoint,
        resolv_conf=Path(lab.resolv_conf),
        registry_config_path=lab.registry_config_path,
        api_version="v1alpha2",
    )
    result = _run(node, lab.images["good"])
    assert result.success and result.runtime is not None
    assert result.runtime.api_version == "v1alpha2"


# --- credentials ----------------------------------------------------------------------------


def _docker_config(tmp_path: Path, auths: dict[str, tuple[str, str]]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "auths": {
                    key: {"auth": base64.b64encode(f"{u}:{p}".encode()).decode()}
                    for key, (u, p) in auths.items()
                }
            }
        )
    )
    return path


def test_credentials_chosen_from_docker_config_in_keyring_order(
    node: NodeSettings, lab: LabInfo, tmp_path: Path
) -> None:
    host = lab.registries["auth"]
    config = _docker_config(
        tmp_path,
        {
            f"{host}/pullcheck": (lab.username, "wrong-password-1"),  # more specific: tried first
            host: (lab.username, lab.password),
            "other.example.com": ("nobody", "nothing"),  # does not match: never tried
        },
    )
    result = _run(node, lab.images["private"], keyring=load_docker_config(config))
    assert result.success, result.summary
    assert [a.ok for a in result.credentials] == [False, True]
    assert result.credentials[0].cause is Cause.UNAUTHORIZED
    assert f"[{host}/pullcheck]" in result.credentials[0].source
    assert f"[{host}]" in result.credentials[1].source
    dumped = result.model_dump_json()
    assert lab.password not in dumped and "wrong-password-1" not in dumped


def test_unauthorized_without_credentials(node: NodeSettings, lab: LabInfo) -> None:
    result = _failed(_run(node, lab.images["private"]), Cause.UNAUTHORIZED)
    assert result.credentials[0].source == "anonymous"
    assert "imagePullSecret" in result.remedy


def test_unauthorized_with_wrong_password_never_leaks_it(node: NodeSettings, lab: LabInfo) -> None:
    secret = "s3cret-Wrong-Passw0rd"
    cred = Credential(username=lab.username, password=secret, source="--creds")
    result = _failed(_run(node, lab.images["private"], credential=cred), Cause.UNAUTHORIZED)
    assert secret not in result.model_dump_json()


# --- one test per cause ---------------------------------------------------------------------


def test_manifest_not_found(node: NodeSettings, lab: LabInfo) -> None:
    result = _failed(_run(node, lab.images["missing_tag"]), Cause.MANIFEST_NOT_FOUND)
    assert "404" in result.summary


def test_repository_not_found(node: NodeSettings, lab: LabInfo) -> None:
    _failed(_run(node, lab.images["missing_repo"]), Cause.REPOSITORY_NOT_FOUND)


def test_forbidden(node: NodeSettings, lab: LabInfo) -> None:
    result = _failed(_run(node, lab.images["denied"]), Cause.FORBIDDEN)
    assert "403" in result.summary


def test_rate_limited(node: NodeSettings, lab: LabInfo) -> None:
    result = _failed(_run(node, lab.images["ratelimited"]), Cause.RATE_LIMITED)
    assert "429" in result.summary
    manifest = [p for e in result.endpoints for p in e.probes if p.probe == "manifest"]
    assert manifest and manifest[-1].evidence is not None
    assert manifest[-1].evidence.kind == "manifest"
    assert manifest[-1].evidence.ratelimit_remaining.startswith("0")


def test_dns_failure(node: NodeSettings, lab: LabInfo) -> None:
    result = _failed(_run(node, lab.images["nxdomain"]), Cause.DNS_FAILURE)
    assert "nxdomain.pullcheck.test" in result.summary


def test_connection_refused(node: NodeSettings, lab: LabInfo) -> None:
    result = _failed(_run(node, lab.images["refused"]), Cause.CONNECTION_REFUSED)
    assert "15098" in result.summary and "15098" in result.remedy


def test_timeout_cancels_the_rpc(node: NodeSettings, lab: LabInfo) -> None:
    result = _failed(_run(node, lab.images["blackhole"], timeout=4.0), Cause.TIMEOUT)
    assert "15099" in result.summary or "15099" in result.remedy


def test_tls_error(node: NodeSettings, lab: LabInfo) -> None:
    result = _failed(_run(node, lab.images["untrusted"]), Cause.TLS_ERROR)
    assert "hosts.toml" in result.remedy


def test_http_https_mismatch(node: NodeSettings, lab: LabInfo) -> None:
    result = _failed(_run(node, lab.images["mismatch"]), Cause.HTTP_HTTPS_MISMATCH)
    assert "http://" in result.remedy


def test_platform_mismatch(node: NodeSettings, lab: LabInfo) -> None:
    result = _failed(_run(node, lab.images["foreign_platform"]), Cause.PLATFORM_MISMATCH)
    assert "linux/" in result.remedy


def test_layer_corrupt(node: NodeSettings, lab: LabInfo) -> None:
    result = _failed(_run(node, lab.images["corrupt"]), Cause.LAYER_CORRUPT)
    assert "tar" in result.runtime_error


def test_blob_not_found(node: NodeSettings, lab: LabInfo) -> None:
    _failed(_run(node, lab.images["blob_gone"]), Cause.BLOB_NOT_FOUND)


def test_registry_error(node: NodeSettings, lab: LabInfo) -> None:
    # the other 5xx fixtures and connection_reset: tests/integration/test_new_causes.py
    result = _failed(_run(node, lab.images["broken"]), Cause.REGISTRY_ERROR)
    assert "500" in result.summary


def test_invalid_reference_touches_nothing(tmp_path: Path) -> None:
    node = NodeSettings(endpoint=f"unix://{tmp_path}/none.sock")
    result = _failed(
        _run(node, "Plain.pullcheck.test:15000/Pullcheck/Good"), Cause.INVALID_REFERENCE
    )
    assert "lowercase" in result.summary
    assert result.runtime is None and not result.endpoints


def test_runtime_unavailable(lab: LabInfo, tmp_path: Path) -> None:
    missing = tmp_path / "containerd.sock"
    node = NodeSettings(
        endpoint=f"unix://{missing}",
        resolv_conf=Path(lab.resolv_conf),
        registry_config_path=lab.registry_config_path,
    )
    result = _failed(_run(node, lab.images["good"]), Cause.RUNTIME_UNAVAILABLE)
    assert str(missing) in result.summary


@pytest.fixture
def full_disk(lab: LabInfo) -> Iterator[None]:
    filler = Path(lab.content_dir) / "pullcheck-filler"
    stat = os.statvfs(lab.content_dir)
    free = stat.f_bavail * stat.f_frsize
    with filler.open("wb") as f:
        os.posix_fallocate(f.fileno(), 0, max(free - 64 * 1024, 0))
    try:
        yield
    finally:
        filler.unlink()


def test_disk_full(node: NodeSettings, lab: LabInfo, full_disk: None) -> None:
    _remove(node, lab.images["good"])
    result = _failed(_run(node, lab.images["good"]), Cause.DISK_FULL)
    assert "no space left on device" in result.runtime_error


# --- mirrors ----------------------------------------------------------------------------------


def test_mirror_failure_reported_even_when_pull_succeeds(node: NodeSettings, lab: LabInfo) -> None:
    result = _run(node, lab.images["mirrored"])
    assert result.success, result.summary
    roles = [(e.endpoint.role, e.success, e.cause) for e in result.endpoints]
    assert roles[0] == ("mirror", False, Cause.CONNECTION_REFUSED)
    assert roles[-1][:2] == ("upstream", True)
    [finding] = result.findings  # a failure on the path, not a note: findings, not warnings
    assert finding.cause is Cause.CONNECTION_REFUSED and finding.source == "probe"
    assert finding.endpoint == "http://refused.pullcheck.test:15098/v2"
    assert not any("refused.pullcheck.test:15098" in w for w in result.warnings)


def test_docker_hub_through_mirror(node: NodeSettings, lab: LabInfo) -> None:
    result = _run(node, lab.images["dockerhub_mirror"])
    assert result.success, result.summary
    assert result.reference == "docker.io/pullcheck/good:1.0"
    assert result.endpoints[0].endpoint.role == "mirror" and result.endpoints[0].success
    upstream = result.endpoints[-1]
    assert upstream.endpoint.host == "registry-1.docker.io"
    assert upstream.cause is Cause.DNS_FAILURE  # the lab resolver knows no public names


def test_hosts_toml_without_host_table_is_ignored_by_containerd_1x(
    node: NodeSettings, lab: LabInfo
) -> None:
    """The classic trap: `ca` added to hosts.toml, still x509, because 1.x ignores the file."""
    registry = lab.registries["untrusted"]
    host_dir = Path(lab.registry_config_path) / registry
    host_dir.mkdir()
    try:
        (host_dir / "hosts.toml").write_text(
            f'server = "https://{registry}"\nca = "{lab.ca_file}"\n'
        )
        result = _failed(_run(node, lab.images["untrusted"]), Cause.TLS_ERROR)
        assert any("invalid `host` tree" in w and "hosts.toml" in w for w in result.warnings)
        assert "Note: the runtime ignores" in result.remedy and "repeat the server" in result.remedy
    finally:
        (host_dir / "hosts.toml").unlink(missing_ok=True)
        host_dir.rmdir()


# --- guards (used by the agent API; also on PullTestRequest) ---------------------------------


def test_size_guard_refuses_before_any_download(node: NodeSettings, lab: LabInfo) -> None:
    image = lab.images["good"]
    _remove(node, image)
    result = _run(node, image, max_image_size=1_000_000)  # the good image is ~1.5 MB
    assert not result.success and result.cause is None
    assert result.refused == "image_too_large" and "over the limit of 1000000" in result.summary
    assert "pull" not in {p.name for p in result.phases}
    assert _absent(node, image)
    allowed = _run(node, image, max_image_size=10_000_000)
    assert allowed.success and not allowed.refused
    assert any(p.name == "size_check" and p.ok for p in allowed.phases)


def test_free_space_guard(node: NodeSettings, lab: LabInfo) -> None:
    result = _run(node, lab.images["good"], min_free_space=10**15)
    assert result.refused == "insufficient_space" and "below the minimum" in result.summary
    assert "pull" not in {p.name for p in result.phases}
    assert _run(node, lab.images["good"], min_free_space=1024).success


# --- a docker config whose entries all miss the image ---------------------------------------


def test_no_matching_pull_secret_entry_is_explained(
    node: NodeSettings, lab: LabInfo, tmp_path: Path
) -> None:
    """The most common real cause: the secret has entries, none for this registry and port."""
    registry = lab.registries["auth"]  # host:port of the htpasswd registry
    hostname = registry.rsplit(":", 1)[0]
    port = registry.rsplit(":", 1)[1]
    account = (lab.username, lab.password)
    config = _docker_config(
        tmp_path, {lab.registries["plain"]: account, "quay.io": account, hostname: account}
    )
    result = _failed(
        _run(node, lab.images["private"], keyring=load_docker_config(config)), Cause.UNAUTHORIZED
    )
    assert [a.source for a in result.credentials] == ["anonymous"]
    [warning] = [w for w in result.warnings if "none matches" in w]
    assert warning.startswith(f"docker-config:{config} has 3 entries, but none matches {registry}/")
    assert (
        f"Near miss: {hostname} — same host, other port: ports must be equal "
        f"(the key has none, the image has :{port})"
    ) in warning
    assert f"Other entries: quay.io, {lab.registries['plain']} — other hosts" in warning
    assert f"no pull-secret entry matched {registry}, so the test ran anonymously" in result.summary
    assert result.remedy.startswith(
        f'No pull-secret entry matches {registry}: add an entry for "{registry}"'
    )
    assert lab.password not in result.model_dump_json()

    fixed = _docker_config(tmp_path, {hostname: account, registry: account})
    passed = _run(node, lab.images["private"], keyring=load_docker_config(fixed))
    assert passed.success, passed.summary
    assert [a.source for a in passed.credentials] == [f"docker-config:{fixed}[{registry}]"]
    assert not any("none matches" in w for w in passed.warnings)


def test_probe_explains_a_pull_secret_without_a_matching_entry(
    lab: LabInfo, tmp_path: Path
) -> None:
    registry = lab.registries["auth"]
    config = _docker_config(tmp_path, {"quay.io": (lab.username, lab.password)})
    node = NodeSettings(
        resolv_conf=Path(lab.resolv_conf), registry_config_path=lab.registry_config_path
    )
    report = asyncio.run(run_probe(lab.images["private"], node, keyring=load_docker_config(config)))
    assert not report.success and report.cause is Cause.UNAUTHORIZED, report.summary
    [warning] = [w for w in report.warnings if "none matches" in w]
    assert f"docker-config:{config} has 1 entry" in warning and "quay.io — another host" in warning
    assert f"no pull-secret entry matched {registry}" in report.summary
    assert f'add an entry for "{registry}"' in report.remedy


def test_unmatched_pull_secret_on_public_and_denied_images(
    node: NodeSettings, lab: LabInfo, tmp_path: Path
) -> None:
    """A public image only gets the warning; a 403 gets a hedged remedy (the repo may be open)."""
    keyring = load_docker_config(_docker_config(tmp_path, {"quay.io": ("someone", "something")}))
    public = _run(node, lab.images["good"], mode="resolve", keyring=keyring)
    assert public.success, public.summary
    assert any("none matches" in w and "quay.io — another host" in w for w in public.warnings)
    assert "pull-secret" not in public.summary and not public.remedy
    denied = _failed(_run(node, lab.images["denied"], keyring=keyring), Cause.FORBIDDEN)
    registry = lab.images["denied"].split("/", 1)[0]
    assert f"no pull-secret entry matched {registry}" in denied.summary
    assert denied.remedy.startswith(
        f"No pull-secret entry matched {registry}, so the registry saw an anonymous pull; "
        f'if the repository is private, add an entry for "{registry}".'
    )
