"""The CRI proto subset: generated modules are current, v1 and v1alpha2 share the wire format."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cri import transport
from agent.cri._pb.runtime.v1 import api_pb2 as v1
from agent.cri._pb.runtime.v1 import api_pb2_grpc as v1_grpc
from agent.cri._pb.runtime.v1alpha2 import api_pb2 as v1alpha2
from agent.cri._pb.runtime.v1alpha2 import api_pb2_grpc as v1alpha2_grpc

REPO = Path(__file__).resolve().parents[2]
GENERATE = REPO / "proto" / "generate.py"


def test_generated_modules_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATE), "--check"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_reports_stale_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("_pullcheck_generate", GENERATE)
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    fake = tmp_path / "agent" / "cri" / "_pb"
    generate.generate(tmp_path)
    (fake / "runtime" / "v1" / "api_pb2.py").write_text("# edited\n")
    (fake / "runtime" / "v1alpha2" / "api_pb2.pyi").unlink()
    (fake / "leftover_pb2.py").write_text("")
    monkeypatch.setattr(generate, "OUT_DIR", fake)
    stale = generate.stale_files()
    assert stale == [
        "agent/cri/_pb/leftover_pb2.py (not generated from proto/; remove it)",
        "agent/cri/_pb/runtime/v1/api_pb2.py (out of date)",
        "agent/cri/_pb/runtime/v1alpha2/api_pb2.pyi (missing)",
    ]
    assert generate.main(["--check"]) == 1


def test_modules_import_through_package_path() -> None:
    assert v1.DESCRIPTOR.package == "runtime.v1"
    assert v1alpha2.DESCRIPTOR.package == "runtime.v1alpha2"
    assert v1.DESCRIPTOR.name == "agent/cri/_pb/runtime/v1/api.proto"
    # the grpc module imports its messages by package path (no rewriting needed)
    assert v1 in vars(v1_grpc).values()
    assert v1alpha2 in vars(v1alpha2_grpc).values()


def _full_pull_request() -> v1.PullImageRequest:
    return v1.PullImageRequest(
        image=v1.ImageSpec(image="registry.example:5000/team/app:1.0", annotations={"a": "b"}),
        auth=v1.AuthConfig(
            username="u",
            password="p",
            auth="dTpw",
            server_address="registry.example:5000",
            identity_token="it",
            registry_token="rt",
        ),
        sandbox_config=v1.PodSandboxConfig(
            metadata=v1.PodSandboxMetadata(name="pod", uid="uid-1", namespace="ns", attempt=2),
            hostname="h",
            log_directory="/var/log/pods/x",
            labels={"app": "x"},
            annotations={"k": "v"},
        ),
    )


def test_v1_message_parses_as_v1alpha2() -> None:
    req = _full_pull_request()
    alpha = v1alpha2.PullImageRequest.FromString(req.SerializeToString())
    assert alpha.image.image == "registry.example:5000/team/app:1.0"
    assert dict(alpha.image.annotations) == {"a": "b"}
    assert (alpha.auth.username, alpha.auth.password, alpha.auth.auth) == ("u", "p", "dTpw")
    assert alpha.auth.server_address == "registry.example:5000"
    assert (alpha.auth.identity_token, alpha.auth.registry_token) == ("it", "rt")
    md = alpha.sandbox_config.metadata
    assert (md.name, md.uid, md.namespace, md.attempt) == ("pod", "uid-1", "ns", 2)
    assert alpha.sandbox_config.hostname == "h"
    assert alpha.sandbox_config.log_directory == "/var/log/pods/x"
    assert dict(alpha.sandbox_config.labels) == {"app": "x"}
    assert dict(alpha.sandbox_config.annotations) == {"k": "v"}
    # and back: identical bytes
    assert v1.PullImageRequest.FromString(alpha.SerializeToString()) == req
    assert transport.to_v1alpha2(req) == alpha


def test_v1alpha2_response_parses_as_v1() -> None:
    alpha = v1alpha2.ImageStatusResponse(
        image=v1alpha2.Image(
            id="sha256:abc",
            repo_tags=["r/x:1"],
            repo_digests=["r/x@sha256:def"],
            size=1234,
            uid=v1alpha2.Int64Value(value=0),
            username="nobody",
            spec=v1alpha2.ImageSpec(image="r/x:1"),
            pinned=True,
        ),
        info={"k": "{}"},
    )
    got = v1.ImageStatusResponse.FromString(alpha.SerializeToString())
    assert got.HasField("image")
    assert got.image.id == "sha256:abc"
    assert list(got.image.repo_tags) == ["r/x:1"]
    assert list(got.image.repo_digests) == ["r/x@sha256:def"]
    assert got.image.size == 1234
    assert got.image.HasField("uid") and got.image.uid.value == 0
    assert got.image.username == "nobody"
    assert got.image.pinned is True
    fs = v1alpha2.ImageFsInfoResponse(
        image_filesystems=[
            v1alpha2.FilesystemUsage(
                timestamp=7,
                fs_id=v1alpha2.FilesystemIdentifier(mountpoint="/m"),
                used_bytes=v1alpha2.UInt64Value(value=2**40),
                inodes_used=v1alpha2.UInt64Value(value=9),
            )
        ]
    )
    got_fs = v1.ImageFsInfoResponse.FromString(fs.SerializeToString()).image_filesystems[0]
    assert (got_fs.timestamp, got_fs.fs_id.mountpoint) == (7, "/m")
    assert (got_fs.used_bytes.value, got_fs.inodes_used.value) == (2**40, 9)


def test_v1_only_fields_have_upstream_numbers() -> None:
    spec = v1.ImageSpec.DESCRIPTOR.fields_by_name
    assert {n: spec[n].number for n in spec} == {
        "image": 1,
        "annotations": 2,
        "user_specified_image": 18,
        "runtime_handler": 19,
        "image_ref": 20,
    }
    assert set(v1alpha2.ImageSpec.DESCRIPTOR.fields_by_name) == {"image", "annotations"}
    auth = v1.AuthConfig.DESCRIPTOR.fields_by_name
    assert [(n, auth[n].number) for n in auth] == [
        ("username", 1),
        ("password", 2),
        ("auth", 3),
        ("server_address", 4),
        ("identity_token", 5),
        ("registry_token", 6),
    ]
    status = v1.StatusResponse.DESCRIPTOR.fields_by_name
    assert status["runtime_handlers"].number == 3 and status["features"].number == 4


def test_shared_messages_have_identical_fields() -> None:
    """Every message both packages declare has the same field names, numbers and types."""
    shared = set(v1.DESCRIPTOR.message_types_by_name) & set(
        v1alpha2.DESCRIPTOR.message_types_by_name
    )
    assert len(shared) >= 25
    v1_only = {"ImageSpec": {18, 19, 20}, "StatusResponse": {3, 4}, "ImageFsInfoResponse": {2}}
    for name in sorted(shared):
        a = v1.DESCRIPTOR.message_types_by_name[name]
        b = v1alpha2.DESCRIPTOR.message_types_by_name[name]
        fields_a = {
            f.number: (f.name, f.type, f.is_repeated)
            for f in a.fields
            if f.number not in v1_only.get(name, set())
        }
        fields_b = {f.number: (f.name, f.type, f.is_repeated) for f in b.fields}
        assert fields_a == fields_b, name


def test_method_paths() -> None:
    assert transport.PULL_IMAGE.path("v1") == "/runtime.v1.ImageService/PullImage"
    assert transport.PULL_IMAGE.path("v1alpha2") == "/runtime.v1alpha2.ImageService/PullImage"
    for module, package in ((v1, "runtime.v1"), (v1alpha2, "runtime.v1alpha2")):
        image = module.DESCRIPTOR.services_by_name["ImageService"]
        runtime = module.DESCRIPTOR.services_by_name["RuntimeService"]
        assert image.full_name == f"{package}.ImageService"
        assert [m.name for m in image.methods] == [
            "ListImages",
            "ImageStatus",
            "PullImage",
            "RemoveImage",
            "ImageFsInfo",
        ]
        assert [m.name for m in runtime.methods] == ["Version", "Status"]
    # the generated stubs register exactly these paths
    seen: list[str] = []

    class _Recorder:
        def unary_unary(self, path: str, **_: object) -> str:
            seen.append(path)
            return path

    v1_grpc.ImageServiceStub(_Recorder())  # type: ignore[call-overload]
    v1alpha2_grpc.ImageServiceStub(_Recorder())  # type: ignore[call-overload]
    assert "/runtime.v1.ImageService/PullImage" in seen
    assert "/runtime.v1alpha2.ImageService/PullImage" in seen
