"""Per-node faults: what makes one lab node fail its own way. Switchable while the lab runs.

Each kind, how it is made (inside the node only), and what containerd then says:

* ``dns-unreachable``: DNS to 10.99.0.1 dropped at the node's egress (netdev hook) ->
  ``lookup … on 10.99.0.1:53: read udp …: i/o timeout``
* ``dns-nxdomain`` / ``dns-servfail``: DNS to 10.99.0.1 redirected (nat, in the node) to a
  resolver answering NXDOMAIN / SERVFAIL -> ``no such host`` / ``server misbehaving``
* ``registry-timeout``: TCP to the registry ports dropped at egress ->
  ``connect: connection timed out`` (~6 s per try on this kernel)
* ``registry-refused``: TCP to the registry ports rejected with a reset ->
  ``connect: connection refused``
* ``mtu-blackhole``: packets over 1400 bytes from 10.99.0.1 dropped at ingress (a path-MTU
  black hole) -> the TLS handshake and the manifest fit, the first full-size segment of a blob
  never arrives: the pull stalls until the caller's deadline (every probe passes)
* ``packet-loss``: half of the packets from 10.99.0.1 dropped at random at ingress (nftables
  ``numgen random``, as ``tc netem loss 50%`` would) -> TCP retransmits: pulls and probes slow
  down and may still work; what breaks first is whatever has the shortest deadline
* ``ca-missing``: the node's hosts.toml files lose their ``ca`` (the private CA) ->
  ``x509: certificate signed by unknown authority``
* ``dead-mirror``: a refused mirror first in the plain and TLS registries' hosts.toml -> the
  pull still works through the upstream; the mirror is a finding
* ``disk-full``: the node's image filesystem (its tmpfs) filled -> ``no space left on device``
* ``proxy-refused``: ``HTTP(S)_PROXY=http://10.99.0.1:3128`` (nothing listens) in containerd's
  environment, as a systemd drop-in sets it (containerd restarts) ->
  ``proxyconnect tcp: … connection refused``

Network faults are one nftables table each (``pclab_fault_<kind>``) in the node's namespace, so
any combination can be on. The active faults are kept in the node's ``node.json`` and put back if
the node is re-created. Delay needs ``tc netem``, which this kernel lacks
(``CONFIG_NET_SCH_NETEM`` is not set): not offered; packet loss is made with nftables instead.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from lab import netns, state
from lab.errors import LabError
from lab.layout import REGISTRIES, Paths
from lab.nodefiles import NodeFiles, NodeState

__all__ = ["KINDS", "PROXY_URL", "active", "clear", "proxy_for", "reapply", "set_fault"]

PROXY_PORT = 3128  # nothing listens there on the gateway: the proxy refuses
PROXY_URL = f"http://{netns.GATEWAY}:{PROXY_PORT}"
MTU = 1400
LOSS_PERCENT = 50
DEAD_MIRROR = REGISTRIES["refused"]

_G = netns.GATEWAY
_PORTS = "{ " + ", ".join(str(p) for p in netns.FORWARDED_PORTS) + " }"


def _dns_redirect(to: str) -> tuple[str, str]:
    return (
        "ip",
        "chain out { type nat hook output priority -100; policy accept;\n"
        f"  ip daddr {_G} udp dport 53 dnat to {to}\n"
        f"  ip daddr {_G} tcp dport 53 dnat to {to}\n}}",
    )


# kind -> (nft family, table body) for the network faults
_NFT: dict[str, tuple[str, str]] = {
    "dns-unreachable": (
        "netdev",
        "chain eg { type filter hook egress device eth0 priority 0; policy accept;\n"
        f"  ip daddr {_G} udp dport 53 drop\n  ip daddr {_G} tcp dport 53 drop\n}}",
    ),
    "dns-nxdomain": _dns_redirect(netns.NXDOMAIN_DNS),
    "dns-servfail": _dns_redirect(netns.SERVFAIL_DNS),
    "registry-timeout": (
        "netdev",
        "chain eg { type filter hook egress device eth0 priority 0; policy accept;\n"
        f"  ip daddr {_G} tcp dport {_PORTS} drop\n}}",
    ),
    "registry-refused": (
        "inet",
        "chain out { type filter hook output priority 0; policy accept;\n"
        f"  ip daddr {_G} tcp dport {_PORTS} reject with tcp reset\n}}",
    ),
    "mtu-blackhole": (
        "netdev",
        "chain in { type filter hook ingress device eth0 priority 0; policy accept;\n"
        f"  ip saddr {_G} meta length > {MTU} drop\n}}",
    ),
    "packet-loss": (
        "netdev",
        "chain in { type filter hook ingress device eth0 priority 0; policy accept;\n"
        f"  ip saddr {_G} numgen random mod 100 < {LOSS_PERCENT} drop\n}}",
    ),
}
KINDS = (*_NFT, "ca-missing", "dead-mirror", "disk-full", "proxy-refused")


def _check(kind: str) -> str:
    if kind not in KINDS:
        raise LabError(f"unknown fault {kind!r}; one of: {', '.join(KINDS)}")
    return kind


def _table(kind: str) -> str:
    return "pclab_fault_" + kind.replace("-", "_")


def proxy_for(node_state: NodeState) -> str | None:
    """The proxy URL containerd must have in its environment, if any."""
    return PROXY_URL if "proxy-refused" in node_state.faults else None


def active(paths: Paths, name: str) -> list[str]:
    return list(NodeFiles(paths, name).load().faults)


def set_fault(lab_dir: Path | str, name: str, kind: str, on: bool) -> list[str]:
    """Switch fault ``kind`` of node ``name`` on or off; return the node's active faults."""
    from lab import nodes

    _check(kind)
    paths = Paths(Path(lab_dir))
    files = NodeFiles(paths, name)
    if not files.state_file.exists():
        raise LabError(f"{name} is not a node of the lab in {paths.dir}")
    holder = nodes.holder_pid(paths, name)
    if holder is None:
        raise LabError(f"{name} is not running; start it first (`python -m lab up --nodes N`)")
    with state.locked(paths):
        node_state = files.load()
        was = kind in node_state.faults
        node_state.faults = [f for f in node_state.faults if f != kind] + ([kind] if on else [])
        files.save(node_state)
        _apply(files, holder, kind, on)
    if kind == "proxy-refused" and was != on:
        nodes.restart_containerd(paths.dir, name)
    return node_state.faults


def clear(lab_dir: Path | str, name: str) -> None:
    """Switch every fault of node ``name`` off."""
    for kind in active(Paths(Path(lab_dir)), name):
        set_fault(lab_dir, name, kind, False)


def reapply(paths: Paths, name: str) -> None:
    """Put a re-created node's recorded faults back (its network and files are new)."""
    from lab import nodes

    files = NodeFiles(paths, name)
    holder = nodes.holder_pid(paths, name)
    if holder is None:
        return
    for kind in files.load().faults:
        _apply(files, holder, kind, True)


def _apply(files: NodeFiles, holder: int, kind: str, on: bool) -> None:
    if kind in _NFT:
        family, body = _NFT[kind]
        netns.nft_delete_table(family, _table(kind), holder)
        if on:
            netns.nft(f"table {family} {_table(kind)} {{\n{body}\n}}\n", holder)
    elif kind in ("ca-missing", "dead-mirror"):
        _rewrite_hosts_toml(files)  # from the node's recorded faults
    elif kind == "disk-full":
        _disk_full(files, holder, on)
    # proxy-refused: containerd's environment (restart in set_fault)


def _hosts_toml(files: NodeFiles, registry: str) -> Path:
    return files.certs_d / REGISTRIES[registry] / "hosts.toml"


def _lab_hosts_toml(files: NodeFiles, registry: str) -> Path:
    return files.paths.certs_d / REGISTRIES[registry] / "hosts.toml"


def _rewrite_hosts_toml(files: NodeFiles) -> None:
    """The node's hosts.toml files: the lab's, changed by its ``ca-missing``/``dead-mirror``."""
    faults = files.load().faults
    mirror = f'[host."http://{DEAD_MIRROR}"]\n  capabilities = ["pull", "resolve"]\n\n'
    for registry in ("plain", "tls", "auth", "token"):
        text = _lab_hosts_toml(files, registry).read_text()
        if "ca-missing" in faults:
            text = re.sub(r"(?m)^\s*ca = .*\n", "", text)
        if "dead-mirror" in faults and registry in ("plain", "tls"):
            first = text.find("[host.")
            if first < 0:
                raise LabError(f"unexpected lab hosts.toml for {registry}: no [host] table")
            text = text[:first] + mirror + text[first:]
        _hosts_toml(files, registry).write_text(text)


def _disk_full(files: NodeFiles, holder: int, on: bool) -> None:
    """Fill (or free) the node's tmpfs, seen through the holder's mount namespace."""
    from lab.verify import fill

    root = Path(f"/proc/{holder}/root{files.containerd.root}")
    filler = root / files.filler.name
    if on:
        fill(root, filler.name)
    else:
        with contextlib.suppress(FileNotFoundError):
            filler.unlink()
