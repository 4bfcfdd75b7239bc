"""Bookkeeping shared by ``control`` and ``nodes``: the directory lock, recorded pids, mounts."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from lab.errors import LabError
from lab.layout import Paths
from lab.services import SYSTEM_PATH


@contextlib.contextmanager
def locked(paths: Paths) -> Iterator[None]:
    """Serialise up/down/ensure_nodes on one directory (e.g. pytest-xdist workers sharing the lab).

    Not reentrant: flock on a second descriptor of the same file blocks even in the same process.
    """
    paths.dir.mkdir(parents=True, exist_ok=True)
    with locked_file(paths.lock):
        yield


@contextlib.contextmanager
def locked_file(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if absent) for the block; not reentrant."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def recorded_pids(paths: Paths) -> dict[str, int]:
    """Every pid the lab in ``paths`` ever recorded (pids.json, lab.json pids and node_pids)."""
    pids: dict[str, int] = {}
    for f in (paths.pids_json, paths.lab_json):
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            data = json.loads(f.read_text())
            if f == paths.lab_json:
                raw = data.get("pids", {})
                node_pids = data.get("node_pids", {})
                raw.update({paths.node(k).log_name: v for k, v in node_pids.items()})
            else:
                raw = data
            pids.update({str(k): int(v) for k, v in raw.items()})
    return pids


def record_pid(paths: Paths, name: str, pid: int) -> None:
    """Remember ``pid`` in pids.json before waiting for it, so ``down`` finds it even if we die."""
    pids = recorded_pids(paths)
    pids[name] = pid
    tmp = paths.pids_json.with_suffix(".tmp")
    tmp.write_text(json.dumps(pids, indent=2) + "\n")
    tmp.replace(paths.pids_json)


def mounts_under(directory: Path) -> list[str]:
    """Mount points at or below ``directory`` in this mount namespace, deepest first."""
    prefix = str(directory)
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            mount_point = line.split()[4].replace("\\040", " ")
            if mount_point == prefix or mount_point.startswith(prefix + "/"):
                found.append(mount_point)
    return sorted(found, key=len, reverse=True)


def is_mounted(target: Path) -> bool:
    return str(target) in mounts_under(target)


def env() -> dict[str, str]:
    return {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"}


def mount_tmpfs(target: Path, size: str, source: str) -> None:
    """Mount a ``size``-limited tmpfs (mode 0711) at ``target``."""
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0711", source, str(target)],
        capture_output=True,
        check=False,
        env=env(),
    )
    if result.returncode != 0:
        raise LabError(f"cannot mount tmpfs at {target}: {result.stderr.decode().strip()}")
