"""Every cause a lab image produces, on each containerd at once, through the aggregator.

Three lab nodes run containerd 1.6, 1.7 and 2.x side by side (a cluster mid-upgrade); one real
aggregator finds their agents by DNS. Each case is ONE cluster-wide ``/v1/pulltest`` limited to
those three nodes (they answer in parallel), and asserts each node's own cause and success flag
and the summary's ``by_cause``. The expectations are the causes
``tests/integration/test_pulltest.py`` asserts on the lab's own 1.6; where a runtime words or
behaves differently, the case says what each runtime says and why (``CauseCase.said``): the
cause came out the same on every runtime. The texts themselves: ``lab/OBSERVED.md``
(``python -m lab verify --runtime R``). The per-node faults on each runtime:
``test_nodes_differ.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from agent.causes import Cause
from lab import scenario
from lab.info import LabInfo
from lab.servers import Server
from tests.integration.cluster import lab_cluster, pulltest

pytestmark = pytest.mark.lab

# node -> its containerd. Not node-1..11: an agent remembers the registries it tested (its
# connectivity matrix keeps probing them), so these pulls would show up in test_nodes_differ's
# matrix; the lab leaves these nodes healthy on 1.6 afterwards.
RUNTIME_OF = {"node-12": "1.6", "node-13": "1.7", "node-14": "2"}
NODES = ",".join(RUNTIME_OF)
PULL_TIMEOUT = 30  # more than containerd's 10 s TLS handshake timeout (the blackhole case)


@dataclass(frozen=True)
class CauseCase:
    """One cluster pull test: the image (a ``LabInfo.images`` key, or a reference built from a
    registry for the extra cases), its credentials and mode, the cause on every runtime, and
    where the runtimes word it differently, what each one says."""

    name: str
    image: str  # LabInfo.images key, or "<registry key>/<repository:tag>"
    cause: Cause | None  # None: the pull works
    creds: str = ""  # "" anonymous, "good", "bad" (POST /v1/pulltest with creds)
    mode: str = "pull"
    # runtime -> words its runtime_error must contain (only where the runtimes differ)
    said: dict[str, str] = field(default_factory=dict)


_1X = ("1.6", "1.7")
_NEWER = ("1.7", "2")


def _said(runtimes: tuple[str, ...], words: str) -> dict[str, str]:
    return dict.fromkeys(runtimes, words)


# The cause is the same on every runtime (measured); the words are not (lab/OBSERVED.md).
CASES: list[CauseCase] = [
    CauseCase("good", "good", None),
    CauseCase("tls", "tls", None),
    CauseCase("mirrored", "mirrored", None),  # the dead mirror first: a finding, not a failure
    CauseCase("dockerhub_mirror", "dockerhub_mirror", None),
    # 2.x: "failed to resolve image:", 1.x: 'failed to resolve reference "<ref>":'
    CauseCase(
        "missing_tag",
        "missing_tag",
        Cause.MANIFEST_NOT_FOUND,
        said=_said(_1X, 'failed to resolve reference "') | {"2": "failed to resolve image: "},
    ),
    CauseCase("missing_repo", "missing_repo", Cause.REPOSITORY_NOT_FOUND),
    # a dead mirror before the upstream's 404: 1.x reports the mirror's refusal, 2.x the 404;
    # the probes ask the upstream, so the cause is the 404's on every runtime
    CauseCase(
        "mirrored_missing_tag",
        "mirrored/pullcheck/good:9.9",
        Cause.MANIFEST_NOT_FOUND,
        said=_said(_1X, "connect: connection refused") | {"2": "/pullcheck/good:9.9: not found"},
    ),
    # 1.7+ asks for Basic credentials before resending: no 401 in its text
    CauseCase(
        "private",
        "private",
        Cause.UNAUTHORIZED,
        said={"1.6": "401 Unauthorized"} | _said(_NEWER, "no basic auth credentials"),
    ),
    CauseCase("private+creds", "private", None, creds="good"),
    CauseCase("private+badcreds", "private", Cause.UNAUTHORIZED, creds="bad"),
    CauseCase("token_public+badcreds", "token_public", Cause.UNAUTHORIZED, creds="bad"),
    CauseCase("token_private", "token_private", Cause.UNAUTHORIZED),
    CauseCase("token_private+creds", "token_private", None, creds="good"),
    # 1.7+ names the token request: "unexpected status from GET request to <realm>?…: 401"
    CauseCase(
        "token_private+badcreds",
        "token_private",
        Cause.UNAUTHORIZED,
        creds="bad",
        said={"1.6": "unexpected status: 401 Unauthorized"}
        | _said(_NEWER, "unexpected status from GET request to https://"),
    ),
    # 1.7+: "unexpected status from HEAD request to <url>: 403", 1.6 "status code [manifests …]"
    CauseCase(
        "denied",
        "denied",
        Cause.FORBIDDEN,
        said={"1.6": "failed with status code [manifests 1.0]: 403 Forbidden"}
        | _said(_NEWER, "unexpected status from HEAD request to http://"),
    ),
    CauseCase("ratelimited", "ratelimited", Cause.RATE_LIMITED),
    CauseCase("ratelimited_get", "ratelimited_get", Cause.RATE_LIMITED),
    CauseCase("nxdomain", "nxdomain", Cause.DNS_FAILURE),
    CauseCase("refused", "refused", Cause.CONNECTION_REFUSED),
    CauseCase("blackhole", "blackhole", Cause.TIMEOUT),  # containerd's 10 s TLS handshake timeout
    CauseCase("untrusted", "untrusted", Cause.TLS_ERROR),
    CauseCase("mismatch", "mismatch", Cause.HTTP_HTTPS_MISMATCH),
    # 2.x's CRI plugin fails on the image config first, naming the index digest
    CauseCase(
        "foreign_platform",
        "foreign_platform",
        Cause.PLATFORM_MISMATCH,
        said={"2": "get image config descriptor: no match for platform in manifest sha256:"},
    ),
    CauseCase("corrupt", "corrupt", Cause.LAYER_CORRUPT),
    CauseCase("blob_gone", "blob_gone", Cause.BLOB_NOT_FOUND),
    CauseCase("broken", "broken", Cause.REGISTRY_ERROR),
    CauseCase("badgateway", "badgateway", Cause.REGISTRY_ERROR),
    CauseCase("unavailable", "unavailable", Cause.REGISTRY_ERROR),
    CauseCase("token_unavailable", "token_unavailable", Cause.REGISTRY_ERROR),
    CauseCase("reset", "reset", Cause.CONNECTION_RESET),
    # resolve mode: the probes only, no runtime pull (where the answer differs from a pull's)
    CauseCase("reset@resolve", "reset", None, mode="resolve"),  # only a blob download breaks
    CauseCase("corrupt@resolve", "corrupt", None, mode="resolve"),  # the manifest is fine
    CauseCase(
        "private+badcreds@resolve", "private", Cause.UNAUTHORIZED, creds="bad", mode="resolve"
    ),
]


@pytest.fixture(scope="module")
def cluster(
    lab: LabInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LabInfo, Server]]:
    """node-12..14 on containerd 1.6, 1.7 and 2.x, no faults, and an aggregator finding them."""
    plans = [scenario.NodePlan(node, runtime) for node, runtime in RUNTIME_OF.items()]
    workdir = tmp_path_factory.mktemp("causes-per-runtime")
    with lab_cluster(lab, plans, workdir, name="agg-causes") as (info, agg):
        yield info, agg


def _image(info: LabInfo, spec: str) -> str:
    if spec in info.images:
        return info.images[spec]
    registry, _, rest = spec.partition("/")
    return f"{info.registries[registry]}/{rest}"


def _run(info: LabInfo, agg: Server, case: CauseCase) -> dict[str, Any]:
    image = _image(info, case.image)
    if not case.creds:
        return pulltest(agg, image, PULL_TIMEOUT, mode=case.mode, nodes=NODES)
    password = info.password if case.creds == "good" else "not-the-password"
    body = {
        "image": image,
        "mode": case.mode,
        "timeout": PULL_TIMEOUT,
        "creds": f"{info.username}:{password}",
    }
    reply = agg.client().post("/v1/pulltest", params={"nodes": NODES}, json=body)
    assert reply.status_code == 200, reply.text
    answer: dict[str, Any] = reply.json()
    assert info.password not in reply.text and "not-the-password" not in reply.text
    return answer


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cause_on_each_runtime(cluster: tuple[LabInfo, Server], case: CauseCase) -> None:
    info, agg = cluster
    body = _run(info, agg, case)
    by_node = {n["node"]: n for n in body["nodes"]}
    assert set(by_node) == set(RUNTIME_OF), sorted(by_node)
    want: dict[str, list[str]] = {}
    for node, runtime in RUNTIME_OF.items():
        entry, cause = by_node[node], case.cause
        said = f"{node} (containerd {runtime}): {entry.get('cause')}: {entry.get('summary')}"
        assert entry["cause"] == cause, said + f" | runtime: {entry.get('runtime_error')}"
        assert entry["success"] is (cause is None), said
        if runtime in case.said:
            assert case.said[runtime] in entry["runtime_error"], said
        if cause is not None:
            want.setdefault(cause, []).append(node)
    summary = body["summary"]
    assert summary["nodes"] == len(RUNTIME_OF)
    assert summary["failed"] == sum(len(v) for v in want.values())
    assert summary["by_cause"] == {k: sorted(v) for k, v in sorted(want.items())}
