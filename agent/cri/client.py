"""Async CRI client: connect to the runtime's socket and call the image/runtime services.

Mirrors cri-client (crictl, kubelet): non-pull RPCs use the connect timeout as their deadline,
PullImage gets only the caller's timeout, and pull requests are built exactly like crictl's:
``ImageSpec{image}`` as given, ``AuthConfig`` from the credential (``server_address`` left empty),
no sandbox config unless asked for.
"""

from __future__ import annotations

import logging
import math
import time
from types import TracebackType

import grpc
import grpc.aio

from agent.credentials import Credential
from agent.cri import transport
from agent.cri._pb.runtime.v1 import api_pb2 as v1
from agent.cri.endpoint import candidates, path_problem, socket_path
from agent.cri.errors import CriError, RuntimeUnavailable
from agent.cri.transport import API_VERSIONS, ApiVersion, Transport
from agent.cri.types import (
    FilesystemUsage,
    ImageInfo,
    RuntimeCondition,
    RuntimeStatus,
    RuntimeVersion,
    SandboxConfig,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 2.0  # crictl's --timeout default
CLIENT_VERSION = "v1"  # what crictl sends in VersionRequest


def _positive(name: str, value: float) -> float:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return value


def _unreachable_reason(exc: CriError) -> str:
    """A short reason for a failed connection attempt."""
    details = exc.details
    lowered = details.lower()
    if exc.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "timed out"
    if exc.code == grpc.StatusCode.UNAVAILABLE:
        for needle, reason in (
            ("connection refused", "connection refused"),
            ("permission denied", "permission denied"),
            ("no such file", "no such file"),
            ("http1.x server", "not a gRPC server (answers HTTP/1.x)"),
        ):
            if needle in lowered:
                return reason
    code = exc.code.name if exc.code is not None else "error"
    return f"{code}: {details}" if details else code


class CriClient:
    """A connected CRI runtime. Use :func:`connect`; close with ``async with`` or :meth:`close`."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        endpoint: str,
        api_version: ApiVersion,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.endpoint = endpoint  # normalised, e.g. "unix:///run/containerd/containerd.sock"
        self.api_version: ApiVersion = api_version
        self.timeout = timeout  # deadline of every RPC except PullImage
        self._channel = channel
        self._transport = Transport(channel, api_version)

    def __repr__(self) -> str:
        return f"CriClient(endpoint={self.endpoint!r}, api_version={self.api_version!r})"

    async def __aenter__(self) -> CriClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close(None)

    # --- runtime service ------------------------------------------------------------------

    async def version(self) -> RuntimeVersion:
        resp = await self._transport.call(
            transport.VERSION, v1.VersionRequest(version=CLIENT_VERSION), self.timeout
        )
        return RuntimeVersion(
            version=resp.version,
            runtime_name=resp.runtime_name,
            runtime_version=resp.runtime_version,
            runtime_api_version=resp.runtime_api_version,
        )

    async def status(self) -> RuntimeStatus:
        resp = await self._transport.call(transport.STATUS, v1.StatusRequest(), self.timeout)
        return RuntimeStatus(
            conditions=[
                RuntimeCondition(type=c.type, status=c.status, reason=c.reason, message=c.message)
                for c in resp.status.conditions
            ],
            runtime_handlers=[h.name for h in resp.runtime_handlers],
        )

    # --- image service --------------------------------------------------------------------

    async def image_fs_info(self) -> list[FilesystemUsage]:
        resp = await self._transport.call(
            transport.IMAGE_FS_INFO, v1.ImageFsInfoRequest(), self.timeout
        )
        return [
            FilesystemUsage(
                mountpoint=fs.fs_id.mountpoint,
                used_bytes=fs.used_bytes.value if fs.HasField("used_bytes") else None,
                inodes_used=fs.inodes_used.value if fs.HasField("inodes_used") else None,
                timestamp=fs.timestamp,
            )
            for fs in resp.image_filesystems
        ]

    async def list_images(self) -> list[ImageInfo]:
        resp = await self._transport.call(
            transport.LIST_IMAGES, v1.ListImagesRequest(), self.timeout
        )
        return [_image_info(image) for image in resp.images]

    async def image_status(self, image: str) -> ImageInfo | None:
        """The image as the runtime knows it, or ``None`` if it is not present."""
        resp = await self._transport.call(
            transport.IMAGE_STATUS,
            v1.ImageStatusRequest(image=v1.ImageSpec(image=image)),
            self.timeout,
        )
        if not resp.HasField("image") or not resp.image.id:
            return None
        return _image_info(resp.image)

    async def pull_image(
        self,
        image: str,
        credential: Credential | None = None,
        *,
        timeout: float | None = None,
        sandbox_config: SandboxConfig | None = None,
    ) -> str:
        """Pull ``image`` (sent exactly as given) and return the runtime's image reference.

        ``timeout`` is the gRPC deadline in seconds (None: none, like kubelet and crictl by
        default; zero or negative: already expired). When it expires the error is
        :class:`CriError` with ``DEADLINE_EXCEEDED`` and details ``"Deadline Exceeded"`` (made by
        gRPC on the client, not by the runtime). Cancelling the awaiting task cancels the RPC.
        """
        if timeout is not None:
            if math.isnan(timeout):
                raise ValueError("pull timeout must be a number of seconds, got nan")
            if math.isinf(timeout):
                timeout = None
        request = v1.PullImageRequest(image=v1.ImageSpec(image=image))
        if credential is not None:
            auth = _auth_config(credential)
            if auth is not None:
                request.auth.CopyFrom(auth)
        if sandbox_config is not None:
            request.sandbox_config.CopyFrom(_pod_sandbox_config(sandbox_config))
        resp = await self._transport.call(transport.PULL_IMAGE, request, timeout)
        if not resp.image_ref:
            raise CriError(
                None,
                f"imageRef of image {image!r} is not set",
                transport.PULL_IMAGE.path(self.api_version),
            )
        return resp.image_ref

    async def remove_image(self, image: str) -> None:
        """Remove ``image`` (idempotent; removes every tag of the same image)."""
        await self._transport.call(
            transport.REMOVE_IMAGE,
            v1.RemoveImageRequest(image=v1.ImageSpec(image=image)),
            self.timeout,
        )


def _image_info(image: v1.Image) -> ImageInfo:
    return ImageInfo(
        id=image.id,
        repo_tags=list(image.repo_tags),
        repo_digests=list(image.repo_digests),
        size=image.size,
        pinned=image.pinned,
    )


def _auth_config(credential: Credential) -> v1.AuthConfig | None:
    """The AuthConfig kubelet/crictl would send; None if the credential holds nothing.

    ``server_address`` is deliberately never set: containerd drops credentials whose server
    address differs from the host it authenticates against.
    """
    if not (credential.username or credential.password or credential.identity_token):
        return None
    return v1.AuthConfig(
        username=credential.username,
        password=credential.password,
        identity_token=credential.identity_token,
    )


def _pod_sandbox_config(config: SandboxConfig) -> v1.PodSandboxConfig:
    return v1.PodSandboxConfig(
        metadata=v1.PodSandboxMetadata(
            name=config.name,
            uid=config.uid,
            namespace=config.namespace,
            attempt=config.attempt,
        ),
        labels=config.labels,
        annotations=config.annotations,
    )


async def _answers_cri(
    channel: grpc.aio.Channel, timeout: float, forced: ApiVersion | None
) -> tuple[ApiVersion | None, str, grpc.StatusCode | None]:
    """Find the CRI API version the socket serves: ``(version, "", None)`` or ``(None, why, code)``.

    Like cri-client before K8s 1.26: ImageFsInfo on v1, and v1alpha2 if v1 is UNIMPLEMENTED.
    If ImageFsInfo fails otherwise, Version must succeed for the endpoint to count as CRI.
    All calls together get ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout

    def remaining() -> float:
        return max(deadline - time.monotonic(), 0.001)

    for api_version in (forced,) if forced is not None else API_VERSIONS:
        tr = Transport(channel, api_version)
        try:
            await tr.call(transport.IMAGE_FS_INFO, v1.ImageFsInfoRequest(), remaining())
        except CriError as exc:
            if exc.code == grpc.StatusCode.UNIMPLEMENTED:
                continue
            if exc.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return None, _unreachable_reason(exc), exc.code
            # The image service exists but ImageFsInfo failed: is the runtime service there?
            try:
                request = v1.VersionRequest(version=CLIENT_VERSION)
                await tr.call(transport.VERSION, request, remaining())
            except CriError:
                return None, _unreachable_reason(exc), exc.code
        return api_version, "", None
    service = "CRI service" if forced is None else f"CRI runtime.{forced} service"
    return None, f"no {service} (UNIMPLEMENTED)", grpc.StatusCode.UNIMPLEMENTED


async def connect(
    endpoint: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    api_version: str | None = None,
) -> CriClient:
    """Connect to a CRI runtime and detect its API version.

    ``endpoint``: ``unix:///abs/path``, ``unix:/abs/path`` or ``/abs/path``; if None or empty,
    ``$CONTAINER_RUNTIME_ENDPOINT``, else crictl's defaults in order (the first that connects and
    answers CRI wins). ``timeout`` bounds each connection attempt and is the deadline of every
    later non-pull RPC. ``api_version`` ("v1" or "v1alpha2") skips detection.

    Raises :class:`RuntimeUnavailable` naming every endpoint tried, :class:`InvalidEndpoint` for a
    non-unix endpoint, ``ValueError`` for a bad ``timeout``/``api_version``.
    """
    _positive("timeout", timeout)
    forced: ApiVersion | None = None
    if api_version is not None:
        if api_version not in API_VERSIONS:
            raise ValueError(f"api_version must be one of {API_VERSIONS}, got {api_version!r}")
        forced = "v1" if api_version == "v1" else "v1alpha2"
    tried: list[tuple[str, str]] = []
    last_code: grpc.StatusCode | None = None
    for candidate in candidates(endpoint):
        path = socket_path(candidate)
        problem = path_problem(path)
        if problem is not None:
            log.debug("CRI endpoint %s unusable: %s", candidate, problem)
            tried.append((candidate, problem))
            continue
        channel = transport.open_channel(path)
        try:
            found, reason, code = await _answers_cri(channel, timeout, forced)
        except BaseException:
            await channel.close(None)
            raise
        if found is not None:
            log.debug("CRI endpoint %s serves runtime.%s", candidate, found)
            return CriClient(channel, candidate, found, timeout)
        await channel.close(None)
        log.debug("CRI endpoint %s unusable: %s", candidate, reason)
        tried.append((candidate, reason))
        last_code = code
    raise RuntimeUnavailable(tried, code=last_code)
