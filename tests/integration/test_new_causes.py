"""``registry_error`` and ``connection_reset`` produced for real in the lab (issue 10): nginx's own
500, 502 (nothing behind the proxy) and 503 (with ``Retry-After``), a token service answering 503,
and a proxy that resets the connection in the middle of a blob — through the real containerd, the
probes, the pull test in both modes and the probe command.
"""

from __future__ import annotations

import asyncio

import pytest

from agent.models import Cause, ProbeReport, PullTestResult
from agent.pulltest import NodeSettings, PullTestRequest, run_probe, run_pull_test
from lab.info import LabInfo

pytestmark = pytest.mark.lab

# image key -> (status the runtime and the probes see, what failed, the probe that sees it)
SERVER_ERRORS = {
    "broken": ("500 Internal Server Error", "manifests", "manifest"),
    "badgateway": ("502 Bad Gateway", "manifests", "manifest"),
    "unavailable": ("503 Service Temporarily Unavailable", "manifests", "manifest"),
    "token_unavailable": ("503 Service Temporarily Unavailable", "token", "token"),
}


def _run(node: NodeSettings, image: str, mode: str = "pull") -> PullTestResult:
    request = PullTestRequest(image=image, mode=mode)  # type: ignore[arg-type]
    return asyncio.run(run_pull_test(request, node))


def _registry(lab: LabInfo, key: str) -> str:
    return lab.images[key].split("/", 1)[0]


@pytest.mark.parametrize("key", sorted(SERVER_ERRORS))
@pytest.mark.parametrize("mode", ["pull", "resolve"])
def test_http_5xx_is_registry_error(node: NodeSettings, lab: LabInfo, key: str, mode: str) -> None:
    status, _, probe = SERVER_ERRORS[key]
    result = _run(node, lab.images[key], mode)
    assert not result.success
    assert result.cause is Cause.REGISTRY_ERROR, (result.cause, result.summary)
    registry = _registry(lab, key)
    # the summary names the endpoint and the status; the remedy the registry to check
    assert registry in result.summary and status.split()[0] in result.summary, result.summary
    assert registry in result.remedy and "failing on its side" in result.remedy, result.remedy
    if mode == "pull":
        assert status in result.runtime_error
    else:
        assert result.runtime_error == ""
    [report] = result.endpoints
    assert report.cause is Cause.REGISTRY_ERROR
    failed = next(p for p in report.probes if not p.success)
    assert failed.probe == probe and failed.cause is Cause.REGISTRY_ERROR, failed.error
    if key != "broken":  # the lab's 503s say when to come back
        assert ("Retry-After 120" in failed.error) == (key != "badgateway"), failed.error


def test_token_service_503_names_the_token_request(node: NodeSettings, lab: LabInfo) -> None:
    result = _run(node, lab.images["token_unavailable"], "resolve")
    token = next(p for p in result.endpoints[0].probes if p.probe == "token")
    realm = f"http://{lab.registries['token_down']}/token"
    assert token.error.startswith(f"token service failing: GET {realm}?"), token.error
    assert token.error.endswith(
        "→ 503 Service Unavailable (anonymous) (Retry-After 120): "
        "unavailable: service unavailable: registry in maintenance"
    ), token.error


def test_probe_command_names_the_manifest_head(node: NodeSettings, lab: LabInfo) -> None:
    report: ProbeReport = asyncio.run(run_probe(lab.images["unavailable"], node))
    assert report.cause is Cause.REGISTRY_ERROR
    url = f"http://{lab.registries['policy']}/v2/unavailable/app/manifests/1.0"
    assert report.summary.startswith(f"HEAD {url} → 503"), report.summary
    assert "unavailable: service unavailable: registry in maintenance" in report.summary


def test_reset_mid_blob_is_connection_reset(node: NodeSettings, lab: LabInfo) -> None:
    result = _run(node, lab.images["reset"])
    assert not result.success
    assert result.cause is Cause.CONNECTION_RESET, (result.cause, result.summary)
    assert "connection reset by peer" in result.runtime_error
    assert "reset" in result.summary and result.remedy
    assert lab.registries["reset"] in result.remedy, result.remedy
    # the probes reach the manifest: only the download itself breaks, which only a pull sees
    [report] = result.endpoints
    assert report.success and report.cause is None
    assert result.image_info is None or not result.image_info.image_id


def test_reset_mid_blob_is_invisible_to_resolve_mode(node: NodeSettings, lab: LabInfo) -> None:
    # resolve mode stops at the manifest HEAD, which the reset proxy lets through: a blob that
    # breaks mid-download is a pull-only finding (the README says so)
    result = _run(node, lab.images["reset"], "resolve")
    assert result.success and result.cause is None, result.summary
