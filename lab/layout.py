"""Fixed names, ports and on-disk layout of the lab.

Everything listens on loopback. Other code (tests, demo, benchmarks) relies on these exact
names and ports, so change them only together with ``lab/OBSERVED.md`` and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DOMAIN = "pullcheck.test"
LOOPBACK = "127.0.0.1"
DNS_ADDR = "127.0.53.1"
DNS_PORT = 53

PLAIN_PORT = 15000
POLICY_PORT = 15080
RESET_PORT = 15081
# the reset proxy lets a blob through up to this byte of its body, then resets the connection
RESET_AFTER_BYTES = 64 * 1024
REFUSED_PORT = 15098
BLACKHOLE_PORT = 15099
TLS_PORT = 15443
AUTH_PORT = 15444
TOKEN_PORT = 15445
TOKEN_SERVER_PORT = 15446

USERNAME = "pullcheck"
TOKEN_ISSUER = "pullcheck-lab-token-issuer"  # noqa: S105 (not a secret)
TMPFS_SIZE = "512m"
NODE_TMPFS_SIZE = "256m"  # each extra node's own containerd root (lab.nodes)
NODE_PREFIX = "node-"  # extra nodes are "node-1", "node-2", ...


def node_name(index: int) -> str:
    """``node_name(1)`` -> ``"node-1"``."""
    return f"{NODE_PREFIX}{index}"


def host(name: str) -> str:
    """``host("plain")`` -> ``"plain.pullcheck.test"``."""
    return f"{name}.{DOMAIN}"


# logical registry name -> "host:port" (LabInfo.registries)
REGISTRIES: dict[str, str] = {
    "plain": f"{host('plain')}:{PLAIN_PORT}",
    "mismatch": f"{host('mismatch')}:{PLAIN_PORT}",
    "mirrored": f"{host('mirrored')}:{PLAIN_PORT}",
    "tls": f"{host('tls')}:{TLS_PORT}",
    "untrusted": f"{host('untrusted')}:{TLS_PORT}",
    "auth": f"{host('auth')}:{AUTH_PORT}",
    "token": f"{host('token')}:{TOKEN_PORT}",
    "token_server": f"{host('auth-token')}:{TOKEN_SERVER_PORT}",
    "policy": f"{host('policy')}:{POLICY_PORT}",
    # a second name on the nginx front: its /v2/ challenges for a token whose service answers 503
    "token_down": f"{host('token-down')}:{POLICY_PORT}",
    # lab/faults.py in front of "plain": resets the connection in the middle of a blob body
    "reset": f"{host('reset')}:{RESET_PORT}",
    "refused": f"{host('refused')}:{REFUSED_PORT}",
    "blackhole": f"{host('blackhole')}:{BLACKHOLE_PORT}",
    "nxdomain": f"{host('nxdomain')}:{PLAIN_PORT}",
    "dockerhub": "docker.io",
}

TOKEN_SERVICE = REGISTRIES["token"]
TOKEN_REALM = f"https://{REGISTRIES['token_server']}/token"

# SANs of the one server certificate every TLS listener uses
SERVER_CERT_NAMES = [
    host("tls"),
    host("untrusted"),
    host("auth"),
    host("token"),
    host("auth-token"),
    "localhost",
]
SERVER_CERT_IPS = ["127.0.0.1"]

# TCP ports that must be free before the lab starts (REFUSED_PORT must stay free afterwards too)
TCP_PORTS = [
    PLAIN_PORT,
    POLICY_PORT,
    RESET_PORT,
    REFUSED_PORT,
    BLACKHOLE_PORT,
    TLS_PORT,
    AUTH_PORT,
    TOKEN_PORT,
    TOKEN_SERVER_PORT,
]


def _images() -> dict[str, str]:
    r = REGISTRIES
    good = "pullcheck/good:1.0"
    return {
        "good": f"{r['plain']}/{good}",
        "tls": f"{r['tls']}/{good}",
        "untrusted": f"{r['untrusted']}/{good}",
        "mismatch": f"{r['mismatch']}/{good}",
        "mirrored": f"{r['mirrored']}/{good}",
        "dockerhub_mirror": f"docker.io/{good}",
        "private": f"{r['auth']}/pullcheck/private:1.0",
        "token_public": f"{r['token']}/public/good:1.0",
        "token_private": f"{r['token']}/private/good:1.0",
        "ratelimited": f"{r['policy']}/ratelimited/app:1.0",
        "ratelimited_get": f"{r['policy']}/ratelimited-get/app:1.0",
        "denied": f"{r['policy']}/denied/app:1.0",
        "broken": f"{r['policy']}/broken/app:1.0",
        "badgateway": f"{r['policy']}/badgateway/app:1.0",
        "unavailable": f"{r['policy']}/unavailable/app:1.0",
        "token_unavailable": f"{r['token_down']}/{good}",
        "reset": f"{r['reset']}/pullcheck/reset:1.0",
        "refused": f"{r['refused']}/{good}",
        "blackhole": f"{r['blackhole']}/{good}",
        "nxdomain": f"{r['nxdomain']}/{good}",
        "missing_tag": f"{r['plain']}/pullcheck/good:9.9",
        "missing_repo": f"{r['plain']}/pullcheck/nosuchrepo:1.0",
        "corrupt": f"{r['plain']}/pullcheck/corrupt:1.0",
        "foreign_platform": f"{r['plain']}/pullcheck/foreign:1.0",
        "blob_gone": f"{r['plain']}/pullcheck/blobgone:1.0",
        "big": f"{r['plain']}/pullcheck/big:1.0",
        # "good_digest" is added at runtime (the digest is only known once the seed image is built)
    }


IMAGES: dict[str, str] = _images()


@dataclass(frozen=True)
class Containerd:
    """The files of one lab containerd: the main one or an extra node."""

    name: str  # "containerd" or the node name ("node-1")
    config: Path
    root: Path  # on its own tmpfs
    state: Path
    run: Path
    opt: Path
    log_name: str  # <dir>/logs/<log_name>.log, also its key in pids.json

    @property
    def sock(self) -> Path:
        return self.run / "containerd.sock"

    @property
    def ttrpc_sock(self) -> Path:
        return self.run / "containerd.sock.ttrpc"

    @property
    def debug_sock(self) -> Path:
        return self.run / "containerd-debug.sock"

    @property
    def endpoint(self) -> str:
        return "unix://" + str(self.sock)


@dataclass(frozen=True)
class Paths:
    """Every file and directory the lab uses, relative to its directory."""

    dir: Path

    @property
    def marker(self) -> Path:
        return self.dir / ".pullcheck-lab"

    @property
    def lock(self) -> Path:
        return self.dir / ".lock"

    @property
    def lab_json(self) -> Path:
        return self.dir / "lab.json"

    @property
    def pids_json(self) -> Path:
        return self.dir / "pids.json"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    @property
    def run(self) -> Path:
        return self.dir / "run"

    @property
    def tmp(self) -> Path:
        return self.dir / "tmp"

    @property
    def resolv_conf(self) -> Path:
        return self.dir / "resolv.conf"

    @property
    def certs_d(self) -> Path:
        return self.dir / "certs.d"

    @property
    def ca_dir(self) -> Path:
        return self.dir / "ca"

    @property
    def ca_cert(self) -> Path:
        return self.ca_dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.ca_dir / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.ca_dir / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.ca_dir / "server.key"

    @property
    def token_dir(self) -> Path:
        return self.dir / "token"

    @property
    def token_signing_cert(self) -> Path:
        return self.token_dir / "signing.crt"

    @property
    def token_signing_key(self) -> Path:
        return self.token_dir / "signing.key"

    @property
    def htpasswd(self) -> Path:
        return self.dir / "auth" / "htpasswd"

    @property
    def password_file(self) -> Path:
        return self.dir / "auth" / "password"

    @property
    def containerd_config(self) -> Path:
        return self.dir / "containerd.toml"

    @property
    def containerd_root(self) -> Path:
        return self.dir / "root"

    @property
    def containerd_state(self) -> Path:
        return self.dir / "state"

    @property
    def containerd_sock(self) -> Path:
        return self.run / "containerd.sock"

    @property
    def containerd(self) -> Containerd:
        """The main containerd (``LabInfo.endpoint``)."""
        return Containerd(
            name="containerd",
            config=self.containerd_config,
            root=self.containerd_root,
            state=self.containerd_state,
            run=self.run,
            opt=self.dir / "opt",
            log_name="containerd",
        )

    @property
    def nodes_dir(self) -> Path:
        return self.dir / "nodes"

    def node(self, name: str) -> Containerd:
        """An extra node's containerd, everything under ``<dir>/nodes/<name>/``."""
        d = self.nodes_dir / name
        return Containerd(
            name=name,
            config=d / "containerd.toml",
            root=d / "root",
            state=d / "state",
            run=d / "run",
            opt=d / "opt",
            log_name=f"containerd-{name}",
        )

    @property
    def nginx_conf(self) -> Path:
        return self.dir / "nginx.conf"

    @property
    def nginx_prefix(self) -> Path:
        return self.dir / "nginx"

    def registry_config(self, flavour: str) -> Path:
        return self.dir / "registry" / f"{flavour}.yml"

    def registry_storage(self, flavour: str) -> Path:
        return self.dir / "registry" / flavour

    @property
    def seed(self) -> Path:
        return self.dir / "seed"

    @property
    def seed_cache(self) -> Path:
        """Seed layouts too slow to build at every start (``big``); kept across restarts."""
        return self.dir / "seed-cache"

    @property
    def skopeo_dir(self) -> Path:
        return self.dir / "skopeo"
