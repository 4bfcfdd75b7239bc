"""Configuration and process handling for the lab daemons.

Every daemon runs detached (its own session, so its pid is also its process group id), with a
minimal environment (no proxy variables: nothing may leave loopback), stdout+stderr appended to
``<dir>/logs/<name>.log``. The pid of every daemon's command line contains the lab directory, which
is how ``down`` recognises its own processes before signalling them.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import grpc

from lab import cri
from lab.errors import LabError, log_tail
from lab.layout import (
    AUTH_PORT,
    BLACKHOLE_PORT,
    DNS_ADDR,
    DNS_PORT,
    DOMAIN,
    LOOPBACK,
    PLAIN_PORT,
    POLICY_PORT,
    REFUSED_PORT,
    REGISTRIES,
    RESET_AFTER_BYTES,
    RESET_PORT,
    TLS_PORT,
    TOKEN_ISSUER,
    TOKEN_PORT,
    TOKEN_REALM,
    TOKEN_SERVER_PORT,
    TOKEN_SERVICE,
    USERNAME,
    Containerd,
    Paths,
    host,
)

# overlayfs works in this environment (checked with real CRI pulls); PULLCHECK_LAB_SNAPSHOTTER
# can force "native" where overlay mounts are not allowed.
SNAPSHOTTER = os.environ.get("PULLCHECK_LAB_SNAPSHOTTER", "overlayfs")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REPO_ROOT = Path(__file__).resolve().parent.parent

# Popen objects of daemons started by this process, so they can be reaped (no zombies in a long
# pytest session). Daemons started by another process are handled by pid only.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


# --------------------------------------------------------------------------- process handling


def clean_env(paths: Paths, **extra: str) -> dict[str, str]:
    """A minimal environment: no *_proxy, no REGISTRY_* overrides, temp files inside the lab."""
    env = {
        "PATH": SYSTEM_PATH,
        "LANG": "C.UTF-8",
        "HOME": str(paths.dir),
        "TMPDIR": str(paths.tmp),
    }
    env.update(extra)
    return env


def spawn(paths: Paths, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    """Start ``argv`` detached; return its pid."""
    exe = argv[0] if Path(argv[0]).is_absolute() else shutil.which(argv[0], path=SYSTEM_PATH)
    if exe is None:
        raise LabError(f"{name}: executable {argv[0]!r} not found in {SYSTEM_PATH}")
    paths.logs.mkdir(parents=True, exist_ok=True)
    with paths.log(name).open("ab") as log:
        log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                [exe, *argv[1:]],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=paths.dir,
                env=env if env is not None else clean_env(paths),
                start_new_session=True,
                close_fds=True,
            )
        except OSError as e:
            raise LabError(f"{name}: cannot start {argv[0]}: {e}") from e
    _CHILDREN[proc.pid] = proc
    return proc.pid


def _reap(pid: int) -> None:
    proc = _CHILDREN.get(pid)
    if proc is not None:
        proc.poll()  # reaps a finished child; the Popen keeps its returncode for messages
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    _reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def owned(pid: int, directory: Path) -> bool:
    """True if ``pid`` is alive and its command line mentions the lab directory (i.e. is ours)."""
    if pid <= 1 or not alive(pid):
        return False
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    d = str(directory)
    return any(a == d or d + "/" in a or a.endswith("=" + d) for a in args)


def stop(pids: dict[str, int], directory: Path, timeout: float = 8.0) -> list[str]:
    """SIGTERM each owned process group, wait, then SIGKILL. Returns names that had to be killed."""
    targets = {name: pid for name, pid in pids.items() if owned(pid, directory)}
    for pid in targets.values():
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in targets.values()):
        time.sleep(0.05)
    killed = []
    for name, pid in targets.items():
        if owned(pid, directory):  # re-checked: never signal a recycled pid
            killed.append(name)
            _signal_group(pid, signal.SIGKILL)  # the whole group, e.g. nginx workers too
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(alive(p) for p in targets.values()):
        time.sleep(0.05)
    for pid in targets.values():
        _reap(pid)
    return killed


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group led by ``pid`` (each daemon has its own session)."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as e:
        raise LabError(f"cannot signal pid {pid}: {e}") from e


def wait_ready(
    name: str,
    pid: int,
    check: Callable[[], str | None],
    log: Path,
    timeout: float = 20.0,
) -> None:
    """Poll ``check`` (returns None when ready, else a reason) until it passes.

    Fails fast if the process dies; fails after ``timeout`` seconds otherwise. Both failures raise
    LabError with the tail of the daemon's log.
    """
    deadline = time.monotonic() + timeout
    reason = "not checked yet"
    while True:
        if not alive(pid):
            proc = _CHILDREN.get(pid)
            rc = f" with status {proc.returncode}" if proc and proc.returncode is not None else ""
            raise LabError(
                f"{name} (pid {pid}) exited during startup{rc}; log {log}:\n{log_tail(log)}"
            )
        try:
            result = check()
        except LabError as e:  # the check knows waiting will not help
            raise LabError(f"{name} (pid {pid}): {e}; log {log}:\n{log_tail(log)}") from e
        except grpc.RpcError as e:
            code, details = cri.error_text(e)
            result = f"gRPC {code}: {details}"
        except Exception as e:
            result = f"{type(e).__name__}: {e}"
        if result is None:
            return
        reason = result
        if time.monotonic() > deadline:
            raise LabError(
                f"{name} (pid {pid}) not ready after {timeout:.0f}s ({reason}); "
                f"log {log}:\n{log_tail(log)}"
            )
        time.sleep(0.1)


# --------------------------------------------------------------------------- probes


def tcp_state(port: int, addr: str = LOOPBACK, timeout: float = 1.0) -> str:
    """'open', 'refused' or an error description."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((addr, port))
        except ConnectionRefusedError:
            return "refused"
        except OSError as e:
            return f"error: {e}"
        return "open"


def udp_port_free(port: int, addr: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((addr, port))
        except OSError:
            return False
        return True


def dns_query(name: str, rdtype: str = "A", timeout: float = 1.0) -> tuple[str, list[str]]:
    """Ask the lab dnsmasq directly. Returns (rcode text, answer addresses)."""
    q = dns.message.make_query(name, rdtype)
    r = dns.query.udp(q, DNS_ADDR, port=DNS_PORT, timeout=timeout)
    addrs = [item.to_text() for rrset in r.answer for item in rrset]
    return dns.rcode.to_text(r.rcode()), addrs


def tls_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def http_get(
    port: int,
    path: str = "/v2/",
    *,
    ca_file: Path | None = None,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    timeout: float = 3.0,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request to 127.0.0.1:<port> (https when ``ca_file`` is given). No DNS involved."""
    conn: http.client.HTTPConnection
    if ca_file is not None:
        conn = http.client.HTTPSConnection(
            LOOPBACK, port, timeout=timeout, context=tls_context(ca_file)
        )
    else:
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def expect_status(port: int, want: int, ca_file: Path | None = None) -> Callable[[], str | None]:
    def check() -> str | None:
        status, _, _ = http_get(port, ca_file=ca_file)
        return None if status == want else f"GET /v2/ gave {status}, want {want}"

    return check


# --------------------------------------------------------------------------- dnsmasq


def write_resolv_conf(paths: Paths) -> None:
    paths.resolv_conf.write_text(f"nameserver {DNS_ADDR}\noptions timeout:2 attempts:1\n")


def dnsmasq_base(listen: str, port: int, pid_file: Path) -> list[str]:
    """A foreground dnsmasq on ``listen``:``port`` with no config, upstreams, hosts or cache."""
    return [
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        "--bind-interfaces",
        f"--listen-address={listen}",
        f"--port={port}",
        "--user=nobody",
        "--group=nogroup",
        f"--pid-file={pid_file}",
        "--log-facility=-",
        "--log-queries",
        "--cache-size=0",
    ]


def dnsmasq_argv(paths: Paths) -> list[str]:
    return [
        *dnsmasq_base(DNS_ADDR, DNS_PORT, paths.run / "dnsmasq.pid"),
        # answer only from local config for the lab domain: A -> 127.0.0.1, other types NODATA
        f"--local=/{DOMAIN}/",
        f"--address=/{DOMAIN}/{LOOPBACK}",
        f"--address=/{host('nxdomain')}/",
        # every other name: NXDOMAIN (nothing is ever forwarded)
        "--address=/#/",
    ]


def dns_check() -> str | None:
    rcode, addrs = dns_query(REGISTRIES["plain"].split(":")[0])
    if rcode == "NOERROR" and addrs == [LOOPBACK]:
        return None
    return f"plain.{DOMAIN} -> {rcode} {addrs}"


# --------------------------------------------------------------------------- registries

# flavour -> (port, tls, auth kind)
REGISTRY_FLAVOURS: dict[str, tuple[int, bool, str]] = {
    "plain": (PLAIN_PORT, False, ""),
    "tls": (TLS_PORT, True, ""),
    "auth": (AUTH_PORT, True, "htpasswd"),
    "token": (TOKEN_PORT, True, "token"),
}


def write_registry_config(paths: Paths, flavour: str) -> Path:
    """distribution 2.8 config (JSON is valid YAML). No blob descriptor cache, delete enabled."""
    port, tls, auth = REGISTRY_FLAVOURS[flavour]
    storage = paths.registry_storage(flavour)
    storage.mkdir(parents=True, exist_ok=True)
    http_cfg: dict[str, object] = {
        "addr": f"{LOOPBACK}:{port}",
        "secret": secrets.token_hex(16),
        "headers": {"X-Content-Type-Options": ["nosniff"]},
    }
    if tls:
        http_cfg["tls"] = {"certificate": str(paths.server_cert), "key": str(paths.server_key)}
    config: dict[str, object] = {
        "version": "0.1",
        "log": {"level": "info", "formatter": "text", "fields": {"service": f"registry-{flavour}"}},
        # no "cache" key: the blob descriptor cache stays disabled, so a deleted blob really 404s
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            "redirect": {"disable": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": http_cfg,
        "health": {"storagedriver": {"enabled": False}},
    }
    if auth == "htpasswd":
        config["auth"] = {"htpasswd": {"realm": "pullcheck-lab", "path": str(paths.htpasswd)}}
    elif auth == "token":
        config["auth"] = {
            "token": {
                "realm": TOKEN_REALM,
                "service": TOKEN_SERVICE,
                "issuer": TOKEN_ISSUER,
                "rootcertbundle": str(paths.token_signing_cert),
            }
        }
    path = paths.registry_config(flavour)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def registry_argv(paths: Paths, flavour: str) -> list[str]:
    return ["docker-registry", "serve", str(paths.registry_config(flavour))]


def registry_check(paths: Paths, flavour: str) -> Callable[[], str | None]:
    port, tls, auth = REGISTRY_FLAVOURS[flavour]
    return expect_status(port, 401 if auth else 200, paths.ca_cert if tls else None)


def write_htpasswd(paths: Paths, password: str) -> None:
    paths.htpasswd.parent.mkdir(parents=True, exist_ok=True)
    # bcrypt cost 5 keeps every authenticated registry request cheap
    result = subprocess.run(
        ["htpasswd", "-B", "-C", "5", "-i", "-n", USERNAME],
        input=password.encode(),
        capture_output=True,
        check=False,
        env={"PATH": SYSTEM_PATH},
    )
    if result.returncode != 0:
        raise LabError(f"htpasswd failed: {result.stderr.decode(errors='replace').strip()}")
    paths.htpasswd.write_bytes(result.stdout.strip() + b"\n")
    fd = os.open(paths.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password)


# --------------------------------------------------------------------------- token server, faults


def python_env(paths: Paths) -> dict[str, str]:
    return clean_env(paths, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")


def token_server_argv(paths: Paths) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lab.tokenserver",
        "--listen",
        f"{LOOPBACK}:{TOKEN_SERVER_PORT}",
        "--cert",
        str(paths.server_cert),
        "--key",
        str(paths.server_key),
        "--signing-key",
        str(paths.token_signing_key),
        "--signing-cert",
        str(paths.token_signing_cert),
        "--issuer",
        TOKEN_ISSUER,
        "--service",
        TOKEN_SERVICE,
        "--username",
        USERNAME,
        "--password-file",
        str(paths.password_file),
    ]


def token_server_check(paths: Paths) -> Callable[[], str | None]:
    def check() -> str | None:
        status, _, body = http_get(
            TOKEN_SERVER_PORT,
            f"/token?service={TOKEN_SERVICE}&scope=repository:public/good:pull",
            ca_file=paths.ca_cert,
        )
        if status == 200 and b"token" in body:
            return None
        return f"GET /token gave {status}"

    return check


def blackhole_argv(paths: Paths) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lab.faults",
        "blackhole",
        "--listen",
        f"{LOOPBACK}:{BLACKHOLE_PORT}",
        "--lab-dir",
        str(paths.dir),
    ]


def blackhole_check() -> str | None:
    with socket.create_connection((LOOPBACK, BLACKHOLE_PORT), timeout=1) as s:
        s.settimeout(0.2)
        try:
            data = s.recv(1)
        except TimeoutError:
            return None
        return f"blackhole sent {data!r} (closed)" if not data else f"blackhole sent {data!r}"


def reset_proxy_argv(paths: Paths) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lab.faults",
        "reset",
        "--listen",
        f"{LOOPBACK}:{RESET_PORT}",
        "--upstream",
        f"{LOOPBACK}:{PLAIN_PORT}",
        "--cut",
        str(RESET_AFTER_BYTES),
        "--lab-dir",
        str(paths.dir),
    ]


def reset_proxy_check() -> str | None:
    status, _, _ = http_get(RESET_PORT)
    return None if status == 200 else f"GET /v2/ through the reset proxy gave {status}"


# --------------------------------------------------------------------------- nginx policy proxy

RATELIMIT_BODY = (
    '{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit. '
    "You may increase the limit by authenticating and upgrading: "
    'https://www.docker.com/increase-rate-limit"}]}'
)
DENIED_BODY = (
    '{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}'
)
BROKEN_BODY = '{"errors":[{"code":"UNKNOWN","message":"internal error"}]}'
# distribution's errcode.ErrorCodeUnavailable (HTTP 503)
UNAVAILABLE_BODY = (
    '{"errors":[{"code":"UNAVAILABLE","message":"service unavailable: registry in maintenance"}]}'
)
UNAUTHORIZED_BODY = '{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
RETRY_AFTER = "120"  # seconds, on every 503 of the lab


def write_nginx_conf(paths: Paths) -> None:
    prefix = paths.nginx_prefix
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    api = 'add_header Docker-Distribution-API-Version "registry/2.0" always;'
    token_down = REGISTRIES["token_down"]
    token_down_challenge = f'Bearer realm="http://{token_down}/token",service="{token_down}"'
    conf = f"""# generated by lab/services.py - policy proxy in front of the plain registry
daemon off;
master_process on;
worker_processes 1;
pid {paths.run / "nginx.pid"};
error_log {paths.log("nginx-error")} info;

events {{
    worker_connections 512;
}}

http {{
    access_log {paths.log("nginx-access")};
    client_body_temp_path {prefix / "client_body"};
    proxy_temp_path {prefix / "proxy"};
    fastcgi_temp_path {prefix / "fastcgi"};
    uwsgi_temp_path {prefix / "uwsgi"};
    scgi_temp_path {prefix / "scgi"};
    client_max_body_size 0;
    server_tokens off;

    server {{
        listen {LOOPBACK}:{POLICY_PORT};
        server_name {host("policy")};
        default_type application/json;

        # deterministic faults: plain "return", no rate-limit zones
        location ^~ /v2/ratelimited/ {{
            add_header ratelimit-limit "100;w=21600" always;
            add_header ratelimit-remaining "0;w=21600" always;
            add_header docker-ratelimit-source "127.0.0.1" always;
            {api}
            return 429 '{RATELIMIT_BODY}';
        }}
        # Docker Hub style: HEAD is free (passes through), GET answers 429, so containerd
        # resolves the tag and fails at the fetch stage with the registry's message
        location ^~ /v2/ratelimited-get/ {{
            if ($request_method = GET) {{
                add_header ratelimit-limit "100;w=21600" always;
                add_header ratelimit-remaining "0;w=21600" always;
                add_header docker-ratelimit-source "127.0.0.1" always;
                {api}
                return 429 '{RATELIMIT_BODY}';
            }}
            proxy_pass http://{LOOPBACK}:{PLAIN_PORT};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
        location ^~ /v2/denied/ {{
            {api}
            return 403 '{DENIED_BODY}';
        }}
        location ^~ /v2/broken/ {{
            {api}
            return 500 '{BROKEN_BODY}';
        }}
        # a real 502: nginx's own answer when the registry behind it refuses connections
        location ^~ /v2/badgateway/ {{
            proxy_pass http://{LOOPBACK}:{REFUSED_PORT};
            proxy_next_upstream off;
        }}
        location ^~ /v2/unavailable/ {{
            add_header Retry-After "{RETRY_AFTER}" always;
            {api}
            return 503 '{UNAVAILABLE_BODY}';
        }}
        location / {{
            proxy_pass http://{LOOPBACK}:{PLAIN_PORT};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 300s;
        }}
    }}

    # a registry whose token service is down: /v2/ challenges for a Bearer token from a realm
    # that answers 503 (the content itself is never reached)
    server {{
        listen {LOOPBACK}:{POLICY_PORT};
        server_name {host("token-down")};
        default_type application/json;

        location /v2/ {{
            add_header WWW-Authenticate '{token_down_challenge}' always;
            {api}
            return 401 '{UNAUTHORIZED_BODY}';
        }}
        location = /token {{
            add_header Retry-After "{RETRY_AFTER}" always;
            return 503 '{UNAVAILABLE_BODY}';
        }}
    }}
}}
"""
    paths.nginx_conf.write_text(conf)


def nginx_argv(paths: Paths) -> list[str]:
    return [
        "nginx",
        "-e",
        str(paths.log("nginx-error")),
        "-p",
        str(paths.nginx_prefix) + "/",
        "-c",
        str(paths.nginx_conf),
    ]


def nginx_test(paths: Paths) -> None:
    result = subprocess.run(
        [*nginx_argv(paths), "-t"],
        capture_output=True,
        check=False,
        env=clean_env(paths),
        cwd=paths.dir,
    )
    if result.returncode != 0:
        out = (result.stdout + result.stderr).decode(errors="replace").strip()
        raise LabError(f"nginx -t rejected {paths.nginx_conf}:\n{out}")


def nginx_check() -> str | None:
    status, _, _ = http_get(POLICY_PORT)
    if status != 200:
        return f"GET /v2/ through nginx gave {status}"
    status, _, _ = http_get(POLICY_PORT, "/v2/denied/app/manifests/1.0")
    if status != 403:
        return f"denied path gave {status}"
    status, _, _ = http_get(POLICY_PORT, headers={"Host": REGISTRIES["token_down"]})
    return None if status == 401 else f"GET /v2/ on {REGISTRIES['token_down']} gave {status}"


# --------------------------------------------------------------------------- containerd

DISABLED_SNAPSHOTTERS = [
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
]


def containerd_config_head(c: Containerd, version: int, disabled: list[str]) -> str:
    """The top of ``c``'s config (``version`` 2 or 3): own paths and sockets, ``disabled`` plugins,
    no metrics listener; the CRI sections follow."""
    names = ", ".join(f'"{p}"' for p in disabled)
    return f"""version = {version}
root = "{c.root}"
state = "{c.state}"
disabled_plugins = [{names}]

[grpc]
  address = "{c.sock}"

[ttrpc]
  address = "{c.ttrpc_sock}"

[debug]
  address = "{c.debug_sock}"
  level = "debug"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{c.opt}"
"""


def write_containerd_config(
    paths: Paths, snapshotter: str, c: Containerd | None = None, certs_d: Path | None = None
) -> None:
    """Config of the main containerd, or of the extra node ``c`` (same settings, own paths).

    ``certs_d``: the hosts.toml root (default: the lab's); a lab node has its own.
    """
    c = c or paths.containerd
    conf = f"""# generated by lab/services.py - the lab's own containerd (CRI), never the system one
{containerd_config_head(c, 2, DISABLED_SNAPSHOTTERS)}
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "{LOOPBACK}"
  stream_server_port = "0"
  enable_tls_streaming = false
  disable_tcp_service = true
  max_concurrent_downloads = 3

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "{snapshotter}"

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{paths.dir / "cni" / "bin"}"
  conf_dir = "{paths.dir / "cni" / "net.d"}"

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "{certs_d or paths.certs_d}"
"""
    c.config.parent.mkdir(parents=True, exist_ok=True)
    c.config.write_text(conf)


def containerd_argv(paths: Paths, c: Containerd | None = None) -> list[str]:
    """containerd in a private mount namespace where /etc/resolv.conf is the lab's resolv.conf."""
    c = c or paths.containerd
    script = (
        f'mount --bind "{paths.resolv_conf}" /etc/resolv.conf '
        f'&& exec containerd --config "{c.config}"'
    )
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


def cri_version_check(endpoint: str, timeout: float = 2.0) -> None:
    v = cri.version(endpoint, timeout=timeout)
    if v.runtime_name != "containerd":
        raise LabError(f"unexpected runtime behind {endpoint}: {v.runtime_name}")


def containerd_check(paths: Paths, c: Containerd | None = None) -> Callable[[], str | None]:
    c = c or paths.containerd

    def check() -> str | None:
        if not c.sock.exists():
            return "socket not there yet"
        try:
            cri_version_check(c.endpoint)
        except grpc.RpcError as e:
            code, details = cri.error_text(e)
            if code == "UNIMPLEMENTED":
                raise LabError(f"the CRI plugin is not serving ({details})") from e
            raise
        return None

    return check


# --------------------------------------------------------------------------- hosts.toml


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _tls_hosts_toml(name: str, ca: str) -> str:
    # containerd 1.6 rejects a hosts.toml without any [host] table ("failed to decode hosts.toml"
    # error="invalid `host` tree") and silently falls back to defaults, ignoring the top-level ca;
    # so every file repeats the server as a [host] entry.
    return (
        f'server = "https://{name}"\nca = {ca}\n\n'
        f'[host."https://{name}"]\n  capabilities = ["pull", "resolve"]\n  ca = {ca}\n'
    )


def _http_hosts_toml(name: str) -> str:
    pull = 'capabilities = ["pull", "resolve"]'
    return f'server = "http://{name}"\n\n[host."http://{name}"]\n  {pull}\n'


def write_hosts_toml(paths: Paths) -> None:
    """The containerd registry host configuration (config_path) of the lab."""
    ca = _toml_str(str(paths.ca_cert))
    r = REGISTRIES
    pull = 'capabilities = ["pull", "resolve"]'
    files = {
        r["plain"]: _http_hosts_toml(r["plain"]),
        # mirror first (nothing listens there), then the upstream server
        r["mirrored"]: (
            f'server = "http://{r["mirrored"]}"\n\n[host."http://{r["refused"]}"]\n  {pull}\n'
        ),
        r["policy"]: _http_hosts_toml(r["policy"]),
        r["token_down"]: _http_hosts_toml(r["token_down"]),
        r["reset"]: _http_hosts_toml(r["reset"]),
        r["tls"]: _tls_hosts_toml(r["tls"], ca),
        r["auth"]: _tls_hosts_toml(r["auth"], ca),
        r["token"]: _tls_hosts_toml(r["token"], ca),
        # Docker Hub "mirror": registry-1.docker.io is NXDOMAIN in the lab and never reached
        "docker.io": (
            f'server = "https://registry-1.docker.io"\n\n[host."http://{r["plain"]}"]\n  {pull}\n'
        ),
        # no hosts.toml (on purpose): mismatch, untrusted, refused, blackhole, nxdomain
    }
    for name, text in files.items():
        d = paths.certs_d / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "hosts.toml").write_text("# generated by lab/services.py\n" + text)
