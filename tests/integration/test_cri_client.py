"""agent.cri against a fake in-process CRI server (always) and the lab's real containerd (``lab``).

The fake server speaks real gRPC on a unix socket in tmp_path and records what arrives, so the
exact request shape, deadlines, cancellation and the v1alpha2 fallback are checked on the wire.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from google.protobuf.message import Message

import agent.cri.endpoint as cri_endpoint
from agent.credentials import Credential
from agent.cri import (
    CriError,
    InvalidEndpoint,
    RuntimeUnavailable,
    SandboxConfig,
    connect,
    normalize,
)
from agent.cri._pb.runtime.v1 import api_pb2 as v1
from lab.info import LabInfo

SECRET = "s3cr3t-Pa55word"

# --------------------------------------------------------------------------------------------
# fake CRI server
# --------------------------------------------------------------------------------------------

Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Message]]


@dataclass
class Seen:
    path: str
    request: Message
    time_remaining: float | None


@dataclass
class FakeRuntime:
    """What the fake answers; every request is recorded in ``seen``."""

    pull: Callable[[v1.PullImageRequest, grpc.aio.ServicerContext[Any, Any]], Awaitable[str]]
    images: dict[str, v1.Image] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    pull_cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    fs_info_broken: bool = False

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]


async def _default_pull(req: v1.PullImageRequest, ctx: grpc.aio.ServicerContext[Any, Any]) -> str:
    return "sha256:" + "a" * 64


def _handlers(fake: FakeRuntime, package: str) -> list[grpc.GenericRpcHandler[Any, Any]]:
    """CRI handlers registered under ``package`` (v1 messages: the wire format is shared)."""

    def wrap(path: str, fn: Callable[[Any], Awaitable[Message]]) -> Handler:
        async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
            fake.seen.append(Seen(path, request, context.time_remaining()))
            return await fn(request)

        return handler

    async def version(req: v1.VersionRequest) -> Message:
        return v1.VersionResponse(
            version="0.1.0",
            runtime_name="fake",
            runtime_version="9.9",
            runtime_api_version=package.split(".")[1],
        )

    async def status(req: v1.StatusRequest) -> Message:
        return v1.StatusResponse(
            status=v1.RuntimeStatus(
                conditions=[
                    v1.RuntimeCondition(type="RuntimeReady", status=True),
                    v1.RuntimeCondition(
                        type="NetworkReady", status=False, reason="NoCNI", message="none"
                    ),
                ]
            ),
            runtime_handlers=[v1.RuntimeHandler(name="runc")],
        )

    async def image_fs_info(req: v1.ImageFsInfoRequest) -> Message:
        if fake.fs_info_broken:
            raise RuntimeError("image filesystem is broken")
        return v1.ImageFsInfoResponse(
            image_filesystems=[
                v1.FilesystemUsage(
                    timestamp=42,
                    fs_id=v1.FilesystemIdentifier(mountpoint="/var/lib/fake"),
                    used_bytes=v1.UInt64Value(value=1000),
                )
            ]
        )

    async def list_images(req: v1.ListImagesRequest) -> Message:
        return v1.ListImagesResponse(images=list(fake.images.values()))

    async def image_status(req: v1.ImageStatusRequest) -> Message:
        image = fake.images.get(req.image.image)
        return v1.ImageStatusResponse(image=image) if image else v1.ImageStatusResponse()

    async def remove_image(req: v1.RemoveImageRequest) -> Message:
        fake.images.pop(req.image.image, None)
        return v1.RemoveImageResponse()

    def unary(path: str, fn: Callable[[Any], Awaitable[Message]], req: type[Message]) -> Any:
        return grpc.unary_unary_rpc_method_handler(
            wrap(path, fn),
            request_deserializer=req.FromString,
            response_serializer=lambda m: m.SerializeToString(),
        )

    async def pull_handler(
        request: v1.PullImageRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Message:
        path = f"/{package}.ImageService/PullImage"
        fake.seen.append(Seen(path, request, context.time_remaining()))
        try:
            return v1.PullImageResponse(image_ref=await fake.pull(request, context))
        except asyncio.CancelledError:
            fake.pull_cancelled.set()
            raise

    image_methods: dict[str, Any] = {
        name: unary(f"/{package}.ImageService/{name}", fn, req)
        for name, fn, req in (
            ("ImageFsInfo", image_fs_info, v1.ImageFsInfoRequest),
            ("ListImages", list_images, v1.ListImagesRequest),
            ("ImageStatus", image_status, v1.ImageStatusRequest),
            ("RemoveImage", remove_image, v1.RemoveImageRequest),
        )
    }
    image_methods["PullImage"] = grpc.unary_unary_rpc_method_handler(
        pull_handler,
        request_deserializer=v1.PullImageRequest.FromString,
        response_serializer=lambda m: m.SerializeToString(),
    )
    runtime_methods: dict[str, Any] = {
        name: unary(f"/{package}.RuntimeService/{name}", fn, req)
        for name, fn, req in (
            ("Version", version, v1.VersionRequest),
            ("Status", status, v1.StatusRequest),
        )
    }
    return [
        grpc.method_handlers_generic_handler(f"{package}.ImageService", image_methods),
        grpc.method_handlers_generic_handler(f"{package}.RuntimeService", runtime_methods),
    ]


@dataclass
class FakeServer:
    path: Path
    runtime: FakeRuntime

    @property
    def endpoint(self) -> str:
        return f"unix://{self.path}"


async def _serve(path: Path, packages: tuple[str, ...]) -> tuple[grpc.aio.Server, FakeServer]:
    runtime = FakeRuntime(pull=_default_pull)
    server = grpc.aio.server()
    # some non-CRI service, like containerd's own API when its CRI plugin is disabled
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("other.Service", {})])
    for package in packages:
        server.add_generic_rpc_handlers(_handlers(runtime, package))
    server.add_insecure_port(f"unix://{path}")
    await server.start()
    return server, FakeServer(path, runtime)


@pytest_asyncio.fixture(loop_scope="function")
async def fake_v1(tmp_path: Path) -> AsyncIterator[FakeServer]:
    server, fake = await _serve(tmp_path / "v1.sock", ("runtime.v1",))
    yield fake
    await server.stop(None)


@pytest_asyncio.fixture(loop_scope="function")
async def fake_v1alpha2(tmp_path: Path) -> AsyncIterator[FakeServer]:
    server, fake = await _serve(tmp_path / "alpha.sock", ("runtime.v1alpha2",))
    yield fake
    await server.stop(None)


@pytest_asyncio.fixture(loop_scope="function")
async def fake_no_cri(tmp_path: Path) -> AsyncIterator[FakeServer]:
    server, fake = await _serve(tmp_path / "nocri.sock", ())
    yield fake
    await server.stop(None)


def _image(ref: str) -> v1.Image:
    return v1.Image(
        id="sha256:" + "b" * 64,
        repo_tags=[ref],
        repo_digests=[ref.rsplit(":", 1)[0] + "@sha256:" + "c" * 64],
        size=4096,
        pinned=False,
    )


# --------------------------------------------------------------------------------------------
# endpoint selection
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("unix:///run/containerd/containerd.sock", "unix:///run/containerd/containerd.sock"),
        ("unix:/run/containerd/containerd.sock", "unix:///run/containerd/containerd.sock"),
        ("/run/containerd/containerd.sock", "unix:///run/containerd/containerd.sock"),
        ("  unix:///run//crio/crio.sock ", "unix:///run/crio/crio.sock"),
    ],
)
def test_endpoint_forms(given: str, expected: str) -> None:
    assert normalize(given) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "tcp://127.0.0.1:1234",
        "npipe:////./pipe/containerd-containerd",
        "unix://relative/path.sock",
        "unix:relative.sock",
        "run/containerd/containerd.sock",
        "localhost:10010",
        "unix://",
    ],
)
async def test_endpoint_rejected(bad: str) -> None:
    with pytest.raises(InvalidEndpoint, match="invalid CRI endpoint"):
        normalize(bad)
    with pytest.raises(InvalidEndpoint):
        await connect(bad)


def test_endpoint_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cri_endpoint.ENV_VAR, raising=False)
    assert cri_endpoint.candidates() == [
        "unix:///run/containerd/containerd.sock",
        "unix:///run/crio/crio.sock",
        "unix:///var/run/cri-dockerd.sock",
    ]
    monkeypatch.setenv(cri_endpoint.ENV_VAR, "/tmp/env.sock")
    assert cri_endpoint.candidates() == ["unix:///tmp/env.sock"]
    assert cri_endpoint.candidates("unix:/tmp/arg.sock") == ["unix:///tmp/arg.sock"]
    monkeypatch.setenv(cri_endpoint.ENV_VAR, "tcp://x:1")
    with pytest.raises(InvalidEndpoint):
        cri_endpoint.candidates()


# --------------------------------------------------------------------------------------------
# runtime unavailable
# --------------------------------------------------------------------------------------------


@pytest.fixture
def stale_socket(tmp_path: Path) -> Iterator[Path]:
    """A socket file nobody listens on (like one left behind by a dead runtime)."""
    path = tmp_path / "stale.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()
    yield path


async def test_a_missing_socket_is_named_without_waiting_for_a_connection(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "nope" / "containerd.sock"
    with pytest.raises(RuntimeUnavailable) as info:
        await connect(str(missing))
    err = info.value  # "no such file", not "timed out": no connection was waited for
    assert err.tried == [(f"unix://{missing}", "no such file")]
    assert str(missing) in str(err)
    assert isinstance(err, CriError) and err.rpc == "connect"


async def test_not_a_socket(tmp_path: Path) -> None:
    plain = tmp_path / "config.toml"
    plain.write_text("")
    with pytest.raises(RuntimeUnavailable) as info:
        await connect(f"unix://{plain}")
    assert info.value.tried == [(f"unix://{plain}", "not a socket")]
    with pytest.raises(RuntimeUnavailable) as info:
        await connect(str(tmp_path))
    assert info.value.tried[0][1].startswith("not a socket")


async def test_connection_refused(stale_socket: Path) -> None:
    with pytest.raises(RuntimeUnavailable) as info:
        await connect(str(stale_socket))
    assert info.value.tried == [(f"unix://{stale_socket}", "connection refused")]
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


async def test_silent_socket_times_out(tmp_path: Path) -> None:
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        sock.listen(1)
        with pytest.raises(RuntimeUnavailable) as info:
            await connect(str(path), timeout=0.5)
    assert info.value.tried == [(f"unix://{path}", "timed out")]


async def test_http1_server(tmp_path: Path) -> None:
    """E.g. CONTAINER_RUNTIME_ENDPOINT pointing at docker.sock."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    path = tmp_path / "http.sock"
    server = await asyncio.start_unix_server(answer, str(path))
    try:
        with pytest.raises(RuntimeUnavailable) as info:
            await connect(str(path))
    finally:
        server.close()
        await server.wait_closed()
    assert info.value.tried == [(f"unix://{path}", "not a gRPC server (answers HTTP/1.x)")]


async def test_no_cri_service(fake_no_cri: FakeServer) -> None:
    with pytest.raises(RuntimeUnavailable) as info:
        await connect(fake_no_cri.endpoint)
    assert info.value.tried == [(fake_no_cri.endpoint, "no CRI service (UNIMPLEMENTED)")]
    assert info.value.code == grpc.StatusCode.UNIMPLEMENTED


async def test_autodetect_names_every_path(
    tmp_path: Path, stale_socket: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = tmp_path / "plain"
    plain.write_text("")
    defaults = (f"unix://{tmp_path}/missing.sock", f"unix://{plain}", f"unix://{stale_socket}")
    monkeypatch.delenv(cri_endpoint.ENV_VAR, raising=False)
    monkeypatch.setattr(cri_endpoint, "DEFAULT_ENDPOINTS", defaults)
    with pytest.raises(RuntimeUnavailable) as info:
        await connect()
    err = info.value
    assert err.tried == [
        (defaults[0], "no such file"),
        (defaults[1], "not a socket"),
        (defaults[2], "connection refused"),
    ]
    for endpoint in defaults:
        assert endpoint in str(err)
    assert "tried 3 endpoints" in str(err)


async def test_autodetect_real_default_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    if any(Path(e.removeprefix("unix://")).exists() for e in cri_endpoint.DEFAULT_ENDPOINTS):
        pytest.skip("a CRI socket exists at a default path on this host")
    monkeypatch.delenv(cri_endpoint.ENV_VAR, raising=False)
    with pytest.raises(RuntimeUnavailable) as info:
        await connect()
    assert [e for e, _ in info.value.tried] == list(cri_endpoint.DEFAULT_ENDPOINTS)
    for endpoint in cri_endpoint.DEFAULT_ENDPOINTS:
        assert endpoint.removeprefix("unix://") in str(info.value)


async def test_autodetect_takes_first_answering(
    tmp_path: Path, fake_v1: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(cri_endpoint.ENV_VAR, raising=False)
    monkeypatch.setattr(
        cri_endpoint, "DEFAULT_ENDPOINTS", (f"unix://{tmp_path}/missing.sock", fake_v1.endpoint)
    )
    async with await connect() as client:
        assert client.endpoint == fake_v1.endpoint


async def test_env_endpoint(fake_v1: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cri_endpoint.ENV_VAR, str(fake_v1.path))
    async with await connect() as client:
        assert client.endpoint == fake_v1.endpoint


# --------------------------------------------------------------------------------------------
# fake runtime: API version, request shape, deadlines, errors, cancellation
# --------------------------------------------------------------------------------------------


async def test_v1_calls(fake_v1: FakeServer) -> None:
    fake_v1.runtime.images["r.example/x:1"] = _image("r.example/x:1")
    async with await connect(fake_v1.endpoint, timeout=3.0) as client:
        assert client.api_version == "v1"
        ver = await client.version()
        assert (ver.version, ver.runtime_name, ver.runtime_api_version) == ("0.1.0", "fake", "v1")
        st = await client.status()
        assert st.runtime_ready
        net = st.condition("NetworkReady")
        assert net is not None and (net.status, net.reason, net.message) == (
            False,
            "NoCNI",
            "none",
        )
        assert st.runtime_handlers == ["runc"]
        (fs,) = await client.image_fs_info()
        assert (fs.mountpoint, fs.used_bytes, fs.inodes_used, fs.timestamp) == (
            "/var/lib/fake",
            1000,
            None,
            42,
        )
        (img,) = await client.list_images()
        assert img.repo_tags == ["r.example/x:1"] and img.size == 4096
        assert await client.image_status("r.example/x:1") == img
        assert await client.image_status("r.example/absent:1") is None
        await client.remove_image("r.example/x:1")
        assert await client.image_status("r.example/x:1") is None
    seen = fake_v1.runtime.seen
    assert seen[0].path == "/runtime.v1.ImageService/ImageFsInfo"  # the detection probe
    version_req = next(s.request for s in seen if s.path.endswith("/Version"))
    assert isinstance(version_req, v1.VersionRequest) and version_req.version == "v1"
    # non-pull RPCs carry the connect timeout as their deadline
    for s in seen:
        assert s.time_remaining is not None and 2.0 < s.time_remaining < 3.1, s


async def test_failing_image_fs_info_still_connects(fake_v1: FakeServer) -> None:
    fake_v1.runtime.fs_info_broken = True
    async with await connect(fake_v1.endpoint) as client:
        assert client.api_version == "v1"
        with pytest.raises(CriError) as info:
            await client.image_fs_info()
        assert info.value.code == grpc.StatusCode.UNKNOWN
        assert "image filesystem is broken" in info.value.details
    assert [p.rsplit("/", 1)[1] for p in fake_v1.runtime.paths()][:2] == ["ImageFsInfo", "Version"]


async def test_fallback_to_v1alpha2(fake_v1alpha2: FakeServer) -> None:
    fake_v1alpha2.runtime.images["r.example/x:1"] = _image("r.example/x:1")
    async with await connect(fake_v1alpha2.endpoint) as client:
        assert client.api_version == "v1alpha2"
        assert (await client.version()).runtime_api_version == "v1alpha2"
        info = await client.image_status("r.example/x:1")
        assert info is not None and info.id == "sha256:" + "b" * 64
        ref = await client.pull_image("r.example/x:1", Credential(username="u", password=SECRET))
        assert ref == "sha256:" + "a" * 64
    paths = fake_v1alpha2.runtime.paths()
    assert paths[0] == "/runtime.v1alpha2.ImageService/ImageFsInfo"
    assert "/runtime.v1alpha2.ImageService/PullImage" in paths
    assert all(p.startswith("/runtime.v1alpha2.") for p in paths)
    pull = next(s.request for s in fake_v1alpha2.runtime.seen if s.path.endswith("/PullImage"))
    assert isinstance(pull, v1.PullImageRequest)
    assert (pull.auth.username, pull.auth.password) == ("u", SECRET)


async def test_forced_api_version(fake_v1: FakeServer, fake_v1alpha2: FakeServer) -> None:
    with pytest.raises(RuntimeUnavailable) as info:
        await connect(fake_v1.endpoint, api_version="v1alpha2")
    assert info.value.tried == [
        (fake_v1.endpoint, "no CRI runtime.v1alpha2 service (UNIMPLEMENTED)")
    ]
    async with await connect(fake_v1alpha2.endpoint, api_version="v1alpha2") as client:
        assert client.api_version == "v1alpha2"
    with pytest.raises(ValueError, match="api_version"):
        await connect(fake_v1.endpoint, api_version="v1beta1")


def _pulls(fake: FakeServer) -> list[v1.PullImageRequest]:
    return [s.request for s in fake.runtime.seen if isinstance(s.request, v1.PullImageRequest)]


async def test_pull_request_shape(fake_v1: FakeServer) -> None:
    async with await connect(fake_v1.endpoint) as client:
        await client.pull_image("nginx")
        await client.pull_image("r.example:5000/a/b:1", Credential(username="u", password=SECRET))
        await client.pull_image("r.example/a", Credential(identity_token=SECRET))
        await client.pull_image("r.example/a", Credential(source="empty"))
        await client.pull_image(
            "r.example/a",
            sandbox_config=SandboxConfig(name="p", namespace="ns", uid="u1", labels={"a": "b"}),
        )
    plain, userpass, token, empty, sandbox = _pulls(fake_v1)
    # exactly what crictl sends: the name as typed, nothing else
    assert plain == v1.PullImageRequest(image=v1.ImageSpec(image="nginx"))
    assert not plain.HasField("auth") and not plain.HasField("sandbox_config")
    assert userpass.image.image == "r.example:5000/a/b:1"
    assert userpass.auth == v1.AuthConfig(username="u", password=SECRET)
    assert userpass.auth.server_address == ""
    assert not userpass.HasField("sandbox_config")
    assert token.auth == v1.AuthConfig(identity_token=SECRET)
    assert not empty.HasField("auth")
    md = sandbox.sandbox_config.metadata
    assert (md.name, md.namespace, md.uid) == ("p", "ns", "u1")
    assert dict(sandbox.sandbox_config.labels) == {"a": "b"}
    # PullImage has no deadline unless the caller gives one
    assert all(
        s.time_remaining is None or s.time_remaining > 1e6
        for s in fake_v1.runtime.seen
        if s.path.endswith("/PullImage")
    )


async def test_pull_error_is_verbatim_and_secret_free(fake_v1: FakeServer) -> None:
    text = (
        'failed to pull and unpack image "r.example/a:1": failed to resolve reference '
        '"r.example/a:1": pull access denied, repository does not exist or may require '
        "authorization: server message: insufficient_scope: authorization failed"
    )

    async def fail(req: v1.PullImageRequest, ctx: grpc.aio.ServicerContext[Any, Any]) -> str:
        await ctx.abort(grpc.StatusCode.UNKNOWN, text)

    fake_v1.runtime.pull = fail
    async with await connect(fake_v1.endpoint) as client:
        with pytest.raises(CriError) as info:
            await client.pull_image("r.example/a:1", Credential(username="u", password=SECRET))
    err = info.value
    assert err.code == grpc.StatusCode.UNKNOWN
    assert err.details == text
    assert err.rpc == "/runtime.v1.ImageService/PullImage"
    assert SECRET not in str(err) and SECRET not in repr(err)
    assert SECRET not in repr(Credential(username="u", password=SECRET))


async def test_empty_image_ref_is_an_error(fake_v1: FakeServer) -> None:
    async def empty(req: v1.PullImageRequest, ctx: grpc.aio.ServicerContext[Any, Any]) -> str:
        return ""

    fake_v1.runtime.pull = empty
    async with await connect(fake_v1.endpoint) as client:
        with pytest.raises(CriError, match="imageRef") as info:
            await client.pull_image("r.example/a:1")
    assert info.value.code is None


async def _hang(req: v1.PullImageRequest, ctx: grpc.aio.ServicerContext[Any, Any]) -> str:
    await asyncio.sleep(3600)
    return "never"


async def test_pull_timeout_is_deadline(fake_v1: FakeServer) -> None:
    fake_v1.runtime.pull = _hang
    async with await connect(fake_v1.endpoint) as client:
        with pytest.raises(CriError) as info:
            await client.pull_image("r.example/slow:1", timeout=0.5)
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    (pull,) = [s for s in fake_v1.runtime.seen if s.path.endswith("/PullImage")]
    assert pull.time_remaining is not None and 0 < pull.time_remaining < 0.6

    async with await connect(fake_v1.endpoint) as client:
        # an exhausted budget is an expired deadline, not a usage error
        with pytest.raises(CriError) as info:
            await client.pull_image("r.example/slow:1", timeout=0)
        assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        with pytest.raises(ValueError, match="timeout"):
            await client.pull_image("r.example/slow:1", timeout=float("nan"))


async def test_cancel_cancels_rpc(fake_v1: FakeServer) -> None:
    fake_v1.runtime.pull = _hang
    async with await connect(fake_v1.endpoint) as client:
        task = asyncio.create_task(client.pull_image("r.example/slow:1"))
        for _ in range(100):
            if any(s.path.endswith("/PullImage") for s in fake_v1.runtime.seen):
                break
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the server side of the RPC is cancelled too
        await asyncio.wait_for(fake_v1.runtime.pull_cancelled.wait(), timeout=5)
        # and the channel is still usable afterwards
        assert (await client.version()).runtime_name == "fake"


async def test_runtime_gone_after_connect(tmp_path: Path) -> None:
    server, fake = await _serve(tmp_path / "gone.sock", ("runtime.v1",))
    client = await connect(fake.endpoint, timeout=1.0)
    try:
        await server.stop(None)
        with pytest.raises(CriError) as info:
            await client.version()
        assert info.value.code in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )
        assert info.value.rpc == "/runtime.v1.RuntimeService/Version"
    finally:
        await client.close()


# --------------------------------------------------------------------------------------------
# real containerd (the lab)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def runtime_endpoint(request: pytest.FixtureRequest) -> str:
    """The lab's CRI endpoint (``PULLCHECK_TEST_CRI_ENDPOINT`` overrides it for no-pull tests)."""
    override = os.environ.get("PULLCHECK_TEST_CRI_ENDPOINT")
    if override:
        return override
    lab: LabInfo = request.getfixturevalue("lab")
    return lab.endpoint


@pytest.mark.lab
@pytest.mark.parametrize("api_version", [None, "v1", "v1alpha2"])
async def test_real_runtime_info(runtime_endpoint: str, api_version: str | None) -> None:
    async with await connect(runtime_endpoint, api_version=api_version) as client:
        assert client.api_version == (api_version or "v1")
        ver = await client.version()
        assert ver.runtime_name == "containerd"
        assert ver.version == "0.1.0"
        assert ver.runtime_api_version == client.api_version
        assert ver.runtime_version
        st = await client.status()
        assert st.runtime_ready
        assert st.condition("NetworkReady") is not None
        fss = await client.image_fs_info()
        assert fss and all(fs.mountpoint.startswith("/") for fs in fss)
        assert all(fs.used_bytes is not None and fs.timestamp > 0 for fs in fss)
        images = await client.list_images()
        assert all(img.id.startswith("sha256:") for img in images)
        assert await client.image_status("pullcheck.invalid/never/pulled:0") is None
        await client.remove_image("pullcheck.invalid/never/pulled:0")  # idempotent


@pytest.mark.lab
@pytest.mark.parametrize("api_version", ["v1", "v1alpha2"])
async def test_real_pull_status_remove(lab: LabInfo, api_version: str) -> None:
    image = lab.images["good"]
    async with await connect(lab.endpoint, api_version=api_version) as client:
        assert client.api_version == api_version
        await client.remove_image(image)
        assert await client.image_status(image) is None
        ref = await client.pull_image(image, timeout=120)
        assert ref.startswith("sha256:")
        info = await client.image_status(image)
        assert info is not None
        assert info.id == ref
        assert info.size > 0
        assert image in info.repo_tags
        repo = image.rsplit(":", 1)[0]
        assert any(d.startswith(repo + "@sha256:") for d in info.repo_digests)
        assert any(img.id == ref for img in await client.list_images())
        await client.remove_image(image)
        assert await client.image_status(image) is None


@pytest.mark.lab
async def test_real_pull_blackhole_deadline(lab: LabInfo) -> None:
    async with await connect(lab.endpoint) as client:
        with pytest.raises(CriError) as info:
            await client.pull_image(lab.images["blackhole"], timeout=2.0)
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED, info.value
    assert info.value.rpc == "/runtime.v1.ImageService/PullImage"


@pytest.mark.lab
async def test_real_pull_missing_tag_not_found(lab: LabInfo) -> None:
    missing = lab.images["missing_tag"]
    async with await connect(lab.endpoint) as client:
        with pytest.raises(CriError) as info:
            await client.pull_image(missing, timeout=60)
    assert info.value.code == grpc.StatusCode.NOT_FOUND, info.value
    assert info.value.details.startswith(f'failed to pull and unpack image "{missing}"')
    assert info.value.details.endswith("not found")


@pytest.mark.lab
async def test_real_pull_with_credential(lab: LabInfo) -> None:
    image = lab.images["private"]
    credential = Credential(username=lab.username, password=lab.password, source="lab")
    async with await connect(lab.endpoint) as client:
        await client.remove_image(image)
        with pytest.raises(CriError) as info:
            await client.pull_image(image, timeout=60)
        assert info.value.code == grpc.StatusCode.UNKNOWN, info.value
        assert "401" in info.value.details or "unauthorized" in info.value.details.lower()
        ref = await client.pull_image(image, credential, timeout=60)
        assert ref.startswith("sha256:")
        await client.remove_image(image)
        with pytest.raises(CriError) as info:
            await client.pull_image(
                image, Credential(username=lab.username, password="wrong"), timeout=60
            )
        assert lab.password not in str(info.value)
        assert info.value.code == grpc.StatusCode.UNKNOWN, info.value
