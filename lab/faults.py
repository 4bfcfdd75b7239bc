"""Fault injectors that are small enough to live in Python.

``python -m lab.faults blackhole --listen 127.0.0.1:15099`` accepts TCP connections, reads and
discards whatever the client sends, and never sends a byte back; a connection stays open until the
client closes it. Clients see connect succeed and then hang (TLS handshake timeout, response header
timeout, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys


async def _swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await reader.read(65536):
            pass
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def blackhole(host: str, port: int) -> None:
    server = await asyncio.start_server(_swallow, host, port, reuse_address=True, backlog=512)
    print(f"blackhole listening on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.faults")
    sub = parser.add_subparsers(dest="command", required=True)
    bh = sub.add_parser("blackhole", help="accept TCP connections and never answer")
    bh.add_argument("--listen", default="127.0.0.1:15099", help="host:port (loopback only)")
    bh.add_argument("--lab-dir", default="", help="lab directory (identifies the process)")
    args = parser.parse_args(argv)
    host, _, port = str(args.listen).rpartition(":")
    if not host.startswith("127."):
        parser.error("the blackhole listens on loopback only")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(blackhole(host, int(port)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
