"""Fault injectors that are small enough to live in Python.

``python -m lab.faults blackhole --listen 127.0.0.1:15099`` accepts TCP connections, reads and
discards whatever the client sends, and never sends a byte back; a connection stays open until the
client closes it. Clients see connect succeed and then hang (TLS handshake timeout, response header
timeout, ...).

``python -m lab.faults reset --listen 127.0.0.1:15081 --upstream 127.0.0.1:15000 --cut 65536`` is an
HTTP/1.1 proxy in front of a plain-HTTP registry: one request per connection (``Connection: close``
both ways), everything passes except a blob (``GET …/blobs/…``) larger than ``--cut`` bytes, whose
body is let through up to byte ``--cut`` and then the connection is reset (``SO_LINGER`` 0, so the
kernel sends an RST): the client sees ``connection reset by peer`` in the middle of the download.
The cut is at an absolute offset of the blob, also for a ``Range`` request resuming a partial
download, so no number of retries ever completes the blob.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import socket
import struct
import sys

_HEAD_LIMIT = 64 * 1024  # bytes of a request or response head
_HEAD_TIMEOUT = 30.0  # seconds to wait for a head
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection"})
_CONTENT_RANGE = re.compile(rb"^\s*bytes\s+(\d{1,18})-\d{1,18}/(\d{1,18})\s*$")


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


async def _swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await reader.read(65536):
            pass
    except (ConnectionError, OSError):
        pass
    finally:
        await _close(writer)


async def blackhole(host: str, port: int) -> None:
    server = await asyncio.start_server(_swallow, host, port, reuse_address=True, backlog=512)
    print(f"blackhole listening on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


# --------------------------------------------------------------------------- reset proxy


def _split_head(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The first line and the header fields of an HTTP head (ending in CRLF CRLF)."""
    lines = head.rstrip(b"\r\n").split(b"\r\n")
    fields = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        fields.append((name.strip(), value.strip()))
    return lines[0], fields


def _field(fields: list[tuple[bytes, bytes]], name: bytes) -> bytes:
    return next((v for n, v in fields if n.lower() == name), b"")


def _join_head(first: bytes, fields: list[tuple[bytes, bytes]]) -> bytes:
    return b"\r\n".join([first, *(n + b": " + v for n, v in fields)]) + b"\r\n\r\n"


def _allowed_body(status: bytes, response: list[tuple[bytes, bytes]], cut: int) -> int | None:
    """How many body bytes of a blob response may pass (None: all of them): up to byte ``cut``
    of the blob, counted from the start of the blob also when the response is a ``Range`` part."""
    length = _field(response, b"content-length")
    if not length.isdigit():
        return None
    start, total = 0, int(length)
    if status == b"206":
        content_range = _CONTENT_RANGE.match(_field(response, b"content-range"))
        if content_range is None:
            return None
        start, total = int(content_range.group(1)), int(content_range.group(2))
    if total <= cut:
        return None
    return max(0, cut - start)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit: int | None
) -> int:
    """Copy until EOF or ``limit`` bytes; the number copied."""
    copied = 0
    while limit is None or copied < limit:
        want = 65536 if limit is None else min(65536, limit - copied)
        data = await reader.read(want)
        if not data:
            break
        writer.write(data)
        await writer.drain()
        copied += len(data)
    return copied


async def _proxy_one(
    client_r: asyncio.StreamReader,
    client_w: asyncio.StreamWriter,
    upstream: tuple[str, int],
    cut: int,
) -> None:
    try:
        head = await asyncio.wait_for(client_r.readuntil(b"\r\n\r\n"), _HEAD_TIMEOUT)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
        await _close(client_w)
        return
    first, fields = _split_head(head)
    parts = first.split(b" ")
    if len(parts) != 3:
        client_w.write(
            b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        )
        await _close(client_w)
        return
    method, target = parts[0], parts[1]
    forwarded = [(n, v) for n, v in fields if n.lower() not in _HOP_BY_HOP]
    forwarded.append((b"Connection", b"close"))
    up_r, up_w = await asyncio.open_connection(*upstream, limit=_HEAD_LIMIT)
    try:
        up_w.write(_join_head(first, forwarded))
        await up_w.drain()
        # a request body (none for a pull's GET and HEAD) goes on beside the answer
        sending = asyncio.create_task(_pipe(client_r, up_w, None))
        response = await asyncio.wait_for(up_r.readuntil(b"\r\n\r\n"), _HEAD_TIMEOUT)
        status_line, response_fields = _split_head(response)
        status = status_line.split(b" ", 2)[1] if b" " in status_line else b""
        allowed = None
        if method == b"GET" and b"/blobs/" in target and status in (b"200", b"206"):
            allowed = _allowed_body(status, response_fields, cut)
        client_w.transport.set_write_buffer_limits(0)  # drain() = handed to the kernel
        client_w.write(response)
        await client_w.drain()
        await _pipe(up_r, client_w, allowed)
        sending.cancel()
        if allowed is not None:
            print(
                f"reset {method.decode()} {target.decode(errors='replace')} "
                f"after {allowed} body bytes",
                flush=True,
            )
            _reset(client_w)
            return
        await _close(client_w)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
        client_w.transport.abort()
    finally:
        await _close(up_w)


async def reset_proxy(host: str, port: int, upstream: tuple[str, int], cut: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _proxy_one(reader, writer, upstream, cut)

    server = await asyncio.start_server(
        handle, host, port, reuse_address=True, backlog=512, limit=_HEAD_LIMIT
    )
    print(
        f"reset proxy listening on {host}:{port} -> {upstream[0]}:{upstream[1]}, cut {cut}",
        flush=True,
    )
    async with server:
        await server.serve_forever()


# --------------------------------------------------------------------------- command line


def _loopback(parser: argparse.ArgumentParser, value: str, what: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host.startswith("127.") or not port.isdigit() or not 0 < int(port) < 65536:
        parser.error(f"{what} must be a loopback host:port, not {value!r}")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.faults")
    sub = parser.add_subparsers(dest="command", required=True)
    bh = sub.add_parser("blackhole", help="accept TCP connections and never answer")
    bh.add_argument("--listen", default="127.0.0.1:15099", help="host:port (loopback only)")
    bh.add_argument("--lab-dir", default="", help="lab directory (identifies the process)")
    rs = sub.add_parser("reset", help="HTTP proxy that resets blob downloads mid-body")
    rs.add_argument("--listen", default="127.0.0.1:15081", help="host:port (loopback only)")
    rs.add_argument("--upstream", default="127.0.0.1:15000", help="the plain-HTTP registry")
    rs.add_argument("--cut", type=int, default=64 * 1024, help="body bytes of a blob let through")
    rs.add_argument("--lab-dir", default="", help="lab directory (identifies the process)")
    args = parser.parse_args(argv)
    host, port = _loopback(parser, str(args.listen), "--listen")
    with contextlib.suppress(KeyboardInterrupt):
        if args.command == "blackhole":
            asyncio.run(blackhole(host, port))
        else:
            if not 0 <= args.cut <= 1 << 40:
                parser.error("--cut must be between 0 and 2**40 bytes")
            upstream = _loopback(parser, str(args.upstream), "--upstream")
            asyncio.run(reset_proxy(host, port, upstream, args.cut))
    return 0


if __name__ == "__main__":
    sys.exit(main())
