"""The contract between the lab and its users (tests, demo, benchmarks).

``python -m lab up`` writes ``<dir>/lab.json``; :meth:`LabInfo.load` reads it back.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

DEFAULT_DIR = Path(os.environ.get("PULLCHECK_LAB_DIR", "/var/tmp/pullcheck-lab"))  # noqa: S108


@dataclass
class LabInfo:
    dir: str
    endpoint: str  # unix:///<dir>/run/containerd.sock  (CRI socket of the lab containerd)
    resolv_conf: str  # the resolv.conf the lab containerd sees as /etc/resolv.conf
    registry_config_path: str  # containerd hosts.toml root (config_path)
    ca_file: str  # the lab's test CA (PEM)
    dns_server: str  # lab dnsmasq address
    content_dir: str  # containerd root (on a size-limited tmpfs, for the disk_full test)
    # logical name -> "host:port", e.g. "plain" -> "plain.pullcheck.test:15000"
    registries: dict[str, str] = field(default_factory=dict)
    # logical name -> full reference, e.g. "good" -> "plain.pullcheck.test:15000/pullcheck/good:1.0"
    images: dict[str, str] = field(default_factory=dict)
    username: str = ""  # htpasswd registry account
    password: str = ""
    pids: dict[str, int] = field(default_factory=dict)  # the core daemons (not the extra nodes)
    # extra nodes (lab.nodes.ensure_nodes / `up --nodes N`): name -> CRI endpoint, e.g.
    # "node-1" -> "unix:///<dir>/nodes/node-1/run/containerd.sock"; empty unless asked for
    nodes: dict[str, str] = field(default_factory=dict)
    node_pids: dict[str, int] = field(default_factory=dict)  # name -> containerd pid

    @property
    def state_file(self) -> Path:
        return Path(self.dir) / "lab.json"

    def save(self) -> None:
        """Write lab.json atomically (mode 0600: it holds the password); readers never see half."""
        data = asdict(self)
        for key in _OMIT_WHEN_EMPTY:  # so a lab without nodes writes exactly the old lab.json
            if not data[key]:
                del data[key]
        tmp = self.state_file.with_name(f".lab.json.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.state_file)

    @classmethod
    def load(cls, directory: Path | None = None) -> LabInfo:
        path = (directory or DEFAULT_DIR) / "lab.json"
        data = json.loads(path.read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})  # newer keys are ignored

    def env(self) -> dict[str, str]:
        """Environment that points the pullcheck CLI at this lab instead of the real node."""
        return {
            "CONTAINER_RUNTIME_ENDPOINT": self.endpoint,
            "PULLCHECK_RESOLV_CONF": self.resolv_conf,
            "PULLCHECK_REGISTRY_CONFIG_PATH": self.registry_config_path,
        }


_OMIT_WHEN_EMPTY = ("nodes", "node_pids")
