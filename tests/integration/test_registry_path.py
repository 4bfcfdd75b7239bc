"""The registry path as the lab's containerd 1.6.20 walks it, end to end through run_pull_test.

Loopback registries without a hosts.toml (plain HTTP there), the cause behind a dead mirror, one
probe per endpoint, and the evidence a cancelled or timed-out test keeps.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.models import Cause, Finding, PullTestResult
from agent.pulltest import NodeSettings, PullTestRequest, run_pull_test
from lab import access
from lab.info import LabInfo
from lab.layout import BLACKHOLE_PORT, PLAIN_PORT

pytestmark = pytest.mark.lab

_DURATION = re.compile(r"\d+(?:\.\d+)? ?s\b")


def _run(node: NodeSettings, image: str, **kw: object) -> PullTestResult:
    return asyncio.run(run_pull_test(PullTestRequest(image=image, **kw), node))  # type: ignore[arg-type]


# --- loopback registries without hosts.toml (issue 7, item 6) --------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_resolve_on_a_loopback_plain_http_registry_succeeds(
    node: NodeSettings, lab: LabInfo, host: str
) -> None:
    registry = f"{host}:{PLAIN_PORT}"
    assert not any(
        (Path(lab.registry_config_path) / d).exists()
        for d in (registry, f"{host}_{PLAIN_PORT}_", "_default")
    ), "the loopback registry must have no hosts.toml for this test"
    result = _run(node, f"{registry}/pullcheck/good:1.0", mode="resolve")
    assert result.success, (result.cause, result.summary)
    [endpoint] = result.endpoints
    assert endpoint.endpoint.url == f"http://{registry}/v2" and endpoint.success
    assert [p.probe for p in endpoint.probes] == ["dns", "tcp", "http", "manifest"]
    assert result.summary.startswith(f"resolved {registry}/pullcheck/good:1.0 via http://")
    assert result.findings == []


@pytest.mark.parametrize(
    ("image", "cause"),
    [
        (f"127.0.0.1:{PLAIN_PORT}/pullcheck/nosuchrepo:1.0", Cause.REPOSITORY_NOT_FOUND),
        (f"127.0.0.1:{PLAIN_PORT}/pullcheck/good:9.9", Cause.MANIFEST_NOT_FOUND),
        (f"localhost:{PLAIN_PORT}/pullcheck/nosuchrepo:1.0", Cause.REPOSITORY_NOT_FOUND),
    ],
)
def test_failing_pull_from_a_loopback_registry_keeps_its_probe_evidence(
    node: NodeSettings, image: str, cause: Cause
) -> None:
    result = _run(node, image)
    assert result.cause is cause, (result.cause, result.summary, result.runtime_error)
    assert result.runtime_error.endswith(f"{image}: not found")  # the runtime cannot tell
    [endpoint] = result.endpoints
    assert endpoint.cause is cause and endpoint.probes[-1].probe == "manifest"
    assert "404" in result.summary and result.findings == []


# --- the cause whose fix makes the pull work (item 7) ----------------------------------------


def test_missing_tag_behind_a_dead_mirror_is_the_cause(node: NodeSettings, lab: LabInfo) -> None:
    registry = lab.registries["mirrored"]
    mirror_url = f"http://{lab.registries['refused']}/v2"
    result = _run(node, f"{registry}/pullcheck/good:9.9")
    # containerd names the mirror's refusal (its resolver keeps the first non-404 error) ...
    assert "connection refused" in result.runtime_error and "15098" in result.runtime_error
    # ... but only the missing tag blocks the pull once the mirror is back
    assert result.cause is Cause.MANIFEST_NOT_FOUND, (result.cause, result.summary)
    assert registry in result.summary and "404" in result.summary
    assert registry in result.remedy and "15098" not in result.remedy
    [mirror] = [f for f in result.findings if f.source == "probe"]
    assert mirror == Finding(
        cause=Cause.CONNECTION_REFUSED,
        summary=f"TCP connect to {lab.registries['refused']} (127.0.0.1) refused",
        endpoint=mirror_url,
    )
    [runtime] = [f for f in result.findings if f.source == "runtime"]
    assert runtime.cause is Cause.CONNECTION_REFUSED and runtime.endpoint == ""
    assert runtime.summary.startswith('failed to do request: Head "http://refused')


# --- one endpoint, one probe (item 8) ---------------------------------------------------------


def test_a_hosts_toml_repeating_its_server_is_probed_once(node: NodeSettings, lab: LabInfo) -> None:
    hosts_toml = Path(lab.registry_config_path) / lab.registries["plain"] / "hosts.toml"
    text = hosts_toml.read_text()
    assert 'server = "http://plain.pullcheck.test:15000"' in text
    assert '[host."http://plain.pullcheck.test:15000"]' in text  # the 1.x form repeats it
    image = access.fresh_reference(lab)
    tag = image.rsplit(":", 1)[1]
    mark = access.mark(lab)
    result = _run(node, image, mode="resolve")
    assert result.success, result.summary
    assert [e.endpoint.url for e in result.endpoints] == [f"http://{lab.registries['plain']}/v2"]
    heads = access.count_requests(
        lab, "plain", method="HEAD", path_contains=f"/manifests/{tag}", since=mark
    )
    assert heads == 1


# --- a cancelled or timed-out test keeps its evidence (item 10) -------------------------------


def _established_sockets_to(port: int) -> set[str]:
    """Inodes of this process's TCP sockets connected to 127.0.0.1:``port``."""
    mine = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith("socket:["):
            mine.add(target[len("socket:[") : -1])
    found = set()
    for line in Path("/proc/self/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state, inode = fields[2], fields[3], fields[9]
        if remote == f"0100007F:{port:04X}" and state == "01" and inode in mine:
            found.add(inode)
    return found


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.02)


def test_cancelled_pull_keeps_the_probe_evidence(lab: LabInfo) -> None:
    node = NodeSettings(
        endpoint=lab.endpoint,
        resolv_conf=Path(lab.resolv_conf),
        registry_config_path=lab.registry_config_path,
        probe_timeout=30.0,  # the TLS probe hangs on the blackhole until it is cancelled
    )
    said: list[str] = []
    seen: list[set[str]] = []

    def tls_probe_hangs() -> bool:
        # the TCP probe's socket closes at once; the TLS probe's stays: seen twice in a row
        seen.append(_established_sockets_to(BLACKHOLE_PORT))
        return len(seen) > 1 and bool(seen[-1] & seen[-2])

    async def scenario() -> PullTestResult:
        request = PullTestRequest(image=lab.images["blackhole"], timeout=60)
        task = asyncio.create_task(run_pull_test(request, node, said.append))
        await asyncio.wait_for(
            _until(lambda: any(m.startswith("pulling") for m in said) and tls_probe_hangs()), 30
        )
        task.cancel()  # what Ctrl-C does to the CLI's task
        return await task

    result = asyncio.run(scenario())
    assert result.cause is Cause.CANCELLED and not result.success
    assert [a.cause for a in result.credentials] == [Cause.CANCELLED]
    [endpoint] = result.endpoints
    assert endpoint.cause is Cause.CANCELLED
    assert [(p.probe, p.success, p.cause) for p in endpoint.probes] == [
        ("dns", True, None),
        ("tcp", True, None),
        ("tls", False, Cause.CANCELLED),
    ]
    target = lab.registries["blackhole"]
    assert endpoint.summary == f"TLS handshake with {target}: cancelled before it finished"
    assert result.findings == []


def test_timed_out_pull_names_one_duration_and_where_it_stalls(
    node: NodeSettings, lab: LabInfo
) -> None:
    result = _run(node, lab.images["blackhole"], timeout=3.0)
    assert result.cause is Cause.TIMEOUT, (result.cause, result.summary)
    assert result.summary == (
        "the pull did not finish within the 3 s deadline; the registry path stalls at the TLS "
        f"handshake with {lab.registries['blackhole']} (127.0.0.1), which does not answer"
    )
    assert len(_DURATION.findall(result.summary)) == 1
    assert result.endpoints and result.endpoints[0].cause is Cause.TIMEOUT


# --- a registry's HTTP 500 gets a remedy that says what to check (item 10) --------------------


def test_server_error_remedy_names_the_endpoint_and_status(
    node: NodeSettings, lab: LabInfo
) -> None:
    result = _run(node, lab.images["broken"])
    assert result.cause is Cause.REGISTRY_ERROR and "500 Internal Server Error" in result.summary
    url = f"http://{lab.registries['policy']}/v2/broken/app/manifests/1.0"
    assert result.remedy.startswith(
        f"Registry {lab.registries['policy']} is failing on its side (HTTP 500 to HEAD {url}): "
        "check the registry's health and logs, its storage backend"
    )
