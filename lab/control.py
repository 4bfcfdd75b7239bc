"""Start, stop and check the lab: ``up``, ``down``, ``status``.

``up`` is idempotent (a healthy lab in the directory is reused; a stale or half-started one is torn
down and started again) and safe to call from a pytest session fixture. Concurrent callers on the
same directory are serialised with a file lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lab import certs, images, nodes, services, state
from lab.errors import LabError, log_tail
from lab.info import DEFAULT_DIR, LabInfo
from lab.layout import (
    DNS_ADDR,
    DNS_PORT,
    IMAGES,
    LOOPBACK,
    PLAIN_PORT,
    REFUSED_PORT,
    REGISTRIES,
    TCP_PORTS,
    TMPFS_SIZE,
    USERNAME,
    Paths,
)

__all__ = ["DEFAULT_DIR", "LabError", "down", "ensure_nodes", "status", "up"]

log = logging.getLogger("lab")

SNAPSHOTTER = services.SNAPSHOTTER
ensure_nodes = nodes.ensure_nodes
REQUIRED_TOOLS = [
    "containerd",
    "unshare",
    "mount",
    "umount",
    "dnsmasq",
    "docker-registry",
    "nginx",
    "skopeo",
    "htpasswd",
]
UNIX_PATH_MAX = 107
READY_BUDGET = 30.0  # seconds for all daemons together to answer


# --------------------------------------------------------------------------- public API


def up(
    directory: Path = DEFAULT_DIR,
    nodes: int = 0,
    *,
    agents: bool = False,
    runtime: str | None = None,
) -> LabInfo:
    """Start the lab in ``directory`` (or return the healthy one already running there).

    ``nodes``: make sure at least node-1..node-``nodes`` (hosts in their own namespaces with
    their own containerd, see ``lab.nodes``) run too; nodes already running are kept, dead ones
    restarted on their own (without restarting the rest of the lab). ``agents``: each node also
    runs its agent; ``runtime``: containerd of the nodes started now ("1.6", "1.7", "2").
    """
    paths = Paths(_absolute(directory))
    _require_root()
    with _locked(paths):
        if _healthy_core(paths) is None:
            log.info("lab already running in %s", paths.dir)
            return _nodes(paths, _add_big(paths, LabInfo.load(paths.dir)), nodes, agents, runtime)
        _preflight(paths)
        _teardown(paths)
        started = time.monotonic()
        try:
            info = _nodes(paths, _start(paths), nodes, agents, runtime)
        except BaseException:
            log.info("start failed; cleaning up")
            with contextlib.suppress(LabError):
                _teardown(paths)
            raise
        log.info("lab up in %.1fs", time.monotonic() - started)
        return info


def down(directory: Path = DEFAULT_DIR) -> None:
    """Stop everything the lab in ``directory`` runs and unmount its tmpfs. Safe to repeat."""
    paths = Paths(_absolute(directory))
    if not paths.dir.exists():
        return
    with _locked(paths):
        _teardown(paths)


def status(directory: Path = DEFAULT_DIR) -> bool:
    """True if a complete, healthy lab is running in ``directory``."""
    return _healthy(Paths(_absolute(directory))) is None


def health(directory: Path = DEFAULT_DIR) -> str | None:
    """None if healthy, else the first problem found (for ``python -m lab status``)."""
    return _healthy(Paths(_absolute(directory)))


# --------------------------------------------------------------------------- helpers


def _absolute(directory: Path) -> Path:
    return Path(os.path.abspath(directory))  # noqa: PTH100 (no symlink resolution wanted)


_locked = state.locked
_recorded_pids = state.recorded_pids
_record_pid = state.record_pid
_mounts_under = state.mounts_under


def _nodes(paths: Paths, info: LabInfo, count: int, agents: bool, runtime: str | None) -> LabInfo:
    """Start missing nodes up to ``count`` and restart dead recorded ones (lock held)."""
    if not count and not info.node_pids:
        return info
    return nodes.ensure_locked(paths, info, nodes.node_names(count), agents=agents, runtime=runtime)


def _unmount_all(paths: Paths) -> None:
    for _ in range(5):
        mounts = _mounts_under(paths.dir)
        if not mounts:
            return
        for mount_point in mounts:
            result = subprocess.run(
                ["umount", mount_point], capture_output=True, check=False, env=_env()
            )
            if result.returncode != 0:
                subprocess.run(["umount", "-l", mount_point], capture_output=True, check=False)
    left = _mounts_under(paths.dir)
    if left:
        raise LabError(f"could not unmount {', '.join(left)}")


_env = state.env


def _teardown(paths: Paths) -> None:
    """Kill recorded daemons, unmount, forget the state. Keeps logs for post-mortems."""
    pids = _recorded_pids(paths)
    if pids:
        killed = services.stop(pids, paths.dir)
        if killed:
            log.warning("had to SIGKILL: %s", ", ".join(killed))
        survivors = [n for n, p in pids.items() if services.owned(p, paths.dir)]
        if survivors:
            raise LabError(f"lab processes still running after SIGKILL: {survivors}")
    nodes.teardown(paths)
    _unmount_all(paths)
    for f in (paths.lab_json, paths.pids_json):
        f.unlink(missing_ok=True)


def _healthy(paths: Paths) -> str | None:
    """None if the lab and all its recorded extra nodes are healthy, else the first problem."""
    problem = _healthy_core(paths)
    if problem is not None:
        return problem
    try:
        info = LabInfo.load(paths.dir)
    except (OSError, ValueError, TypeError) as e:
        return f"unreadable {paths.lab_json}: {e}"
    return next(iter(nodes.problems(paths, info).values()), None)


def _healthy_core(paths: Paths) -> str | None:
    """Like ``_healthy`` without the extra nodes."""
    if not paths.lab_json.exists():
        return f"no {paths.lab_json}"
    try:
        info = LabInfo.load(paths.dir)
    except (OSError, ValueError, TypeError) as e:
        return f"unreadable {paths.lab_json}: {e}"
    for name, pid in info.pids.items():
        if not services.owned(pid, paths.dir):
            return f"{name} (pid {pid}) is not running"
    if str(paths.containerd_root) not in _mounts_under(paths.dir):
        return f"tmpfs not mounted at {paths.containerd_root}"
    for port in TCP_PORTS:
        state = services.tcp_state(port, timeout=0.5)
        want = "refused" if port == REFUSED_PORT else "open"
        if state != want:
            return f"127.0.0.1:{port} is {state}, want {want}"
    try:
        if services.dns_check() is not None:
            return "dnsmasq gives wrong answers"
    except Exception as e:
        return f"dnsmasq does not answer: {e}"
    try:
        services.cri_version_check(info.endpoint)
    except Exception as e:
        return f"containerd CRI does not answer: {e}"
    return None


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabError(
            "the lab needs root (mount namespaces, tmpfs, port 53 on 127.0.53.1); run as root"
        )


def _preflight(paths: Paths) -> None:
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t, path=services.SYSTEM_PATH) is None]
    if missing:
        raise LabError(f"missing tools: {', '.join(missing)}")
    longest = paths.run / "containerd.sock.ttrpc"
    if len(str(longest)) > UNIX_PATH_MAX:
        raise LabError(f"lab directory path too long for unix sockets: {longest}")
    foreign = [c for c in paths.dir.iterdir() if c.name != paths.lock.name]
    if foreign and not paths.marker.exists():
        raise LabError(
            f"{paths.dir} exists, is not empty and is not a lab directory (no {paths.marker.name});"
            " refusing to use it"
        )


def _check_ports(paths: Paths) -> None:
    busy = []
    for port in TCP_PORTS:
        state = services.tcp_state(port, timeout=0.5)
        if state != "refused":
            busy.append(f"127.0.0.1:{port} ({state})")
    if services.tcp_state(DNS_PORT, DNS_ADDR, timeout=0.5) != "refused":
        busy.append(f"{DNS_ADDR}:{DNS_PORT}/tcp")
    if not services.udp_port_free(DNS_PORT, DNS_ADDR):
        busy.append(f"{DNS_ADDR}:{DNS_PORT}/udp")
    if busy:
        raise LabError(
            "ports needed by the lab are in use (another lab in a different directory?): "
            + ", ".join(busy)
        )


def _fresh_directory(paths: Paths) -> None:
    d = paths.dir
    d.mkdir(parents=True, exist_ok=True)
    if _mounts_under(d):
        raise LabError(f"{d} still has mounts: {_mounts_under(d)}")
    prev = d / "logs.prev"
    if prev.exists():
        shutil.rmtree(prev)
    if paths.logs.exists():
        paths.logs.rename(prev)
    for child in d.iterdir():
        if child.name in (paths.marker.name, paths.lock.name, prev.name, paths.seed_cache.name):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    paths.marker.write_text("pullcheck lab directory; `python -m lab down` stops it\n")
    for sub in (
        paths.logs,
        paths.run,
        paths.tmp,
        paths.certs_d,
        paths.containerd_root,
        paths.containerd_state,
        paths.seed,
    ):
        sub.mkdir(parents=True, exist_ok=True)
    paths.run.chmod(0o711)


def _mount_tmpfs(paths: Paths) -> None:
    state.mount_tmpfs(paths.containerd_root, TMPFS_SIZE, "pullcheck-lab-root")


def _timed(label: str, fn: Callable[[], None]) -> None:
    t = time.monotonic()
    fn()
    log.info("%-28s %.2fs", label, time.monotonic() - t)


# --------------------------------------------------------------------------- start


def _start(paths: Paths) -> LabInfo:
    _check_ports(paths)
    _fresh_directory(paths)
    _mount_tmpfs(paths)

    password = secrets.token_urlsafe(18)
    _timed("certificates", lambda: certs.make_all(paths))
    services.write_htpasswd(paths, password)
    services.write_resolv_conf(paths)
    services.write_hosts_toml(paths)
    for flavour in services.REGISTRY_FLAVOURS:
        services.write_registry_config(paths, flavour)
    services.write_nginx_conf(paths)
    services.nginx_test(paths)
    services.write_containerd_config(paths, SNAPSHOTTER)

    pids: dict[str, int] = {}
    py_env = services.python_env(paths)
    plan: list[tuple[str, list[str], dict[str, str] | None, Callable[[], str | None]]] = [
        ("dnsmasq", services.dnsmasq_argv(paths), None, services.dns_check),
        *[
            (
                f"registry-{f}",
                services.registry_argv(paths, f),
                None,
                services.registry_check(paths, f),
            )
            for f in services.REGISTRY_FLAVOURS
        ],
        (
            "token-server",
            services.token_server_argv(paths),
            py_env,
            services.token_server_check(paths),
        ),
        ("blackhole", services.blackhole_argv(paths), py_env, services.blackhole_check),
        ("reset-proxy", services.reset_proxy_argv(paths), py_env, services.reset_proxy_check),
        ("nginx", services.nginx_argv(paths), None, services.nginx_check),
        ("containerd", services.containerd_argv(paths), None, services.containerd_check(paths)),
    ]
    t = time.monotonic()
    for name, argv, env, _ in plan:
        pid = services.spawn(paths, name, argv, env)
        pids[name] = pid
        _record_pid(paths, name, pid)
    deadline = t + READY_BUDGET
    for name, _, _, check in plan:
        budget = max(3.0, deadline - time.monotonic())
        services.wait_ready(name, pids[name], check, paths.log(name), timeout=budget)
    log.info("%-28s %.2fs", "daemons ready", time.monotonic() - t)
    if services.tcp_state(REFUSED_PORT) != "refused":
        raise LabError(f"something listens on 127.0.0.1:{REFUSED_PORT}; it must stay closed")

    layouts: dict[str, images.Layout] = {}
    big_digest = ""

    def build() -> None:
        nonlocal big_digest
        layouts.update(images.build_all(paths.seed))
        big_digest = images.seed_big(paths.seed, paths.seed_cache)

    _timed("seed images built", build)
    _timed("seed images pushed", lambda: _push(paths, images.push_plan(REGISTRIES), password))
    _timed("blob removed", lambda: _remove_blob(paths, layouts["blobgone"]))
    good_digest = _check_digest(paths, "pullcheck/good", layouts["good"].digest)
    _check_digest(paths, "pullcheck/big", big_digest)

    all_images = dict(IMAGES)
    all_images["good_digest"] = f"{REGISTRIES['plain']}/pullcheck/good@{good_digest}"
    info = LabInfo(
        dir=str(paths.dir),
        endpoint="unix://" + str(paths.containerd_sock),
        resolv_conf=str(paths.resolv_conf),
        registry_config_path=str(paths.certs_d),
        ca_file=str(paths.ca_cert),
        dns_server=DNS_ADDR,
        content_dir=str(paths.containerd_root),
        registries=dict(REGISTRIES),
        images=all_images,
        username=USERNAME,
        password=password,
        pids=pids,
    )
    info.save()
    paths.lab_json.chmod(0o600)  # holds the lab password
    return info


def _add_big(paths: Paths, info: LabInfo) -> LabInfo:
    """Push ``big`` into a running lab started before it was a seed image (lock held)."""
    if "big" in info.images:
        return info
    t = time.monotonic()
    paths.seed.mkdir(parents=True, exist_ok=True)
    digest = images.seed_big(paths.seed, paths.seed_cache)
    _push(paths, [images.big_push(REGISTRIES)], info.password)
    _check_digest(paths, "pullcheck/big", digest)
    info.images["big"] = IMAGES["big"]
    info.save()
    log.info("%-28s %.2fs", "big image added", time.monotonic() - t)
    return info


def _push(paths: Paths, plan: list[images.Push], password: str) -> None:
    images.prepare_skopeo(paths.skopeo_dir, paths.ca_cert)
    env = services.clean_env(
        paths,
        HOME=str(paths.skopeo_dir),
        XDG_RUNTIME_DIR=str(paths.skopeo_dir),
        REGISTRY_AUTH_FILE=str(paths.skopeo_dir / "auth.json"),
        CONTAINERS_REGISTRIES_CONF=str(paths.skopeo_dir / "registries.conf"),
    )
    skopeo_log = paths.log("skopeo")

    def one(push: images.Push) -> str | None:
        argv = images.skopeo_argv(
            push,
            paths.seed,
            paths.skopeo_dir,
            paths.tmp,
            paths.resolv_conf,
            f"{USERNAME}:{password}",
        )
        try:
            result = subprocess.run(
                argv, capture_output=True, check=False, env=env, timeout=60, cwd=paths.dir
            )
        except subprocess.TimeoutExpired:
            return f"{push.dest}: skopeo timed out after 60s"
        out = (result.stdout + result.stderr).decode(errors="replace")
        with skopeo_log.open("a") as f:
            f.write(f"--- push {push.layout} -> {push.dest} (rc {result.returncode})\n{out}\n")
        if result.returncode != 0:
            return f"{push.dest}: skopeo exit {result.returncode}: {out.strip()[-600:]}"
        return None

    with ThreadPoolExecutor(max_workers=6) as pool:
        errors = [e for e in pool.map(one, plan) if e]
    if errors:
        raise LabError("pushing seed images failed:\n  " + "\n  ".join(errors))


def _remove_blob(paths: Paths, layout: images.Layout) -> None:
    digest = layout.notes["layer"]
    data = images.blob_data_file(paths.registry_storage("plain"), digest)
    if not data.exists():
        raise LabError(f"blobgone layer not found in registry storage at {data}")
    data.unlink()
    status, _, _ = services.http_get(PLAIN_PORT, f"/v2/pullcheck/blobgone/blobs/{digest}")
    if status != 404:
        raise LabError(f"blob {digest} still served after deleting its data file (HTTP {status})")


def _check_digest(paths: Paths, repository: str, want: str) -> str:
    """The plain registry serves ``repository:1.0`` with the digest ``want``."""
    accept = ", ".join([images.MT_MANIFEST, images.MT_INDEX])
    status, headers, _ = services.http_get(
        PLAIN_PORT, f"/v2/{repository}/manifests/1.0", method="HEAD", headers={"Accept": accept}
    )
    digest = headers.get("docker-content-digest", "")
    if status != 200 or digest != want:
        raise LabError(
            f"{repository} in the plain registry: HTTP {status}, digest {digest!r}, "
            f"want {want}; skopeo log:\n{log_tail(paths.log('skopeo'))}"
        )
    return digest


def host_summary(info: LabInfo) -> str:
    """A short human summary for ``python -m lab up``."""
    lines = [
        f"lab dir      {info.dir}",
        f"CRI endpoint {info.endpoint}",
        f"DNS          {info.dns_server}:53 (resolv.conf {info.resolv_conf})",
        f"hosts.toml   {info.registry_config_path}",
        f"CA           {info.ca_file}",
        f"credentials  {info.username} / {info.password}",
        *[f"node         {k:<8} {v}" for k, v in info.nodes.items()],
        *[f"agent        {k:<8} {v}" for k, v in nodes.agent_urls(info).items()],
        "registries:",
        *[f"  {k:<13} {v}" for k, v in info.registries.items()],
        "images:",
        *[f"  {k:<17} {v}" for k, v in info.images.items()],
        f"(all names resolve to {LOOPBACK} via the lab resolver only)",
    ]
    return "\n".join(lines)
