"""The built image, run as the manifests run it, against the lab (scripts/image.sh runs this).

The agent runs as the DaemonSet runs it (lab/containers.py reads the options from
manifests/base/agent-daemonset.yaml): host network, uid 0, read-only root filesystem, every
capability dropped, no privilege escalation, the default seccomp profile, the CPU and memory
limits, the CRI socket's directory, certs.d, resolv.conf, hosts and the trust store mounted
read-only, the config and token files. Each pull test's cause is compared with the same test
run outside the container (the CLI on the host), one test per cause class.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import control
from lab.containers import (
    AGENT,
    AGGREGATOR,
    IMAGE_ENV,
    Container,
    Workload,
    agent,
    agent_options,
    aggregator,
    aggregator_options,
    podman,
    run_once,
)
from lab.info import LabInfo

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
NODE = "lab-node"
CERTS_D = "/host/etc/containerd/certs.d"  # agent.registry_config_path in the base config
NODE_CERTS_D = "/etc/containerd/certs.d"  # the same on the node: remedies name it (agent.host_root)


@pytest.fixture(scope="module")
def image() -> str:
    return os.environ[IMAGE_ENV]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("image")


@pytest.fixture(scope="module")
def lab_agent(lab: LabInfo, image: str, workdir: Path) -> Iterator[Container]:
    socket_dir = Path(lab.endpoint.removeprefix("unix://")).parent
    with agent(lab, image, workdir / NODE, node=NODE, socket_dir=socket_dir) as container:
        yield container


def _outside(lab: LabInfo, *args: str) -> dict[str, Any]:
    """``pullcheck pull ARGS --json`` on the host, pointed at the lab as the container is."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULLCHECK_")}
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "pull", *args, "--json", "--timeout", "60"],
        env={**env, **lab.env()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode in {0, 1}, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def _inside(container: Container, image: str, **body: Any) -> dict[str, Any]:
    reply = container.client().post(
        "/v1/pulltest", json={"image": image, "mode": "pull", "timeout": 60, **body}
    )
    assert reply.status_code == 200, reply.text
    result: dict[str, Any] = reply.json()
    return result


def _endpoints(result: dict[str, Any]) -> list[str]:
    return [e["endpoint"]["url"] for e in result["endpoints"]]


# --- the image itself ------------------------------------------------------------------------


def test_the_image_is_the_package_version_and_runs_as_non_root(image: str) -> None:
    assert image.rsplit(":", 1)[1] == VERSION
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["pullcheck"]
    assert config["Labels"]["org.opencontainers.image.version"] == VERSION
    proc = run_once(image, [], "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"pullcheck, version {VERSION}"


def test_the_image_has_no_compiler_no_pip_and_no_stubs_tool(image: str) -> None:
    script = (
        "import importlib.util as u, json, shutil;"
        "print(json.dumps({'tools': [t for t in ('gcc', 'cc', 'c++', 'make', 'ld', 'pip',"
        " 'pip3', 'strip') if shutil.which(t)], 'modules': [m for m in ('pip', 'grpc_tools',"
        " 'mypy_protobuf') if u.find_spec(m)], 'stubs': bool(u.find_spec("
        "'agent.cri._pb.runtime.v1.api_pb2'))}))"
    )
    proc = run_once(image, ["--entrypoint", "python"], "-c", script)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"tools": [], "modules": [], "stubs": True}


# --- the agent as the DaemonSet runs it ------------------------------------------------------


_CONFINEMENT = """
import json, pathlib
status = dict(
    line.split(":\\t", 1) for line in pathlib.Path("/proc/1/status").read_text().splitlines()
)
writable = []
for place in ("/", "/opt/pullcheck", "/etc", "/run/containerd", "/host/etc/containerd", "/tmp"):
    try:
        probe = pathlib.Path(place, ".written")
        probe.write_text("x")
        probe.unlink()
        writable.append(place)
    except OSError:
        pass
keys = ("Uid", "CapEff", "CapBnd", "NoNewPrivs", "Seccomp")
print(json.dumps({key: status[key].split()[0] for key in keys} | {"writable": writable}))
"""


def test_the_agent_process_has_the_daemonsets_confinement(lab_agent: Container) -> None:
    got = json.loads(lab_agent.exec("python", "-c", _CONFINEMENT).stdout)
    assert got == {
        "Uid": "0",
        "CapEff": "0000000000000000",
        "CapBnd": "0000000000000000",
        "NoNewPrivs": "1",
        "Seccomp": "2",  # a filter: the runtime's default profile
        "writable": ["/tmp"],  # the emptyDir alone
    }


def test_the_agent_is_healthy_and_ready_through_the_runtime_socket(lab_agent: Container) -> None:
    anonymous = lab_agent.client(token=None)
    assert anonymous.get("/healthz").json() == {"status": "ok", "node": NODE}
    ready = anonymous.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert lab_agent.client(token=None).get("/v1/runtime").status_code == 401
    runtime = lab_agent.client().get("/v1/runtime").json()
    assert runtime["version"]["runtime_name"] == "containerd"


@pytest.mark.parametrize(
    ("key", "cause"),
    [
        ("good", None),  # the whole path: DNS, the registry, the pull through the CRI socket
        ("tls", None),  # TLS with the CA named in certs.d's hosts.toml, read at its host path
        ("missing_tag", "manifest_not_found"),  # registry
        ("nxdomain", "dns_failure"),  # network: the node's resolver (the mounted resolv.conf)
        ("refused", "connection_refused"),  # network
        ("untrusted", "tls_error"),  # TLS: the node's trust store lacks the lab's CA
    ],
)
def test_a_pull_test_in_the_container_names_the_cause_named_outside(
    lab: LabInfo, lab_agent: Container, key: str, cause: str | None
) -> None:
    reference = lab.images[key]
    inside, outside = _inside(lab_agent, reference), _outside(lab, reference)
    assert (inside["success"], inside["cause"]) == (cause is None, cause), inside["summary"]
    assert (outside["success"], outside["cause"]) == (cause is None, cause), outside["summary"]
    assert inside["node"] == NODE
    if cause is None:
        assert inside["image_info"]["repo_digest"] == outside["image_info"]["repo_digest"]
    else:
        assert _endpoints(inside) == _endpoints(outside)
        # the same words; a path names certs.d where the node has it (the agent's mount point
        # without the host root), which on the lab is the lab's certs.d
        assert CERTS_D not in inside["remedy"]
        remedy = inside["remedy"].replace(NODE_CERTS_D, lab.registry_config_path)
        assert remedy == outside["remedy"]


def test_credentials_work_and_never_reach_the_logs(lab: LabInfo, lab_agent: Container) -> None:
    creds = f"{lab.username}:{lab.password}"
    result = _inside(lab_agent, lab.images["private"], creds=creds)
    assert result["success"], result["summary"]
    assert lab.password not in json.dumps(result)
    logs = lab_agent.logs()
    assert lab.images["private"] in logs  # the test is logged ...
    assert lab.password not in logs  # ... its password never


def test_the_cli_in_the_container_pulls_through_the_mounted_socket(
    lab: LabInfo, image: str, workdir: Path
) -> None:
    socket_dir = Path(lab.endpoint.removeprefix("unix://")).parent
    options = agent_options(lab, workdir / "cli", node=NODE, socket_dir=socket_dir, port=1)
    proc = run_once(
        image,
        options,
        "pull",
        lab.images["good"],
        "--json",
        "--resolv-conf=/host/etc/resolv.conf",
        f"--registry-config-path={CERTS_D}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["success"] is True


def test_runtime_down_the_agent_is_alive_not_ready_and_says_runtime_unavailable(
    lab: LabInfo, image: str, workdir: Path
) -> None:
    empty = workdir / "no-runtime"  # the socket's directory exists, containerd is not running
    empty.mkdir()
    with agent(lab, image, workdir / "down", node="down", socket_dir=empty) as down:
        anonymous = down.client(token=None)
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/readyz").status_code == 503
        inside = _inside(down, lab.images["good"])
    outside = _outside(lab, lab.images["good"], "--endpoint", f"unix://{empty}/containerd.sock")
    assert inside["cause"] == outside["cause"] == "runtime_unavailable"
    assert "/run/containerd/containerd.sock" in inside["summary"]


# --- the aggregator in front of containerised agents -------------------------------------------


@pytest.fixture(scope="module")
def cluster(
    lab: LabInfo, image: str, workdir: Path, lab_agent: Container
) -> Iterator[tuple[Container, dict[str, Container]]]:
    """The aggregator container over three agent containers: the lab's node and two more."""
    endpoints = control.ensure_nodes(lab, 2)
    with (
        agent(
            lab,
            image,
            workdir / "node-1",
            node="node-1",
            socket_dir=Path(endpoints["node-1"].removeprefix("unix://")).parent,
        ) as node_1,
        agent(
            lab,
            image,
            workdir / "node-2",
            node="node-2",
            socket_dir=Path(endpoints["node-2"].removeprefix("unix://")).parent,
        ) as node_2,
    ):
        agents = {NODE: lab_agent, "node-1": node_1, "node-2": node_2}
        urls = {node: c.url for node, c in agents.items()}
        with aggregator(lab, image, workdir / "aggregator", agents=urls) as front:
            yield front, agents


def test_the_aggregator_container_tests_every_containerised_agent(
    lab: LabInfo, cluster: tuple[Container, dict[str, Container]]
) -> None:
    front, agents = cluster
    client = front.client()
    assert front.client(token=None).get("/readyz").status_code == 200
    reply = client.get(
        "/v1/pulltest", params={"image": lab.images["good"], "mode": "pull", "timeout": "60"}
    )
    assert reply.status_code == 200, reply.text
    summary = reply.json()["summary"]
    assert (summary["nodes"], summary["ok"], summary["failed"]) == (3, 3, 0), summary
    assert not summary["digest_drift"]
    missing = client.get(
        "/v1/pulltest", params={"image": lab.images["missing_tag"], "mode": "resolve"}
    ).json()["summary"]
    assert missing["by_cause"] == {"manifest_not_found": sorted(agents)}


def test_cluster_pull_from_the_image_through_the_aggregator(
    lab: LabInfo, image: str, workdir: Path, cluster: tuple[Container, dict[str, Container]]
) -> None:
    front, _ = cluster
    options = aggregator_options(lab, workdir / "client", agents={}, port=1)
    proc = run_once(
        image,
        options,
        "cluster",
        "pull",
        lab.images["good"],
        "--mode=resolve",
        f"--url={front.url}",
        "--token-file=/var/run/secrets/pullcheck/token",
        "--json",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    body = json.loads(proc.stdout)
    assert body["summary"]["ok"] == 3 and sorted(n["node"] for n in body["nodes"]) == sorted(
        [NODE, "node-1", "node-2"]
    )


def test_the_manifests_name_this_image_and_command(image: str) -> None:
    """What the smoke test runs is what the manifests run: the same command and version."""
    for manifest, name in (AGENT, AGGREGATOR):
        container = Workload.load(manifest, name).container
        assert container["command"] == ["pullcheck"]
        assert container["image"].rsplit(":", 1)[1] == image.rsplit(":", 1)[1] == VERSION
