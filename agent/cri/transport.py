"""gRPC channel and versioned unary calls.

Callers always build and receive ``runtime.v1`` messages. For a runtime that only serves the
deprecated ``runtime.v1alpha2`` package, requests are re-encoded through the wire format into the
v1alpha2 message of the same name (field numbers are identical) and sent with the v1alpha2 stub;
responses come back the same way.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final, Generic, Literal, TypeVar, cast

import grpc
import grpc.aio
from google.protobuf.message import Message

from agent.cri._pb.runtime.v1 import api_pb2 as v1
from agent.cri._pb.runtime.v1 import api_pb2_grpc as v1_grpc
from agent.cri._pb.runtime.v1alpha2 import api_pb2 as v1alpha2
from agent.cri._pb.runtime.v1alpha2 import api_pb2_grpc as v1alpha2_grpc
from agent.cri.errors import CriError

ApiVersion = Literal["v1", "v1alpha2"]
API_VERSIONS: Final[tuple[ApiVersion, ...]] = ("v1", "v1alpha2")

MAX_RECEIVE_BYTES: Final = 16 * 1024 * 1024  # cri-client's maxMsgSize

# Like cri-client: plaintext, ":authority: localhost", 16 MiB responses, reconnect back-off
# 100 ms..3 s, minimum connect timeout 5 s (grpc core reads the latter from
# "grpc.min_reconnect_backoff_ms"; a small value there makes slow sockets fail within that time).
# RPC deadlines (the connect timeout, 2 s by default) still bound every attempt.
# No proxy can apply to a unix socket, but make sure grpc never tries one.
CHANNEL_OPTIONS: Final[list[tuple[str, str | int]]] = [
    ("grpc.default_authority", "localhost"),
    ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 5000),
    ("grpc.max_reconnect_backoff_ms", 3000),
    ("grpc.enable_http_proxy", 0),
]

ReqT = TypeVar("ReqT", bound=Message)
RespT = TypeVar("RespT", bound=Message)


@dataclass(frozen=True)
class Rpc(Generic[ReqT, RespT]):
    """One unary CRI method, typed by its v1 request and response messages."""

    service: Literal["RuntimeService", "ImageService"]
    method: str
    request: type[ReqT]
    response: type[RespT]

    def path(self, api_version: ApiVersion) -> str:
        return f"/runtime.{api_version}.{self.service}/{self.method}"


VERSION: Final = Rpc("RuntimeService", "Version", v1.VersionRequest, v1.VersionResponse)
STATUS: Final = Rpc("RuntimeService", "Status", v1.StatusRequest, v1.StatusResponse)
LIST_IMAGES: Final = Rpc("ImageService", "ListImages", v1.ListImagesRequest, v1.ListImagesResponse)
IMAGE_STATUS: Final = Rpc(
    "ImageService", "ImageStatus", v1.ImageStatusRequest, v1.ImageStatusResponse
)
PULL_IMAGE: Final = Rpc("ImageService", "PullImage", v1.PullImageRequest, v1.PullImageResponse)
REMOVE_IMAGE: Final = Rpc(
    "ImageService", "RemoveImage", v1.RemoveImageRequest, v1.RemoveImageResponse
)
IMAGE_FS_INFO: Final = Rpc(
    "ImageService", "ImageFsInfo", v1.ImageFsInfoRequest, v1.ImageFsInfoResponse
)


def _alpha_types() -> dict[str, type[Message]]:
    types: dict[str, type[Message]] = {}
    for name in v1alpha2.DESCRIPTOR.message_types_by_name:
        types[name] = cast("type[Message]", getattr(v1alpha2, name))
    return types


_V1ALPHA2_TYPES: Final = _alpha_types()


def to_v1alpha2(message: Message) -> Message:
    """The v1alpha2 message with the same name, decoded from ``message``'s wire bytes."""
    target = _V1ALPHA2_TYPES[message.DESCRIPTOR.name]
    return target.FromString(message.SerializeToString())


def open_channel(socket_path: str) -> grpc.aio.Channel:
    """An insecure channel to the unix socket at the absolute ``socket_path``."""
    return grpc.aio.insecure_channel("unix://" + socket_path, options=CHANNEL_OPTIONS)


class Transport:
    """Unary calls over one channel in one CRI API version."""

    def __init__(self, channel: grpc.aio.Channel, api_version: ApiVersion) -> None:
        self.api_version: ApiVersion = api_version
        self._stubs: dict[str, object]
        if api_version == "v1":
            self._stubs = {
                "RuntimeService": v1_grpc.RuntimeServiceStub(channel),
                "ImageService": v1_grpc.ImageServiceStub(channel),
            }
        else:
            self._stubs = {
                "RuntimeService": v1alpha2_grpc.RuntimeServiceStub(channel),
                "ImageService": v1alpha2_grpc.ImageServiceStub(channel),
            }

    async def call(self, rpc: Rpc[ReqT, RespT], request: ReqT, timeout: float | None) -> RespT:
        """Send ``request``; ``timeout`` (seconds) becomes the gRPC deadline (None: no deadline).

        Raises :class:`CriError` with the status code and the runtime's details verbatim. If the
        awaiting task is cancelled, the RPC is cancelled too and ``CancelledError`` propagates.
        """
        method = cast(
            "grpc.aio.UnaryUnaryMultiCallable[Message, Message]",
            getattr(self._stubs[rpc.service], rpc.method),
        )
        wire_request: Message = request if self.api_version == "v1" else to_v1alpha2(request)
        call = method(wire_request, timeout=timeout)
        try:
            response = await call
        except asyncio.CancelledError:
            call.cancel()
            raise
        except grpc.aio.AioRpcError as exc:
            raise CriError(exc.code(), exc.details() or "", rpc.path(self.api_version)) from exc
        if self.api_version == "v1":
            return cast(RespT, response)
        return rpc.response.FromString(response.SerializeToString())
