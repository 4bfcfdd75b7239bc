"""Extra lab nodes: more containerd instances, each with its own CRI socket.

For tests that need "several real agents, each with its own CRI socket". Node ``node-<i>`` is a
containerd configured exactly like the main one (same snapshotter, same hosts.toml ``config_path``,
same lab ``resolv.conf`` bind-mounted over ``/etc/resolv.conf`` in its private mount namespace), so
it pulls from the lab registries exactly like the main containerd. Its own files live in
``<dir>/nodes/<name>/``: ``containerd.toml``, ``root/`` (its own ``NODE_TMPFS_SIZE`` tmpfs, so a
test filling the main tmpfs does not break the nodes), ``state/``, ``run/containerd.sock``; its log
is ``<dir>/logs/containerd-<name>.log``.

``ensure_nodes(lab, 3)`` starts whatever is missing (or broken) of node-1..node-3 on the running lab
and returns their endpoints; nodes beyond the count are left alone (other sessions may use them).
``python -m lab up --nodes 3`` does the same from the shell; ``down`` stops the nodes with the lab.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from lab import services, state
from lab.errors import LabError
from lab.info import LabInfo
from lab.layout import NODE_TMPFS_SIZE, Containerd, Paths, node_name

__all__ = ["ensure_nodes", "node_names"]

log = logging.getLogger("lab")

UNIX_PATH_MAX = 107
READY_TIMEOUT = 30.0


def node_names(count: int) -> list[str]:
    """``node_names(3)`` -> ``["node-1", "node-2", "node-3"]``."""
    return [node_name(i) for i in range(1, count + 1)]


def ensure_nodes(lab: LabInfo | Path | str, count: int) -> dict[str, str]:
    """Make node-1..node-``count`` run on the lab; return their name -> CRI endpoint.

    Idempotent and cheap when they already run (one CRI Version call each). Also restarts any
    recorded node that died. ``lab`` is the lab's ``LabInfo`` (updated in place: ``nodes``,
    ``node_pids``) or its directory. The lab itself must be up (``lab.control.up``); raises
    ``LabError`` otherwise or when a node does not start.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, not {count}")
    directory = Path(lab.dir) if isinstance(lab, LabInfo) else Path(lab)
    paths = Paths(Path(os.path.abspath(directory)))  # noqa: PTH100 (no symlink resolution wanted)
    with state.locked(paths):
        if not paths.lab_json.exists():
            raise LabError(f"no lab running in {paths.dir}; start it first (`python -m lab up`)")
        info = ensure_locked(paths, LabInfo.load(paths.dir), count)
    if isinstance(lab, LabInfo):
        lab.nodes = dict(info.nodes)
        lab.node_pids = dict(info.node_pids)
    return {name: info.nodes[name] for name in node_names(count)}


def problem(paths: Paths, name: str, pid: int) -> str | None:
    """None if node ``name`` (containerd ``pid``) runs and answers CRI, else what is wrong."""
    c = paths.node(name)
    if not services.owned(pid, paths.dir):
        return f"{name} containerd (pid {pid}) is not running"
    if not state.is_mounted(c.root):
        return f"{name}: tmpfs not mounted at {c.root}"
    try:
        services.cri_version_check(c.endpoint)
    except Exception as e:
        return f"{name} containerd CRI does not answer: {e}"
    return None


def problems(paths: Paths, info: LabInfo) -> dict[str, str]:
    """Node name -> problem, for every recorded node that is not healthy."""
    found = {}
    for name, pid in sorted(info.node_pids.items()):
        reason = problem(paths, name, pid)
        if reason is not None:
            found[name] = reason
    return found


def ensure_locked(paths: Paths, info: LabInfo, count: int) -> LabInfo:
    """``ensure_nodes`` for a caller that holds the directory lock. Saves and returns ``info``."""
    wanted = sorted(set(node_names(count)) | set(info.node_pids), key=_index)
    start: list[str] = []
    for name in wanted:
        pid = info.node_pids.get(name)
        reason = "not started" if pid is None else problem(paths, name, pid)
        if reason is None:
            continue
        if pid is not None:
            log.warning("restarting %s: %s", name, reason)
            services.stop({name: pid}, paths.dir)
        start.append(name)
    if not start:
        return info
    t = time.monotonic()
    pids = _start(paths, start)
    for name, pid in pids.items():
        info.node_pids[name] = pid
        info.nodes[name] = paths.node(name).endpoint
    info.node_pids = dict(sorted(info.node_pids.items(), key=lambda kv: _index(kv[0])))
    info.nodes = dict(sorted(info.nodes.items(), key=lambda kv: _index(kv[0])))
    info.save()
    log.info("%-28s %.2fs", f"nodes ready ({', '.join(start)})", time.monotonic() - t)
    return info


def _index(name: str) -> int:
    with contextlib.suppress(ValueError):
        return int(name.rsplit("-", 1)[-1])
    return 1 << 30


def _prepare(paths: Paths, c: Containerd) -> None:
    if len(str(c.ttrpc_sock)) > UNIX_PATH_MAX:
        raise LabError(f"lab directory path too long for unix sockets: {c.ttrpc_sock}")
    for d in (c.root, c.state, c.run):
        d.mkdir(parents=True, exist_ok=True)
    c.run.chmod(0o711)
    if not state.is_mounted(c.root):
        state.mount_tmpfs(c.root, NODE_TMPFS_SIZE, f"pullcheck-lab-{c.name}")
    c.sock.unlink(missing_ok=True)  # a dead predecessor's socket would pass the first check
    services.write_containerd_config(paths, services.SNAPSHOTTER, c)


def _start(paths: Paths, names: list[str]) -> dict[str, int]:
    """Start the containerd of each node in ``names`` (in parallel); wait until all answer CRI."""
    pids: dict[str, int] = {}
    for name in names:
        c = paths.node(name)
        _prepare(paths, c)
        pid = services.spawn(paths, c.log_name, services.containerd_argv(paths, c))
        state.record_pid(paths, c.log_name, pid)
        pids[name] = pid
    deadline = time.monotonic() + READY_TIMEOUT
    try:
        for name, pid in pids.items():
            c = paths.node(name)
            budget = max(3.0, deadline - time.monotonic())
            services.wait_ready(
                f"containerd {name}",
                pid,
                services.containerd_check(paths, c),
                paths.log(c.log_name),
                timeout=budget,
            )
    except BaseException:
        services.stop(pids, paths.dir)  # no half-started node keeps its root locked
        raise
    return pids
