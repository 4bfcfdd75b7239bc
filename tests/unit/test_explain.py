"""``pullcheck explain``: whole pasted documents, the CLI, and arbitrary input."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.causes import Cause
from agent.cli import cli, main
from agent.explain import explain

ROOT = Path(__file__).resolve().parents[2]
CORPUS = {
    c["id"]: c
    for c in tomllib.loads((Path(__file__).parent / "data" / "real_errors.toml").read_text())[
        "case"
    ]
}

DESCRIBE = """\
Name:         web-7d4b9c
Namespace:    shop
Node:         worker-3/10.0.0.13
Containers:
  app:
    Image:          registry.example.com/shop/app:2.1
    State:          Waiting
      Reason:       ImagePullBackOff
  sidecar:
    Image:          nginx:1.99
    State:          Waiting
      Reason:       ErrImagePull
Events:
  Type     Reason     Age                  From               Message
  ----     ------     ----                 ----               -------
  Normal   Scheduled  3m                   default-scheduler  Successfully assigned shop/web-7d4b9c to worker-3
  Normal   Pulling    2m (x4 over 3m)      kubelet            Pulling image "registry.example.com/shop/app:2.1"
  Warning  Failed     2m (x4 over 3m)      kubelet            Failed to pull image "registry.example.com/shop/app:2.1": rpc error: code = Unknown desc = failed to pull and unpack image "registry.example.com/shop/app:2.1": failed to resolve reference "registry.example.com/shop/app:2.1": unexpected status from HEAD request to https://registry.example.com/v2/shop/app/manifests/2.1: 503 Service Unavailable
  Warning  Failed     2m (x3 over 3m)      kubelet            Failed to pull image "nginx:1.99": rpc error: code = NotFound desc = failed to pull and unpack image "docker.io/library/nginx:1.99": failed to resolve reference "docker.io/library/nginx:1.99": docker.io/library/nginx:1.99: not found
  Warning  Failed     2m (x7 over 3m)      kubelet            Error: ErrImagePull
  Normal   BackOff    1m (x9 over 3m)      kubelet            Back-off pulling image "registry.example.com/shop/app:2.1"
"""  # noqa: E501 - kubectl prints event rows this wide


def _main(argv: list[str], stdin: str = "") -> tuple[int, str]:
    """Run the real entry point (its return value is the exit status) with ``stdin``."""
    out = io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        pytest.MonkeyPatch.context() as patch,
        pytest.raises(SystemExit) as exited,
    ):
        patch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
        main(argv)
    assert isinstance(exited.value.code, int)
    return exited.value.code, out.getvalue()


def test_describe_with_two_failing_containers() -> None:
    found = {f.image: f for f in explain(DESCRIBE).findings}
    assert set(found) == {"registry.example.com/shop/app:2.1", "nginx:1.99"}
    app, nginx = found["registry.example.com/shop/app:2.1"], found["nginx:1.99"]
    assert app.cause is Cause.REGISTRY_ERROR and "503 Service Unavailable" in app.fragment
    assert app.count == 4 + 9 and app.node == "worker-3" and app.runtime == "containerd"
    assert app.confirm.startswith("pullcheck pull registry.example.com/shop/app:2.1")
    assert nginx.cause is Cause.MANIFEST_NOT_FOUND and nginx.count == 3


def test_document_built_from_corpus_texts() -> None:
    """A ticket pasting a journal line, a crictl failure and a kubeadm preflight error."""
    parts = [
        CORPUS[i]["text"]
        for i in (
            "sealos-journal-private-notfound",
            "crio-crictl-pinging-registry-timeout",
            "kubeadm-v1alpha2-imageservice",
        )
    ]
    causes = {f.cause for f in explain("\n\nand also:\n".join(parts)).findings}
    assert causes == {Cause.MANIFEST_NOT_FOUND, Cause.TIMEOUT, Cause.RUNTIME_UNAVAILABLE}


def test_credentials_in_the_paste_are_not_echoed() -> None:
    text = (
        'Failed to pull image "r.example/a:1": failed to do request: Head '
        '"https://bob:hunter2@r.example/v2/a/manifests/1": x509: certificate signed by unknown '
        "authority"
    )
    (finding,) = explain(text).findings
    assert finding.cause is Cause.TLS_ERROR
    assert "hunter2" not in json.dumps(finding.as_dict())


def test_text_without_pull_error() -> None:
    code, out = _main(["explain", "all pods are running"])
    assert code == 1 and "no image-pull error found" in out


def test_cli_json_from_stdin_and_exit_codes() -> None:
    code, out = _main(["explain", "--json", "-"], CORPUS["ghcr-sympozium-tag-missing"]["text"])
    body = json.loads(out)
    assert code == 0 and (body["pull_errors"], body["explained"], body["unknown"]) == (1, 1, 0)
    assert body["findings"][0]["cause"] == "manifest_not_found"
    code, out = _main(["explain", "--json", 'Back-off pulling image "nginx"'])
    assert code == 1 and json.loads(out)["unknown"] == 1


def test_cli_human_output_names_the_deciding_words() -> None:
    code, out = _main(["explain", CORPUS["docker-hub-manifest-503"]["text"]])
    assert code == 0 and "cause       registry_error" in out
    assert "decided by  …" in out and "503 Service Unavailable" in out


def test_cli_usage_error_mixing_stdin_and_text() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "explain", "--json", "-", "more"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 2 and json.loads(proc.stdout)["success"] is False


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=4000))
def test_random_text_never_crashes(text: str) -> None:
    result = explain(text).as_dict()
    assert result["pull_errors"] == result["explained"] + result["unknown"]


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=4000))
def test_random_bytes_through_the_cli_give_one_json_object(data: bytes) -> None:
    result = CliRunner().invoke(cli, ["explain", "--json", "-"], input=data)
    assert result.exit_code in (0, 1)
    assert isinstance(json.loads(result.output), dict)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(sorted(CORPUS)), min_size=1, max_size=4), st.text(max_size=200))
def test_corpus_texts_mixed_with_noise_never_crash(ids: list[str], noise: str) -> None:
    text = noise.join(CORPUS[i]["text"] for i in ids)
    assert all(f.cause in set(Cause) for f in explain(text).findings)
