"""The caller's cluster configuration is found as kubectl finds it (agent/kube/config.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.kube import config
from agent.kube.config import KubeConfigError


def _write(path: Path, server: str, *, context: str = "c", namespace: str | None = None,
           current: str | None = "c", ca: str | None = None) -> Path:  # fmt: skip
    cluster: dict[str, str] = {"server": server}
    if ca:
        cluster["certificate-authority"] = ca
    ctx: dict[str, str] = {"cluster": context, "user": context}
    if namespace:
        ctx["namespace"] = namespace
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": cluster}],
        "users": [{"name": context, "user": {"token": "t"}}],
        "contexts": [{"name": context, "context": ctx}],
        **({"current-context": current} if current else {}),
    }
    path.write_text(json.dumps(document))
    return path


def test_kubeconfig_list_merges_first_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = _write(tmp_path / "a", "https://a:6443", current=None, namespace="team-a")
    b = _write(tmp_path / "b", "https://b:6443", current="c")
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}:{a}:{b}")
    target = config.load()
    assert target.server == "https://a:6443"  # context "c" was defined first by a
    assert target.namespace == "team-a"
    assert config.load(namespace="other").namespace == "other"
    with pytest.raises(KubeConfigError, match="Context 'nope' not found"):
        config.load(context="nope")


def test_relative_ca_path_resolves_against_its_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = _write(tmp_path / "conf" / "kc", "https://a:6443", ca="ca.crt")
    target = config.load(str(path))
    assert target.config.cluster.certificate_auth == str(tmp_path / "conf" / "ca.crt")
    assert target.namespace == "default"


def test_no_configuration_and_in_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeConfigError, match="no kubeconfig: pass --kubeconfig"):
        config.load()
    account = tmp_path / "sa"
    account.mkdir()
    (account / "token").write_text("sa-token")
    (account / "namespace").write_text("pullcheck")
    (account / "ca.crt").write_text("")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    target = config.load(service_account=account)
    assert (target.server, target.namespace) == ("https://10.96.0.1:443", "pullcheck")
    assert target.source == "in-cluster service account"


def test_bad_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match=r"kubeconfig .*/absent: No such file"):
        config.load(str(tmp_path / "absent"))
    listy = tmp_path / "list"
    listy.write_text("- a\n- b\n")
    with pytest.raises(KubeConfigError, match="expected a mapping"):
        config.load(str(listy))
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(KubeConfigError, match="no clusters or no contexts"):
        config.load(str(empty))
