"""The network of the lab nodes: a bridge, one network namespace per node, nftables.

Layout (IPv4 only, IPv6 off on every link the lab creates)::

    host: bridge pclab0  10.99.0.1   the lab's services, seen from a node (DNAT to 127.0.0.1)
                         10.99.0.2   resolver answering NXDOMAIN for every name
                         10.99.0.3   resolver answering SERVFAIL for every query
    node-<i>: its own network namespace (held by the node's holder process, no name in
              /run/netns), veth eth0 10.99.0.(10+i)/24, default route via 10.99.0.1

A node reaches the lab registries at ``10.99.0.1:<port>``: an ``ip pullcheck_lab`` nat table on
the host rewrites those connections to ``127.0.0.1:<port>`` (``route_localnet`` on the bridge),
so the daemons keep listening on loopback only and their access logs show the node's own address.
Every node has an egress guard (``inet pclab_guard``): anything not for the lab subnet is rejected
(``No route to host``), and IP forwarding is never switched on, so nothing leaves the machine.
"""

from __future__ import annotations

import subprocess

from lab.errors import LabError
from lab.layout import REFUSED_PORT, TCP_PORTS
from lab.services import SYSTEM_PATH

__all__ = [
    "BRIDGE",
    "GATEWAY",
    "MAX_NODES",
    "NXDOMAIN_DNS",
    "SERVFAIL_DNS",
    "attach",
    "ensure_bridge",
    "inside",
    "nft",
    "node_address",
    "teardown",
]

BRIDGE = "pclab0"
SUBNET = "10.99.0.0/24"
PREFIX = "10.99.0."
GATEWAY = PREFIX + "1"  # the host on the bridge: registries, the lab resolver, the aggregator
NXDOMAIN_DNS = PREFIX + "2"
SERVFAIL_DNS = PREFIX + "3"
BRIDGE_ADDRS = (GATEWAY, NXDOMAIN_DNS, SERVFAIL_DNS)
FIRST_NODE_HOST = 10  # node-1 is 10.99.0.11
MAX_NODES = 200  # 10.99.0.11 .. 10.99.0.210
VETH_PREFIX = "pclv"
HOST_TABLE = "pullcheck_lab"  # ip family, on the host: DNAT bridge -> loopback
GUARD_TABLE = "pclab_guard"  # inet family, in every node
# every TCP port a node may reach on the gateway (the refused port stays closed on purpose)
FORWARDED_PORTS = [p for p in TCP_PORTS if p != REFUSED_PORT]


def node_address(index: int) -> str:
    """``node_address(1)`` -> ``"10.99.0.11"``."""
    _check_index(index)
    return f"{PREFIX}{FIRST_NODE_HOST + index}"


def _check_index(index: int) -> None:
    if not 1 <= index <= MAX_NODES:
        raise LabError(f"node index must be 1..{MAX_NODES}, not {index}")


def run(argv: list[str], *, stdin: str | None = None, check: bool = True) -> str:
    """Run a network command; LabError with its stderr when it fails (and ``check``)."""
    result = subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"},
    )
    if check and result.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed: {result.stderr.strip() or result.stdout}")
    return result.stdout


def inside(pid: int) -> list[str]:
    """argv prefix running a command in the network namespace of process ``pid``."""
    return ["nsenter", "-t", str(pid), "-n", "--"]


def nft(script: str, pid: int | None = None) -> None:
    """Load an nftables ``script`` on the host (``pid`` None) or in ``pid``'s network namespace."""
    run([*([] if pid is None else inside(pid)), "nft", "-f", "-"], stdin=script)


def nft_delete_table(family: str, table: str, pid: int | None = None) -> None:
    prefix = [] if pid is None else inside(pid)
    run([*prefix, "nft", "delete", "table", family, table], check=False)


def links() -> list[str]:
    """Link names in this network namespace (/sys/class/net may show another namespace's)."""
    out = run(["ip", "-o", "link", "show"])
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def _link_exists(name: str) -> bool:
    return name in links()


def veth_name(index: int) -> str:
    _check_index(index)
    return f"{VETH_PREFIX}{index}"


def ensure_bridge() -> None:
    """Create the bridge, its addresses and the host's DNAT table (idempotent)."""
    if not _link_exists(BRIDGE):
        for argv in (
            ["ip", "link", "add", BRIDGE, "type", "bridge"],
            ["sysctl", "-qw", f"net.ipv6.conf.{BRIDGE}.disable_ipv6=1"],
            ["sysctl", "-qw", f"net.ipv4.conf.{BRIDGE}.route_localnet=1"],
        ):
            run(argv)
    have = run(["ip", "-4", "-o", "addr", "show", "dev", BRIDGE])
    for addr in BRIDGE_ADDRS:
        if f" {addr}/" not in have:
            run(["ip", "addr", "add", f"{addr}/24", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])
    ports = ", ".join(str(p) for p in FORWARDED_PORTS)
    nft_delete_table("ip", HOST_TABLE)
    nft(
        f"table ip {HOST_TABLE} {{\n"
        "  chain pre {\n"
        "    type nat hook prerouting priority dstnat; policy accept;\n"
        f'    iifname "{BRIDGE}" ip daddr {GATEWAY} tcp dport {{ {ports} }} dnat to 127.0.0.1\n'
        "  }\n"
        "}\n"
    )


def attach(index: int, pid: int) -> None:
    """Wire the network namespace of ``pid`` (node ``index``'s holder) to the bridge.

    A veth pair (``pclv<i>`` on the bridge, ``eth0`` in the node), the node's address, a default
    route via the gateway, IPv6 off, and the egress guard. The namespace and the veth pair vanish
    with the last process in it.
    """
    veth, addr = veth_name(index), node_address(index)
    if _link_exists(veth):  # a predecessor's pair whose namespace is still held somewhere
        run(["ip", "link", "del", veth], check=False)
    run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", str(pid)])
    run(["sysctl", "-qw", f"net.ipv6.conf.{veth}.disable_ipv6=1"])
    run(["ip", "link", "set", veth, "master", BRIDGE, "up"])
    node = inside(pid)
    run([*node, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
    run([*node, "ip", "link", "set", "lo", "up"])
    run([*node, "ip", "addr", "add", f"{addr}/24", "dev", "eth0"])
    run([*node, "ip", "link", "set", "eth0", "up"])
    run([*node, "ip", "route", "replace", "default", "via", GATEWAY])
    nft(
        f"table inet {GUARD_TABLE} {{\n"
        "  chain out {\n"
        "    type filter hook output priority 10; policy drop;\n"
        f'    oif "lo" accept\n    ip daddr {SUBNET} accept\n'
        "    reject with icmpx type admin-prohibited\n"
        "  }\n"
        "}\n",
        pid,
    )


def teardown() -> None:
    """Remove the bridge, every leftover node veth and the host table. Safe to repeat."""
    for link in links():
        if link.startswith(VETH_PREFIX):
            run(["ip", "link", "del", link], check=False)
    if _link_exists(BRIDGE):
        run(["ip", "link", "del", BRIDGE], check=False)
    nft_delete_table("ip", HOST_TABLE)
