"""``pullcheck pod`` with an aggregator, on the lab: real agents on lab nodes (own containerd),
real registries, a real aggregator reading the fake kube-apiserver (HTTPS, a service account
token) with its own permissions, and the CLI reading it with the caller's.

* a pod "scheduled" to a lab node whose pull secret has the registry key without its port: the
  pull test on that node with the pod's secrets (read by the aggregator, never by the CLI)
  fails ``unauthorized`` and the CLI names the mismatch; after the Secret is fixed the next test
  on that node pulls, and the command exits 0;
* ``imagePullPolicy`` against the nodes' images (``GET /v1/agents/{node}/images``): an image
  loaded on a node with policy ``Always``, ``Never`` with the image on another node only, the
  wanted tag absent while the node holds the repository under another tag;
* the registry password is in no output of the CLI and in no log line of the aggregator.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from lab import cri
from lab.info import LabInfo
from lab.servers import Server, agent_config, copy_in_plain_registry, merge, server
from tests.fakes import kube_objects as ko
from tests.fakes.kube_api import FakeKubeApi, make_kube_tls, serve_kube_api

pytestmark = pytest.mark.lab

NS = "shop"
AGGREGATOR_TOKEN, AGGREGATOR_USER = "agg-sa-token", "system:serviceaccount:pullcheck:aggregator"
CALLER_TOKEN, CALLER = "dev-token", "dev@example.com"
LOCAL_REPO = "pullcheck/podcli"  # copied from good:1.0 under :dev, loaded onto node-2 only


@pytest.fixture(scope="module")
def kube_api(workdir: Path) -> Iterator[FakeKubeApi]:
    tls = make_kube_tls(workdir / "kube-pki")
    with serve_kube_api(tls) as api:
        api.add_user(AGGREGATOR_TOKEN, AGGREGATOR_USER)
        for resource in ("pods", "secrets", "serviceaccounts"):
            api.grant(AGGREGATOR_USER, resource, ("get",), namespace=NS)
        api.add_user(CALLER_TOKEN, CALLER)
        for resource in ("pods", "events", "secrets", "serviceaccounts"):
            api.grant(CALLER, resource, ("get", "list"), namespace=NS)
        api.put(ko.service_account("default", NS))
        (workdir / "kube-token").write_text(AGGREGATOR_TOKEN + "\n")
        (workdir / "kube-ca.crt").write_bytes(tls.ca_file.read_bytes())
        api.kubeconfig(workdir / "kubeconfig", CALLER_TOKEN, namespace=NS, ca_file=tls.ca_file)
        yield api


@pytest.fixture(scope="module")
def aggregator(
    lab: LabInfo, workdir: Path, agents: dict[str, Server], kube_api: FakeKubeApi
) -> Iterator[Server]:
    static = [f"{name}={srv.url.removeprefix('http://')}" for name, srv in agents.items()]
    config = merge(
        agent_config(lab, workdir / "token", lab.endpoint),
        {
            "aggregator": {
                "node_timeout": 60,
                "allow_plain_http_credentials": True,  # the lab's agents speak plain HTTP
                "discovery": {
                    "mode": "static",
                    "agents": static,
                    "api_url": kube_api.url,
                    "api_token_file": str(workdir / "kube-token"),
                    "api_ca_file": str(workdir / "kube-ca.crt"),
                },
            }
        },
    )
    with server("aggregator", config, workdir) as srv:
        yield srv


@pytest.fixture(scope="module")
def loaded(lab: LabInfo, agents: dict[str, Server]) -> Iterator[str]:
    """``podcli:dev`` present on node-2 only (as ``kind load`` would leave it)."""
    image = f"{lab.registries['plain']}/{LOCAL_REPO}:dev"
    copy_in_plain_registry("pullcheck/good:1.0", f"{LOCAL_REPO}:dev")
    endpoints = lab.nodes
    cri.pull(endpoints["node-2"], image)
    try:
        yield image
    finally:
        cri.remove(endpoints["node-2"], image)


def _pod_cli(workdir: Path, aggregator: Server, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        pytest.raises(SystemExit) as exited,
    ):
        main(
            [
                "pod",
                *argv,
                "--kubeconfig",
                str(workdir / "kubeconfig"),
                "--aggregator",
                aggregator.url,
                "--token-file",
                str(workdir / "token"),
            ]
        )
    assert isinstance(exited.value.code, int)
    return exited.value.code, out.getvalue(), err.getvalue()


def _report(workdir: Path, aggregator: Server, name: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = _pod_cli(workdir, aggregator, name, "--json")
    return code, json.loads(out)


def _waiting_pod(
    name: str, node: str, image: str, *, policy: str | None = None, secrets: tuple[str, ...] = ()
) -> dict[str, Any]:
    error = (
        f'rpc error: code = Unknown desc = failed to pull and unpack image "{image}": failed '
        f'to resolve reference "{image}": unexpected status from HEAD request: 401 Unauthorized'
    )
    reason: ko.WaitingReason = "ErrImageNeverPull" if policy == "Never" else "ErrImagePull"
    return ko.pod(
        name,
        NS,
        node=node,
        pull_secrets=secrets,
        containers=[ko.Container("app", image, policy=policy, waiting=reason, error=error)],
    )


def test_wrong_secret_key_then_fixed_secret_pulls_on_the_node(
    lab: LabInfo, workdir: Path, kube_api: FakeKubeApi, aggregator: Server
) -> None:
    private = lab.images["private"]  # auth.pullcheck.test:15444/… behind htpasswd
    host = lab.registries["auth"].rsplit(":", 1)[0]
    creds = (lab.username, lab.password)
    kube_api.put(ko.dockerconfigjson_secret("regcred", NS, {host: creds}))  # no port: no match
    kube_api.put(_waiting_pod("web", "node-1", private, secrets=("regcred",)))

    code, report = _report(workdir, aggregator, "web")
    assert code == 1, report
    [container] = report["containers"]
    result = container["pull_test"]
    assert result is not None, container["pull_test_error"]
    assert result["node"] == "node-1"
    assert result["cause"] == "unauthorized"
    assert container["cause"] == "unauthorized"
    assert container["pull_secrets"]["status"] == "no_match"
    assert f'add an entry for "{lab.registries["auth"]}"' in container["pull_secrets"]["fix"]
    assert "ports must be equal" in container["pull_secrets"]["detail"]
    code, text, _ = _pod_cli(workdir, aggregator, "web")
    assert code == 1
    assert "pull test on node-1" in text and "unauthorized" in text

    kube_api.put(ko.dockerconfigjson_secret("regcred", NS, {lab.registries["auth"]: creds}))
    code, report = _report(workdir, aggregator, "web")
    assert code == 0, report
    [container] = report["containers"]
    assert container["pull_test"]["success"] is True
    assert container["cause"] == "ok"
    assert container["pull_secrets"]["matched"] == [lab.registries["auth"]]

    outputs = [json.dumps(report), text]
    for argv in (("web",), ("web", "-v"), ("web", "--json")):
        outputs.append("".join(_pod_cli(workdir, aggregator, *argv)[1:]))
    everything = "\n".join([*outputs, aggregator.log_text()])
    assert lab.password not in everything


def test_policy_against_the_nodes_images(
    lab: LabInfo, workdir: Path, kube_api: FakeKubeApi, aggregator: Server, loaded: str
) -> None:
    repository = loaded.rsplit(":", 1)[0]
    kube_api.put(_waiting_pod("always", "node-2", loaded, policy="Always"))
    kube_api.put(_waiting_pod("never", "node-1", loaded, policy="Never"))
    kube_api.put(_waiting_pod("tagged", "node-2", f"{repository}:v1.0.0"))

    _, report = _report(workdir, aggregator, "always")
    kinds = {p["kind"]: p for p in report["containers"][0]["policy"]}
    assert "always_with_local_image" in kinds
    assert "node-2" in kinds["always_with_local_image"]["summary"]

    code, report = _report(workdir, aggregator, "never")
    assert code == 1
    [container] = report["containers"]
    trap = next(p for p in container["policy"] if p["kind"] == "never_absent")
    assert trap["nodes"] == ["node-2"]
    assert container["cause"] == "image_never_pull"
    assert "node-2" in container["summary"]

    _, report = _report(workdir, aggregator, "tagged")
    [container] = report["containers"]
    trap = next(p for p in container["policy"] if p["kind"] == "tag_absent_other_tags")
    assert trap["tags"] == ["dev"]
    assert container["pull_test"]["cause"] == "manifest_not_found"  # tested on node-2, for real
