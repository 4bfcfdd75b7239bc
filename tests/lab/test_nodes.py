"""Lab nodes (``lab.nodes``): hosts in their own namespaces, each with its own containerd.

The shared lab is only ever given nodes here (never stopped as a whole): other sessions use it
(one at a time, through the lab lock). ``down`` is exercised on a whole second lab in a private
network + mount namespace, which has its own bridge and cannot disturb the shared one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import pytest

from lab import access, control, cri, nodes, services, state
from lab.info import LabInfo
from lab.layout import Paths

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# --------------------------------------------------------------------------- on the shared lab


def test_nodes_answer_cri_and_pull(lab: LabInfo) -> None:
    endpoints = nodes.ensure_nodes(lab, 2)
    assert list(endpoints) == ["node-1", "node-2"]
    for name, endpoint in endpoints.items():
        sock = Path(lab.dir) / "nodes" / name / "run" / "containerd.sock"
        assert endpoint == f"unix://{sock}"
        assert lab.nodes[name] == endpoint  # the LabInfo passed in is updated in place
        assert services.owned(lab.node_pids[name], Path(lab.dir))
        v = cri.version(endpoint)
        assert v.runtime_name == "containerd"
        assert v.runtime_api_version.startswith("v1")
    on_disk = LabInfo.load(Path(lab.dir))
    assert {k: on_disk.nodes[k] for k in endpoints} == endpoints
    assert endpoints["node-1"] != lab.endpoint

    # the well-known image through every node's own socket, exactly like the main containerd
    good = lab.images["good"]
    for endpoint in endpoints.values():
        with contextlib.suppress(grpc.RpcError):
            cri.remove(endpoint, good)
        assert cri.pull(endpoint, good, timeout=60).startswith("sha256:")
        status = cri.status(endpoint, good)
        assert status is not None and good in status.repo_tags
        cri.remove(endpoint, good)

    # each node has its own image store: a unique tag pulled on node-1 is unknown to node-2
    ref = access.fresh_reference(lab)
    try:
        cri.pull(endpoints["node-1"], ref, timeout=60)
        assert cri.status(endpoints["node-1"], ref) is not None
        assert cri.status(endpoints["node-2"], ref) is None
        assert cri.status(lab.endpoint, ref) is None
    finally:
        cri.remove(endpoints["node-1"], ref)


def test_node_failures_are_real_lab_failures(lab: LabInfo) -> None:
    """A node resolves through the bridge resolver and has the lab's hosts.toml tree."""
    endpoint = nodes.ensure_nodes(lab, 1)["node-1"]
    with pytest.raises(grpc.RpcError) as err:
        cri.pull(endpoint, lab.images["nxdomain"], timeout=60)
    assert (
        "lookup nxdomain.pullcheck.test on 10.99.0.1:53: no such host"
        in cri.error_text(err.value)[1]
    )
    with pytest.raises(grpc.RpcError) as err:
        cri.pull(endpoint, lab.images["untrusted"], timeout=60)
    assert "x509: certificate signed by unknown authority" in cri.error_text(err.value)[1]
    assert cri.pull(endpoint, lab.images["tls"], timeout=60).startswith("sha256:")
    cri.remove(endpoint, lab.images["tls"])


def test_nodes_have_own_tmpfs(lab: LabInfo) -> None:
    nodes.ensure_nodes(lab, 1)
    holder = nodes.holder_pid(Paths(Path(lab.dir)), "node-1")
    assert holder is not None
    root = Path(lab.dir) / "nodes" / "node-1" / "root"
    assert not state.is_mounted(root)  # mounted inside the node only
    inside = Path(f"/proc/{holder}/root{root}")
    st = os.statvfs(inside)
    assert st.f_blocks * st.f_frsize == 256 * 1024 * 1024
    assert inside.stat().st_dev != Path(lab.content_dir).stat().st_dev


def test_ensure_nodes_is_idempotent(lab: LabInfo) -> None:
    first = nodes.ensure_nodes(lab, 2)
    pids = {k: lab.node_pids[k] for k in first}
    again = nodes.ensure_nodes(Path(lab.dir), 2)
    assert again == first
    assert {k: LabInfo.load(Path(lab.dir)).node_pids[k] for k in first} == pids
    assert nodes.ensure_nodes(lab, 0) == {}
    assert set(lab.nodes) >= set(first)  # fewer asked for: nothing is stopped
    # up() keeps the nodes, with or without being asked for them
    info = control.up(Path(lab.dir), nodes=1)
    assert {k: info.node_pids[k] for k in first} == pids
    assert control.status(Path(lab.dir))


def test_cli_up_nodes(lab: LabInfo) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lab", "--dir", lab.dir, "up", "--nodes", "2"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "node         node-2" in result.stdout
    assert set(LabInfo.load(Path(lab.dir)).nodes) >= {"node-1", "node-2"}


def test_lab_json_without_nodes_is_the_old_format(lab: LabInfo, tmp_path: Path) -> None:
    old = dataclasses.replace(lab, dir=str(tmp_path), nodes={}, node_pids={})
    old.save()
    data = json.loads((tmp_path / "lab.json").read_text())
    assert "nodes" not in data and "node_pids" not in data
    assert (tmp_path / "lab.json").stat().st_mode & 0o777 == 0o600
    assert LabInfo.load(tmp_path) == old
    data["some_future_field"] = 1
    (tmp_path / "lab.json").write_text(json.dumps(data))
    assert LabInfo.load(tmp_path) == old


def test_dead_node_is_reported_and_restarted(lab: LabInfo) -> None:
    paths = Paths(Path(lab.dir))
    nodes.ensure_nodes(lab, 2)
    assert nodes.problems(paths, lab) == {}
    victim = lab.node_pids["node-2"]
    holder = nodes.holder_pid(paths, "node-2")
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while services.alive(victim) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(nodes.problems(paths, LabInfo.load(paths.dir))) == {"node-2"}
    endpoints = nodes.ensure_nodes(lab, 1)  # restarts every recorded node that died
    assert list(endpoints) == ["node-1"]
    assert lab.node_pids["node-2"] != victim
    assert nodes.holder_pid(paths, "node-2") == holder  # only containerd was restarted
    assert nodes.problems(paths, lab) == {}
    assert cri.version(lab.nodes["node-2"]).runtime_name == "containerd"


def test_ensure_nodes_needs_a_lab(tmp_path: Path) -> None:
    with pytest.raises(control.LabError, match="no lab running"):
        nodes.ensure_nodes(tmp_path, 1)
    with pytest.raises(ValueError, match="count"):
        nodes.ensure_nodes(tmp_path, -1)


# --------------------------------------------------------------------------- a whole second lab

_ISOLATED = """
import json, sys
from pathlib import Path
from lab import access, control, cri, netns, services, state
from lab.layout import Paths

d = Path(sys.argv[1])
out = {}
try:
    info = control.up(d, nodes=2, agents=True)
    out["bridge"] = "pclab0" in netns.links()
    recorded = state.recorded_pids(Paths(d))
    out["holders"] = [p for n, p in recorded.items() if n.startswith("holder-")]
    out["nodes"] = info.nodes
    out["node_pids"] = info.node_pids
    out["status"] = control.status(d)
    m = access.mark(info)
    out["pulled"] = [cri.pull(ep, info.images["good"], timeout=60) for ep in info.nodes.values()]
    out["heads"] = access.count_requests(
        info, method="HEAD", path_contains="/pullcheck/good/manifests/1.0", since=m
    )
finally:
    control.down(d)
    out["alive_after_down"] = [p for p in out.get("node_pids", {}).values() if services.alive(p)]
    out["mounts_after_down"] = state.mounts_under(d)
    out["bridge_after_down"] = "pclab0" in netns.links()
    out["veths_after_down"] = [n for n in netns.links() if n.startswith("pclv")]
print(json.dumps(out))
"""


def test_up_nodes_and_down_in_a_private_network_namespace() -> None:
    """The real ``up(nodes=2)`` / ``down`` cycle on a second lab that cannot disturb the shared one.

    A new network namespace has its own loopback (same fixed ports free), a new mount namespace its
    own mounts; nothing in it can reach any other network.
    """
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip")
    directory = Path(tempfile.mkdtemp(prefix="plab-", dir="/var/tmp"))
    try:
        result = subprocess.run(
            [
                *["unshare", "--net", "--mount", "--propagation", "private"],
                *["sh", "-c", 'ip link set lo up && exec "$0" "$@"'],
                *[sys.executable, "-c", _ISOLATED, str(directory)],
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=180,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        out = json.loads(result.stdout.strip().splitlines()[-1])
        assert list(out["nodes"]) == ["node-1", "node-2"]
        assert out["status"] is True
        assert all(ref.startswith("sha256:") for ref in out["pulled"])
        assert out["heads"] == 2  # one resolve per node
        assert out["alive_after_down"] == []
        assert out["mounts_after_down"] == []
        assert out["bridge"] is True and len(out["holders"]) == 2
        assert out["bridge_after_down"] is False and out["veths_after_down"] == []
        assert not any(services.alive(p) for p in out["holders"])
    finally:
        for pid in _pids_mentioning(directory):  # only if the script died before its down()
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(directory, ignore_errors=True)


def _pids_mentioning(directory: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if str(directory) in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(proc.name))
    return found
