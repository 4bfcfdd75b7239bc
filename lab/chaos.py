"""Faults of the system itself, switched on at a chosen moment of a pull (tests and benchmarks).

``ChaosProxy`` is a TCP proxy on a free loopback port in front of a lab registry (the plain one by
default), run by :func:`chaos_proxy` on its own event loop in a background thread. It forwards
normally until it is armed; then, once a blob response (the answer to a ``GET …/blobs/…``) has
carried ``after`` bytes on a connection, it acts:

* ``kill``: stops listening and aborts every connection, as a registry process that dies mid-pull
  (the next connection is refused);
* ``stall``: stops forwarding that blob — and every later blob at the same offset — while keeping
  its connection open, as a registry whose storage backend hangs; the ``/v2/`` ping and the
  manifests keep working, so only the layer download stalls.

``fired`` is set (and ``fired_at`` is the ``time.monotonic()`` of it) when the action happened, so
a test acts on the fault itself rather than on a guess of when the pull is mid-blob. The runtime
reaches the proxy as ``127.0.0.1:<port>``: containerd speaks plain HTTP to a loopback registry
without any ``hosts.toml`` (``docker.IsLocalhost``), and so do pullcheck's probes.

``slow_downloads(lab, node, rate)`` throttles what a lab node receives from the registries (an
nftables ``limit rate over … drop`` in the node's namespace), so a pull of the ``big`` image lasts
long enough for something to happen in the middle of it. A pull whose containerd was killed
leaves its lease behind (it expires after 24 h), and with it every blob it had fetched, so the
next pull of that image downloads nothing: ``drop_leases(lab, node)`` deletes the node's leases
and the content only they kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from lab import netns, nodes
from lab.errors import LabError
from lab.info import LabInfo
from lab.layout import LOOPBACK, PLAIN_PORT
from lab.nodefiles import NodeFiles

__all__ = ["Action", "ChaosProxy", "chaos_proxy", "drop_leases", "slow_downloads"]

Action = Literal["kill", "stall"]

_CHUNK: Final = 64 * 1024
_MAX_AFTER: Final = 1 << 40  # bytes: any blob offset a test could mean
_START_TIMEOUT: Final = 5.0  # seconds for the proxy's loop to start listening
# the first line of a request on a connection (Go's HTTP/1.1 client never pipelines)
_REQUEST: Final = re.compile(rb"^(?:GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) (\S{1,8192}) HTTP/1\.")
_BLOB: Final = re.compile(rb"^/v2/\S{1,4096}/blobs/sha256:[0-9a-f]{64}")


@dataclass(eq=False)
class _Conn:
    """One proxied connection: both writers, and how far the blob answer on it has got."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    blob: bool = False  # the request in flight asks for a blob
    sent: int = 0  # bytes of its answer forwarded so far
    stalled: bool = False


@dataclass
class _Plan:
    action: Action | None = None
    after: int = 0


@dataclass
class ChaosProxy:
    """See the module docstring. Methods may be called from any thread."""

    upstream: tuple[str, int]
    address: str = ""  # "127.0.0.1:<port>" once listening
    fired: threading.Event = field(default_factory=threading.Event)
    fired_at: float = 0.0
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    _server: asyncio.Server | None = None
    _conns: set[_Conn] = field(default_factory=set)
    _plan: _Plan = field(default_factory=_Plan)
    _release: asyncio.Event | None = None  # set when the proxy stops: stalled answers end

    def arm(self, action: Action, after: int) -> None:
        """Do ``action`` once a blob answer has carried ``after`` bytes (0 < after < 2**40)."""
        if action not in ("kill", "stall"):
            raise ValueError(f"action must be 'kill' or 'stall', not {action!r}")
        if isinstance(after, bool) or not isinstance(after, int) or not 0 < after < _MAX_AFTER:
            raise ValueError(f"after must be a byte count in 1..{_MAX_AFTER - 1}, not {after!r}")
        self._loop.call_soon_threadsafe(self._set_plan, _Plan(action, after))

    def _set_plan(self, plan: _Plan) -> None:
        self._plan = plan

    # --- the loop's side ----------------------------------------------------------------------

    async def _listen(self) -> None:
        self._release = asyncio.Event()
        self._server = await asyncio.start_server(self._handle, LOOPBACK, 0, backlog=128)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"{LOOPBACK}:{port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        conn = _Conn(writer, up_writer)
        self._conns.add(conn)
        try:
            await asyncio.gather(self._requests(reader, conn), self._answers(up_reader, conn))
        except (ConnectionError, OSError):
            pass
        finally:
            self._conns.discard(conn)
            for w in (writer, up_writer):
                w.transport.abort()

    async def _requests(self, reader: asyncio.StreamReader, conn: _Conn) -> None:
        """Client to upstream: note whether the request now in flight asks for a blob."""
        while chunk := await reader.read(_CHUNK):
            request = _REQUEST.match(chunk)
            if request is not None:
                conn.blob, conn.sent = _BLOB.match(request.group(1)) is not None, 0
            conn.upstream.write(chunk)
            await conn.upstream.drain()
        conn.upstream.write_eof()

    async def _answers(self, reader: asyncio.StreamReader, conn: _Conn) -> None:
        """Upstream to client, until a blob answer reaches the armed offset."""
        while chunk := await reader.read(_CHUNK):
            plan = self._plan
            if plan.action is not None and conn.blob and conn.sent + len(chunk) >= plan.after:
                conn.client.write(chunk[: plan.after - conn.sent])
                await conn.client.drain()
                conn.sent = plan.after
                await self._fire(plan.action, conn)
                return
            conn.sent += len(chunk)
            conn.client.write(chunk)
            await conn.client.drain()
        conn.client.write_eof()

    async def _fire(self, action: Action, conn: _Conn) -> None:
        if not self.fired.is_set():
            self.fired_at = time.monotonic()
            self.fired.set()
        if action == "kill":
            self._kill()
            return
        conn.stalled = True
        assert self._release is not None
        await self._release.wait()  # the connection stays open, silent, until the proxy stops

    def _kill(self) -> None:
        if self._server is not None:
            self._server.close()  # no longer listening: the next connection is refused
        for conn in list(self._conns):
            conn.client.transport.abort()
            conn.upstream.transport.abort()

    def _shutdown(self) -> None:
        self._kill()
        if self._release is not None:
            self._release.set()


@contextmanager
def chaos_proxy(upstream: tuple[str, int] = (LOOPBACK, PLAIN_PORT)) -> Iterator[ChaosProxy]:
    """A :class:`ChaosProxy` in front of ``upstream`` (default: the plain registry), listening
    on a free loopback port until the block ends."""
    proxy = ChaosProxy(upstream)
    loop = proxy._loop
    thread = threading.Thread(target=loop.run_forever, name="chaos-proxy", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(proxy._listen(), loop).result(_START_TIMEOUT)
        yield proxy
    finally:
        loop.call_soon_threadsafe(proxy._shutdown)

        async def _drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_drain(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


_SLOW_TABLE: Final = "pclab_chaos_slow"
_MAX_RATE: Final = 10 * 1024**3  # bytes per second


@contextmanager
def slow_downloads(lab: LabInfo | Path | str, name: str, rate: int) -> Iterator[None]:
    """Node ``name`` receives at most ``rate`` bytes per second from the lab's registries (the
    rest is dropped, so TCP backs off) until the block ends."""
    if isinstance(rate, bool) or not isinstance(rate, int) or not 1024 <= rate <= _MAX_RATE:
        raise ValueError(f"rate must be 1024..{_MAX_RATE} bytes per second, not {rate!r}")
    holder = nodes.holder_pid(nodes.lab_paths(lab), name)
    if holder is None:
        raise LabError(f"{name} is not running; start it with ensure_nodes")
    ports = ", ".join(str(p) for p in netns.FORWARDED_PORTS)
    netns.nft(
        f"table inet {_SLOW_TABLE} {{\n"
        "  chain ingress {\n"
        "    type filter hook input priority filter; policy accept;\n"
        f"    ip saddr {netns.GATEWAY} tcp sport {{ {ports} }} "
        f"limit rate over {rate} bytes/second drop\n"
        "  }\n"
        "}\n",
        holder,
    )
    try:
        yield
    finally:
        netns.nft_delete_table("inet", _SLOW_TABLE, holder)


def drop_leases(lab: LabInfo | Path | str, name: str, namespace: str = "k8s.io") -> int:
    """Delete every containerd lease of node ``name`` in ``namespace`` and what only they kept
    (``ctr leases delete --sync``). Returns how many there were."""
    address = str(NodeFiles(nodes.lab_paths(lab), name).containerd.sock)
    ctr = ["ctr", "--address", address, "--namespace", namespace, "leases"]
    leases = netns.run([*ctr, "ls", "--quiet"]).split()
    if leases:
        netns.run([*ctr, "delete", "--sync", *leases])
    return len(leases)
