"""Counting the requests that reached a lab registry (``lab.access``).

Requests go to 127.0.0.1 with the lab name in the Host header: the system resolver is never used.
The lab is shared, so every test counts a path no one else sends (a random repository or tag).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

import grpc
import httpx
import pytest

from lab import access, cri, nodes
from lab.info import LabInfo
from lab.layout import PLAIN_PORT, POLICY_PORT

pytestmark = pytest.mark.lab

ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"


@pytest.fixture
def plain(lab: LabInfo) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"http://127.0.0.1:{PLAIN_PORT}",
        headers={"Host": lab.registries["plain"], "Accept": ACCEPT},
        trust_env=False,  # no proxy variables
        timeout=5,
    ) as client:
        yield client


def _repo() -> str:
    return f"pullcheck/count-{secrets.token_hex(6)}"


def test_counts_exactly_the_heads_after_the_mark(lab: LabInfo, plain: httpx.Client) -> None:
    repo = _repo()
    path = f"/v2/{repo}/manifests/1.0"
    assert plain.head(path).status_code == 404  # before the mark: not counted
    m = access.mark(lab)
    for _ in range(7):
        assert plain.head(path).status_code == 404
    assert plain.get(path).status_code == 404
    assert access.count_requests(lab, "plain", method="HEAD", path_contains=repo, since=m) == 7
    assert access.count_requests(lab, "plain", method="head", path_contains=path, since=m) == 7
    assert access.count_requests(lab, "plain", method="GET", path_contains=repo, since=m) == 1
    assert access.count_requests(lab, "plain", path_contains=repo, since=m) == 8
    assert access.count_requests(lab, "plain", path_contains=repo, status=404, since=m) == 8
    assert access.count_requests(lab, "plain", path_contains=repo) == 9  # whole log
    assert access.count_requests(lab, "tls", path_contains=repo, since=m) == 0

    last = [r for r in access.requests(lab, since=m) if repo in r.uri][-1]
    assert (last.method, last.path, last.status) == ("GET", path, 404)
    assert last.user_agent.startswith("python-httpx/")


def test_200_heads_and_query_strings(lab: LabInfo, plain: httpx.Client) -> None:
    ref = access.fresh_reference(lab)
    repo, tag = ref.split("/", 1)[1].rsplit(":", 1)
    m = access.mark(lab)
    for _ in range(3):
        r = plain.head(f"/v2/{repo}/manifests/{tag}")
        assert r.status_code == 200
        assert lab.images["good_digest"].endswith("@" + r.headers["docker-content-digest"])
    plain.get(f"/v2/{repo}/tags/list", params={"n": "1", "last": tag})
    assert access.count_requests(lab, method="HEAD", path_contains=f"/{tag}", since=m) == 3
    assert access.count_requests(lab, path_contains=f"last={tag}", since=m) == 1
    assert access.count_requests(lab, path_contains=f"/manifests/{tag}", status=200, since=m) == 3


def test_each_mark_counts_from_its_own_point(lab: LabInfo, plain: httpx.Client) -> None:
    repo = _repo()
    m1 = access.mark(lab)
    plain.head(f"/v2/{repo}/manifests/a")
    m2 = access.mark(lab)
    plain.head(f"/v2/{repo}/manifests/a")
    plain.head(f"/v2/{repo}/manifests/a")
    assert access.count_requests(lab, path_contains=repo, since=m1) == 3
    assert access.count_requests(lab, path_contains=repo, since=m2) == 2
    m3 = access.mark(lab)
    assert access.count_requests(lab, path_contains=repo, since=m3) == 0


def test_policy_front_is_counted_separately(lab: LabInfo) -> None:
    repo = _repo()
    m = access.mark(lab)
    with httpx.Client(
        base_url=f"http://127.0.0.1:{POLICY_PORT}",
        headers={"Host": lab.registries["policy"]},
        trust_env=False,
        timeout=5,
    ) as policy:
        assert policy.head(f"/v2/denied/{repo}/manifests/1.0").status_code == 403  # nginx only
        assert policy.head(f"/v2/{repo}/manifests/1.0").status_code == 404  # proxied to plain
    assert access.count_requests(lab, "policy", method="HEAD", path_contains=repo, since=m) == 2
    assert access.count_requests(lab, "plain", method="HEAD", path_contains=repo, since=m) == 1


def test_a_cri_pull_by_tag_is_one_head_then_a_get_by_digest(lab: LabInfo) -> None:
    """What a single-flight test counts: one containerd pull = one HEAD of the tag."""
    endpoint = nodes.ensure_nodes(lab, 1)["node-1"]
    ref = access.fresh_reference(lab)
    tag = ref.rsplit(":", 1)[1]
    m = access.mark(lab)
    try:
        cri.pull(endpoint, ref, timeout=60)
        assert cri.pull(endpoint, ref, timeout=60)  # present: containerd still resolves again
    finally:
        with contextlib.suppress(grpc.RpcError):
            cri.remove(endpoint, ref)
    heads = access.count_requests(lab, method="HEAD", path_contains=f"/manifests/{tag}", since=m)
    assert heads == 2
    assert access.count_requests(lab, method="GET", path_contains=f"/manifests/{tag}", since=m) == 0


def test_unknown_registry_names(lab: LabInfo) -> None:
    with pytest.raises(ValueError, match="served by the 'plain' registry process"):
        access.count_requests(lab, "mirrored")
    with pytest.raises(ValueError, match="unknown registry"):
        access.count_requests(lab, "nope")
