"""A tiny CRI (runtime.v1) client for the lab's own health checks and fault verification.

It hand-encodes the handful of protobuf fields it needs, so the lab does not depend on the
project's generated stubs (``agent/cri``). It is not the product's CRI client.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

# --------------------------------------------------------------------------- protobuf wire format


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _str_field(number: int, value: str) -> bytes:
    return _bytes_field(number, value.encode()) if value else b""


def _decode(data: bytes) -> dict[int, list[bytes | int]]:
    """Decode one message level: field number -> values (bytes for LEN, int for VARINT/fixed)."""
    fields: dict[int, list[bytes | int]] = {}
    i = 0

    def varint() -> int:
        nonlocal i
        shift = result = 0
        while True:
            b = data[i]
            i += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        value: bytes | int
        if wire == 0:
            value = varint()
        elif wire == 2:
            n = varint()
            value = data[i : i + n]
            i += n
        elif wire == 1:
            value = int.from_bytes(data[i : i + 8], "little")
            i += 8
        elif wire == 5:
            value = int.from_bytes(data[i : i + 4], "little")
            i += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def _first_str(fields: dict[int, list[bytes | int]], number: int) -> str:
    for v in fields.get(number, []):
        if isinstance(v, bytes):
            return v.decode(errors="replace")
    return ""


def _all_str(fields: dict[int, list[bytes | int]], number: int) -> list[str]:
    return [v.decode(errors="replace") for v in fields.get(number, []) if isinstance(v, bytes)]


def _image_spec(image: str) -> bytes:
    return _str_field(1, image)


# --------------------------------------------------------------------------- calls


def _identity(data: bytes) -> bytes:
    return data


def _call(endpoint: str, method: str, request: bytes, timeout: float) -> bytes:
    with grpc.insecure_channel(endpoint) as channel:
        rpc = channel.unary_unary(
            method, request_serializer=_identity, response_deserializer=_identity
        )
        response: bytes = rpc(request, timeout=timeout)
        return response


@dataclass
class Version:
    version: str
    runtime_name: str
    runtime_version: str
    runtime_api_version: str


def version(endpoint: str, timeout: float = 5.0) -> Version:
    raw = _call(endpoint, "/runtime.v1.RuntimeService/Version", _str_field(1, "v1"), timeout)
    f = _decode(raw)
    return Version(_first_str(f, 1), _first_str(f, 2), _first_str(f, 3), _first_str(f, 4))


def pull(
    endpoint: str,
    image: str,
    username: str = "",
    password: str = "",
    timeout: float = 120.0,
) -> str:
    """CRI PullImage; returns image_ref. Raises grpc.RpcError on failure."""
    request = _bytes_field(1, _image_spec(image))
    if username or password:
        request += _bytes_field(2, _str_field(1, username) + _str_field(2, password))
    raw = _call(endpoint, "/runtime.v1.ImageService/PullImage", request, timeout)
    return _first_str(_decode(raw), 1)


def remove(endpoint: str, image: str, timeout: float = 30.0) -> None:
    """CRI RemoveImage; an image that is not there is fine (the CRI says so; some runtime
    versions answer NOT_FOUND all the same)."""
    request = _bytes_field(1, _image_spec(image))
    try:
        _call(endpoint, "/runtime.v1.ImageService/RemoveImage", request, timeout)
    except grpc.RpcError as e:
        if e.code() is not grpc.StatusCode.NOT_FOUND:
            raise


@dataclass
class ImageStatus:
    id: str
    repo_tags: list[str]
    repo_digests: list[str]


def status(endpoint: str, image: str, timeout: float = 10.0) -> ImageStatus | None:
    """CRI ImageStatus; None when the image is not present."""
    request = _bytes_field(1, _image_spec(image))
    raw = _call(endpoint, "/runtime.v1.ImageService/ImageStatus", request, timeout)
    image_field = [v for v in _decode(raw).get(1, []) if isinstance(v, bytes)]
    if not image_field:
        return None
    f = _decode(image_field[0])
    return ImageStatus(_first_str(f, 1), _all_str(f, 2), _all_str(f, 3))


def error_text(err: grpc.RpcError) -> tuple[str, str]:
    """(status code name, details) of a failed call."""
    if isinstance(err, grpc.Call):
        return err.code().name, err.details() or ""
    return "UNKNOWN", str(err)
