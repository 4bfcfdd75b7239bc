"""The contract between the lab and its users (tests, demo, benchmarks).

``python -m lab up`` writes ``<dir>/lab.json``; :meth:`LabInfo.load` reads it back.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
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
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def state_file(self) -> Path:
        return Path(self.dir) / "lab.json"

    def save(self) -> None:
        self.state_file.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path | None = None) -> LabInfo:
        path = (directory or DEFAULT_DIR) / "lab.json"
        return cls(**json.loads(path.read_text()))

    def env(self) -> dict[str, str]:
        """Environment that points the pullcheck CLI at this lab instead of the real node."""
        return {
            "CONTAINER_RUNTIME_ENDPOINT": self.endpoint,
            "PULLCHECK_RESOLV_CONF": self.resolv_conf,
            "PULLCHECK_REGISTRY_CONFIG_PATH": self.registry_config_path,
        }
