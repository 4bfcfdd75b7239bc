"""The automatic pod diagnosis end to end on the lab: real agents on two lab nodes (each its own
containerd), the lab's htpasswd registry, a real ``pullcheck aggregator`` process with
``aggregator.pod_diagnosis`` on, reading the fake kube-apiserver (HTTPS, a service-account token)
with exactly the RBAC of ``manifests/components/pod-diagnosis/rbac.yaml``.

* a pod "scheduled" to node-1, waiting in ``ImagePullBackOff`` on the lab's ``private`` image,
  whose dockerconfigjson Secret has the registry key without its port: a ``PullcheckDiagnosis``
  Warning Event on the pod naming the key it has and the one it needs; the Secret fixed, the
  next test on node-1 pulls (a Normal Event) and the pod, running, drops out of ``/v1/pods``;
* a storm: 30 failing replicas on two nodes, under three Secret names with the same content →
  one pull test per node, counted in the registry's access log (as many manifest requests as
  two single tests make) and on the agents; a restarted aggregator counts the same 30 Events
  instead of writing twins;
* every request the diagnosis made was allowed by the component's RBAC, and every verb it
  grants was used;
* no password in any Event, metric, log, ``/v1/pods`` answer or traceback.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from lab import access, control
from lab.info import LabInfo
from lab.servers import Server, agent_config, merge, server
from tests.fakes import kube_objects as ko
from tests.fakes.kube_api import FakeKubeApi, Recorded, make_kube_tls, serve_kube_api

pytestmark = pytest.mark.lab

NS: Final = "shop"
AGGREGATOR_TOKEN: Final = "pod-diagnosis-sa-token"
AGGREGATOR_USER: Final = "system:serviceaccount:pullcheck:pullcheck-aggregator"
RBAC_FILE: Final = (
    Path(__file__).resolve().parents[2] / "manifests/components/pod-diagnosis/rbac.yaml"
)
NODES: Final = ("node-1", "node-2")
STORM_PASSWORD: Final = "storm-wrong-Pa55-61c7"
CALIBRATION_PASSWORD: Final = "calibration-wrong-Pa55-0e2b"
REASON: Final = "PullcheckDiagnosis"
WAIT: Final = 90.0  # seconds any one step may take on a busy machine (a bound, not a measure)


def _rbac_rules() -> list[dict[str, Any]]:
    docs = list(yaml.safe_load_all(RBAC_FILE.read_text()))
    [role] = [d for d in docs if d["kind"] == "ClusterRole"]
    rules: list[dict[str, Any]] = role["rules"]
    return rules


def _granted() -> set[tuple[str, str]]:
    """(verb, resource) pairs the component grants, all in the core group."""
    pairs = set()
    for rule in _rbac_rules():
        assert rule["apiGroups"] == [""], rule
        pairs |= {(verb, resource) for verb in rule["verbs"] for resource in rule["resources"]}
    return pairs


@pytest.fixture(scope="module")
def kube_api(workdir: Path) -> Iterator[FakeKubeApi]:
    tls = make_kube_tls(workdir / "diag-kube-pki")
    with serve_kube_api(tls) as api:
        api.add_user(AGGREGATOR_TOKEN, AGGREGATOR_USER)
        for rule in _rbac_rules():  # a ClusterRoleBinding: every namespace
            for resource in rule["resources"]:
                api.grant(AGGREGATOR_USER, resource, rule["verbs"], namespace="*")
        api.put(ko.service_account("default", NS))
        (workdir / "diag-kube-token").write_text(AGGREGATOR_TOKEN + "\n")
        (workdir / "diag-kube-ca.crt").write_bytes(tls.ca_file.read_bytes())
        yield api


@pytest.fixture(scope="module")
def node_agents(lab: LabInfo, workdir: Path) -> Iterator[dict[str, Server]]:
    endpoints = control.ensure_nodes(lab, len(NODES))
    with ExitStack() as stack:
        yield {
            name: stack.enter_context(
                server(
                    "agent",
                    agent_config(lab, workdir / "token", endpoints[name]),
                    workdir,
                    name=f"diag-{name}",
                    node=name,
                )
            )
            for name in NODES
        }


def _aggregator_config(
    lab: LabInfo, workdir: Path, agents: dict[str, Server], api: FakeKubeApi
) -> dict[str, Any]:
    static = [f"{name}={srv.url.removeprefix('http://')}" for name, srv in agents.items()]
    return merge(
        agent_config(lab, workdir / "token", lab.endpoint),
        {
            "aggregator": {
                "node_timeout": 60,
                # the lab's agents speak plain HTTP; without this the aggregator refuses to
                # send them the pod's credentials (tests/unit/test_pod_watch.py)
                "allow_plain_http_credentials": True,
                "leader_election": {"mode": "always"},
                "discovery": {
                    "mode": "static",
                    "agents": static,
                    "api_url": api.url,
                    "api_token_file": str(workdir / "diag-kube-token"),
                    "api_ca_file": str(workdir / "diag-kube-ca.crt"),
                },
                "pod_diagnosis": {"enabled": True, "watch_timeout": 10, "namespaces": [NS]},
            }
        },
    )


# --- helpers ----------------------------------------------------------------------------------


def _until(check: Callable[[], bool], what: str, seconds: float = WAIT) -> None:
    """Wait for a condition (a bound on waiting, not an assertion about speed)."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.1)


def _events(api: FakeKubeApi, prefix: str) -> list[dict[str, Any]]:
    return [
        e
        for e in api.stored("Event", NS)
        if e.get("reason") == REASON and e["involvedObject"]["name"].startswith(prefix)
    ]


def _runtime_401(image: str) -> str:
    """kubelet's ErrImagePull text for the htpasswd registry without usable credentials
    (containerd 1.6, lab/OBSERVED.md)."""
    host = image.split("/", 1)[0]
    return (
        f'rpc error: code = Unknown desc = failed to pull and unpack image "{image}": failed to '
        f'resolve reference "{image}": pulling from host {host} failed with status code '
        "[manifests 1.0]: 401 Unauthorized"
    )


def _failing(
    name: str, node: str, image: str, secret: str, reason: ko.WaitingReason = "ImagePullBackOff"
) -> dict[str, Any]:
    container = ko.Container("app", image, waiting=reason, error=_runtime_401(image))
    return ko.pod(name, NS, node=node, pull_secrets=[secret], containers=[container])


def _diagnoses(aggregator: Server) -> dict[str, Any]:
    with aggregator.client() as client:
        answer = client.get("/v1/pods", params={"namespace": NS})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text ``text`` (0 when absent)."""
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        metric, _, rest = sample.partition("{")
        if metric != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return 0.0


def _metrics(srv: Server) -> str:
    with srv.client() as client:
        answer = client.get("/metrics")
    assert answer.status_code == 200
    return answer.text


def _agent_requests(agents: dict[str, Server]) -> dict[str, float]:
    """Pull-test requests each agent answered (fresh, reused, shared and rejected)."""
    found = {}
    for name, srv in agents.items():
        text = _metrics(srv)
        found[name] = sum(
            _metric(text, "pullcheck_pulltest_requests_total", outcome=outcome)
            for outcome in ("fresh", "reused", "shared", "rejected")
        )
    return found


def _manifest_requests(lab: LabInfo, repository: str, since: access.Mark) -> int:
    return access.count_requests(
        lab, "auth", path_contains=f"/v2/{repository}/manifests/", since=since
    )


def _verb_and_resource(request: Recorded) -> tuple[str, str]:
    """The RBAC verb and resource of a request under /api/v1 (kube-apiserver's request info)."""
    parts = request.path.strip("/").split("/")[2:]  # after api/v1
    if parts[:1] == ["namespaces"] and len(parts) > 2:
        parts = parts[2:]
    resource, named = parts[0], len(parts) > 1
    if request.method == "GET":
        watching = request.query.get("watch", [""])[0] in ("1", "true")
        verb = "watch" if watching else ("get" if named else "list")
    else:
        verb = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[
            request.method
        ]
    return verb, resource


# --- the test ---------------------------------------------------------------------------------


def test_pod_diagnosis_on_the_lab(
    lab: LabInfo, workdir: Path, kube_api: FakeKubeApi, node_agents: dict[str, Server]
) -> None:
    private = lab.images["private"]  # auth.pullcheck.test:15444/pullcheck/private:1.0
    registry = lab.registries["auth"]
    host = registry.rsplit(":", 1)[0]
    repository = private.split("/", 1)[1].rsplit(":", 1)[0]
    creds = (lab.username, lab.password)
    config = _aggregator_config(lab, workdir, node_agents, kube_api)
    logs: list[str] = []

    # 1. the registry key without its port: kubelet (and the agent) match no entry
    kube_api.put(ko.dockerconfigjson_secret("regcred", NS, {host: creds}))
    kube_api.put(_failing("web-0", "node-1", private, "regcred"))
    with server("aggregator", config, workdir, name="diag-aggregator") as aggregator:
        _until(lambda: bool(_events(kube_api, "web-0")), "the Event on web-0")
        [event] = _events(kube_api, "web-0")
        assert event["type"] == "Warning"
        assert event["involvedObject"]["kind"] == "Pod"
        assert event["involvedObject"]["fieldPath"] == "spec.containers{app}"
        message = event["message"]
        assert message.startswith("unauthorized: "), message
        assert f"no entry for {registry}" in message, message  # the key it needs
        assert f"Near miss: {host} " in message, message  # the key it has
        assert "ports must be equal" in message, message
        answer = _diagnoses(aggregator)
        [diagnosis] = answer["pods"]
        assert (diagnosis["pod"], diagnosis["node"], diagnosis["cause"]) == (
            "web-0",
            "node-1",
            "unauthorized",
        )
        outputs = [json.dumps(answer)]

        # 2. the Secret fixed; kubelet pulls again (ErrImagePull): the test on node-1 passes
        kube_api.put(ko.dockerconfigjson_secret("regcred", NS, {registry: creds}))
        kube_api.put(_failing("web-0", "node-1", private, "regcred", reason="ErrImagePull"))
        _until(
            lambda: any(e["type"] == "Normal" for e in _events(kube_api, "web-0")),
            "the passing verdict",
        )
        [ok] = [e for e in _events(kube_api, "web-0") if e["type"] == "Normal"]
        assert ok["message"].startswith(f"ok: node node-1 pulled {private}"), ok["message"]
        # the pod starts: it drops out
        running = ko.pod(
            "web-0", NS, node="node-1", pull_secrets=["regcred"],
            containers=[ko.Container("app", private)],
        )  # fmt: skip
        kube_api.put(running)
        _until(lambda: _diagnoses(aggregator)["pods"] == [], "web-0 dropped out")

        # 3. the storm. First, what one test costs the registry (a direct test, own creds)
        before = access.mark(lab)
        wrong = {"auths": {registry: {"username": lab.username, "password": CALIBRATION_PASSWORD}}}
        with node_agents["node-1"].client() as client:
            single = client.post(
                "/v1/pulltest", json={"image": private, "mode": "pull", "docker_config": wrong}
            )
        assert single.status_code == 200 and single.json()["cause"] == "unauthorized"
        per_test = _manifest_requests(lab, repository, before)
        assert per_test >= 1
        tests_before = _metric(_metrics(aggregator), "pullcheck_pod_tests_total", outcome="fresh")
        agents_before = _agent_requests(node_agents)
        start = access.mark(lab)
        names = ("storm-a", "storm-b", "storm-c")  # three names, one content: one fingerprint
        for name in names:
            kube_api.put(
                ko.dockerconfigjson_secret(name, NS, {registry: (lab.username, STORM_PASSWORD)})
            )
        for number in range(30):
            kube_api.put(_failing(f"storm-{number}", NODES[number % 2], private, names[number % 3]))
        _until(lambda: len(_events(kube_api, "storm-")) == 30, "an Event on each replica")
        assert _manifest_requests(lab, repository, start) == len(NODES) * per_test
        agents_after = _agent_requests(node_agents)
        assert {n: agents_after[n] - agents_before[n] for n in NODES} == dict.fromkeys(NODES, 1)
        metrics = _metrics(aggregator)
        assert _metric(metrics, "pullcheck_pod_tests_total", outcome="fresh") == tests_before + 2
        storm = _events(kube_api, "storm-")
        assert {e["message"].split(":", 1)[0] for e in storm} == {"unauthorized"}
        assert all(e["count"] == 1 and e["type"] == "Warning" for e in storm)
        answer = _diagnoses(aggregator)
        assert len(answer["pods"]) == 30
        assert {(d["node"], d["cause"]) for d in answer["pods"]} == {
            ("node-1", "unauthorized"),
            ("node-2", "unauthorized"),
        }
        outputs += [json.dumps(answer), metrics]
        assert 'cause="unauthorized"' in metrics and "storm-" not in metrics
    logs.append(aggregator.log_text())

    # 4. a restarted aggregator: the same verdicts count the same Events, no twins
    with server("aggregator", config, workdir, name="diag-aggregator-2") as aggregator:
        _until(
            lambda: all(e["count"] == 2 for e in _events(kube_api, "storm-")),
            "the Events counted again",
        )
        assert len(_events(kube_api, "storm-")) == 30
        outputs += [json.dumps(_diagnoses(aggregator)), _metrics(aggregator)]
    logs.append(aggregator.log_text())
    logs += [srv.log_text() for srv in node_agents.values()]
    outputs += [_metrics(srv) for srv in node_agents.values()]

    # the aggregator used exactly what the component grants, and was never refused
    mine = [r for r in kube_api.requests if r.user == AGGREGATOR_USER]
    assert not [r for r in mine if r.status == 403], "a request the RBAC does not allow"
    used = {_verb_and_resource(r) for r in mine}
    assert used == _granted(), f"used {sorted(used)}, granted {sorted(_granted())}"

    # no password anywhere: Events, /v1/pods, metrics, logs (tracebacks included: none)
    outputs += [json.dumps(e) for e in kube_api.stored("Event")]
    outputs += logs
    everything = "\n".join(outputs)
    for password in (lab.password, STORM_PASSWORD, CALIBRATION_PASSWORD):
        assert password not in everything
    for log in logs:
        assert "Traceback" not in log
