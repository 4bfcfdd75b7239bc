"""The files of one lab node: its /etc, its hosts.toml tree, containerd and agent configs, state.

Everything lives under ``<dir>/nodes/<name>/``:

* ``etc/resolv.conf``, ``etc/hosts``, ``etc/ssl/`` — bind-mounted over the node's ``/etc/...`` in
  its mount namespace (``ssl`` holds the node's own trust store: a copy of the host's bundle).
* ``certs.d/`` — the node's hosts.toml tree (a copy of the lab's; faults edit it).
* ``containerd.toml`` (version 2 for 1.x, version 3 for 2.x), ``root/`` (a tmpfs mounted inside
  the node), ``state/``, ``run/containerd.sock`` (on the host's filesystem: CRI from the host).
* ``agent.yaml`` — the node's agent, listening on the node's address.
* ``node.json`` — the node's index, containerd runtime and active faults.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from lab import netns, runtimes, services
from lab.errors import LabError
from lab.info import LabInfo
from lab.layout import NODE_TMPFS_SIZE, Containerd, Paths
from lab.servers import TOKEN, agent_config

AGENT_PORT = 8479  # the agent's default port, as a host-network DaemonSet pod uses it
HOST_TRUST_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
HOST_OPENSSL_CNF = Path("/etc/ssl/openssl.cnf")
RESOLV_OPTIONS = "options timeout:2 attempts:1"  # as the lab's own resolv.conf
UNIX_PATH_MAX = 107


@dataclass
class NodeState:
    """What a node is meant to be (``node.json``); survives restarts of its processes."""

    index: int
    runtime: str = "1.6"
    faults: list[str] = field(default_factory=list)
    agent: bool = False


@dataclass(frozen=True)
class NodeFiles:
    paths: Paths
    name: str

    @property
    def dir(self) -> Path:
        return self.paths.nodes_dir / self.name

    @property
    def containerd(self) -> Containerd:
        return self.paths.node(self.name)

    @property
    def etc(self) -> Path:
        return self.dir / "etc"

    @property
    def certs_d(self) -> Path:
        return self.dir / "certs.d"

    @property
    def agent_config(self) -> Path:
        return self.dir / "agent.yaml"

    @property
    def state_file(self) -> Path:
        return self.dir / "node.json"

    @property
    def filler(self) -> Path:
        """The file that fills the node's image filesystem (inside the node's mount namespace)."""
        return self.containerd.root / "pullcheck-lab-filler.bin"

    def load(self) -> NodeState:
        data = json.loads(self.state_file.read_text())
        return NodeState(**data)

    def save(self, state: NodeState) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
        tmp.replace(self.state_file)


def net_dir(paths: Paths) -> Path:
    """``<dir>/net``: the bridge resolver's hosts file, the agents' token, a resolv.conf."""
    return paths.dir / "net"


def token_file(paths: Paths) -> Path:
    return net_dir(paths) / "agent-token"


def discovery_resolv_conf(paths: Paths) -> Path:
    """A resolv.conf naming the bridge resolver (for the aggregator's DNS discovery)."""
    return net_dir(paths) / "resolv.conf"


def write_net_files(paths: Paths) -> None:
    d = net_dir(paths)
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(token_file(paths), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(TOKEN + "\n")
    discovery_resolv_conf(paths).write_text(f"nameserver {netns.GATEWAY}\n{RESOLV_OPTIONS}\n")


def prepare(files: NodeFiles, state: NodeState) -> None:
    """Write the node's /etc, a fresh copy of the lab's hosts.toml tree and its configs."""
    c = files.containerd
    if len(str(c.ttrpc_sock)) > UNIX_PATH_MAX:
        raise LabError(f"lab directory path too long for unix sockets: {c.ttrpc_sock}")
    for d in (c.root, c.state, c.run, files.etc / "ssl" / "certs"):
        d.mkdir(parents=True, exist_ok=True)
    c.run.chmod(0o711)
    c.sock.unlink(missing_ok=True)  # a dead predecessor's socket would pass the first check
    address = netns.node_address(state.index)
    (files.etc / "resolv.conf").write_text(f"nameserver {netns.GATEWAY}\n{RESOLV_OPTIONS}\n")
    (files.etc / "hosts").write_text(f"127.0.0.1 localhost\n{address} {files.name}\n")
    shutil.copyfile(HOST_TRUST_BUNDLE, files.etc / "ssl" / "certs" / "ca-certificates.crt")
    if HOST_OPENSSL_CNF.exists():
        shutil.copyfile(HOST_OPENSSL_CNF, files.etc / "ssl" / "openssl.cnf")
    reset_certs_d(files)
    write_containerd_config(files, state.runtime)
    files.save(state)


def reset_certs_d(files: NodeFiles) -> None:
    """The node's hosts.toml tree: a copy of the lab's (faults edit the copy)."""
    shutil.rmtree(files.certs_d, ignore_errors=True)
    shutil.copytree(files.paths.certs_d, files.certs_d)


def write_containerd_config(files: NodeFiles, runtime: str) -> None:
    """Version 2 (containerd 1.x, the lab's own settings) or version 3 (2.x) config."""
    if runtimes.config_version(runtime) == 2:
        services.write_containerd_config(
            files.paths, services.SNAPSHOTTER, files.containerd, certs_d=files.certs_d
        )
        return
    c = files.containerd
    disabled = [
        *services.DISABLED_SNAPSHOTTERS,
        "io.containerd.snapshotter.v1.erofs",
        "io.containerd.differ.v1.erofs",
        # NRI's socket is a fixed host path: several nodes would fight over it
        "io.containerd.nri.v1.nri",
    ]
    cni = files.paths.dir / "cni"
    c.config.write_text(f"""# generated by lab/nodefiles.py - containerd 2.x (config version 3)
{services.containerd_config_head(c, 3, disabled)}
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "{services.SNAPSHOTTER}"
  max_concurrent_downloads = 3

[plugins."io.containerd.cri.v1.images".registry]
  config_path = "{files.certs_d}"

[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = ["{cni / "bin"}"]
  conf_dir = "{cni / "net.d"}"

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_tls_streaming = false
  disable_tcp_service = true

[plugins."io.containerd.transfer.v1.local"]
  config_path = "{files.certs_d}"
""")


def write_agent_config(files: NodeFiles, index: int, lab_info: LabInfo) -> None:
    """The node agent: the node's socket, /etc/resolv.conf and /etc/hosts as the node sees them."""
    config = agent_config(
        lab_info,
        token_file(files.paths),
        files.containerd.endpoint,
        # the connectivity matrix's columns: a plain and a TLS registry
        registries=[lab_info.registries["plain"], lab_info.registries["tls"]],
        # faults switch on and off while the lab runs: a result is not reused across a switch
        limits={"rate_limit_per_minute": 0, "result_ttl": 0},
        agent={
            "listen": f"{netns.node_address(index)}:{AGENT_PORT}",
            "resolv_conf": "/etc/resolv.conf",
            "hosts_file": "/etc/hosts",
            "registry_config_path": str(files.certs_d),
            "connectivity_ttl": 2,  # a fault switched on shows in the next matrix
        },
    )
    files.agent_config.write_text(yaml.safe_dump(config))


def holder_script(files: NodeFiles) -> str:
    """The node's mount namespace: its /etc files, its tmpfs root; then it waits to be killed."""
    e, root = files.etc, files.containerd.root
    return (
        "set -e\n"
        f'mount --bind "{e / "resolv.conf"}" /etc/resolv.conf\n'
        f'mount --bind "{e / "hosts"}" /etc/hosts\n'
        f'mount --bind "{e / "ssl"}" /etc/ssl\n'
        f'mount -t tmpfs -o size={NODE_TMPFS_SIZE},mode=0711 pullcheck-lab-{files.name} "{root}"\n'
        "trap 'exit 0' TERM INT\n"
        "while :; do sleep 3600 & wait $!; done\n"
    )
