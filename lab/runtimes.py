"""containerd builds for the lab nodes: the system's 1.6 and Debian's newer ones, unpacked only.

``binary("1.7")`` / ``binary("2")`` return a containerd from Debian trixie / unstable, fetched
once into ``CACHE`` (``PULLCHECK_LAB_RUNTIMES``, default ``/var/cache/pullcheck-lab/runtimes``;
CI keeps it between runs on one machine) with a private apt configuration — its own sources list,
lists, status file and archive cache, so the system's apt state is untouched — then unpacked with
``dpkg-deb -x``, never installed. Those builds need only libc. ``"1.6"`` is the system package
(``/usr/bin/containerd``, Debian 12).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from lab.errors import LabError
from lab.services import SYSTEM_PATH
from lab.state import locked_file

__all__ = ["CACHE", "RUNTIMES", "binary", "config_version", "describe"]

CACHE = Path(os.environ.get("PULLCHECK_LAB_RUNTIMES", "/var/cache/pullcheck-lab/runtimes"))
SYSTEM_CONTAINERD = Path("/usr/bin/containerd")
# lab runtime name -> Debian suite of its package ("" = the installed system package)
SUITES: dict[str, str] = {"1.6": "", "1.7": "trixie", "2": "sid"}
RUNTIMES = tuple(SUITES)
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
MIRROR = "http://deb.debian.org/debian"
FETCH_TIMEOUT = 300


def check(runtime: str) -> str:
    """``runtime`` if it is a known lab runtime name, else LabError naming the choices."""
    if runtime not in SUITES:
        raise LabError(f"unknown containerd runtime {runtime!r}; choose one of {', '.join(SUITES)}")
    return runtime


def config_version(runtime: str) -> int:
    """containerd config file version: 3 for 2.x, 2 for 1.x."""
    return 3 if check(runtime).startswith("2") else 2


def binary(runtime: str) -> Path:
    """The containerd executable of ``runtime``; fetched and unpacked on first use."""
    suite = SUITES[check(runtime)]
    if not suite:
        return SYSTEM_CONTAINERD
    target = CACHE / suite / "usr" / "bin" / "containerd"
    if target.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with locked_file(CACHE / ".lock"):
        if not target.exists():
            _fetch(suite)
    return target


def describe(runtime: str) -> str:
    """``containerd --version`` of ``runtime``'s build (one line)."""
    result = subprocess.run(
        [str(binary(runtime)), "--version"], capture_output=True, text=True, check=False
    )
    return result.stdout.strip()


def _apt_options(apt: Path) -> list[str]:
    return [
        "-o", f"Dir::Etc::SourceList={apt / 'sources.list'}",
        "-o", f"Dir::Etc::SourceParts={apt / 'sources.list.d'}",
        "-o", f"Dir::Etc::Preferences={apt / 'preferences'}",
        "-o", f"Dir::Etc::PreferencesParts={apt / 'preferences.d'}",
        "-o", f"Dir::State::Lists={apt / 'lists'}",
        "-o", f"Dir::State::status={apt / 'status'}",
        "-o", f"Dir::Cache={apt / 'cache'}",
        "-o", f"Dir::Cache::archives={apt / 'cache' / 'archives'}",
        "-o", "Debug::NoLocking=1",
        "-o", "APT::Get::List-Cleanup=0",
        "-o", "APT::Sandbox::User=root",
    ]  # fmt: skip


def _run(argv: list[str], cwd: Path) -> None:
    try:
        result = subprocess.run(
            argv,
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
            timeout=FETCH_TIMEOUT,
            env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"},
        )
    except subprocess.TimeoutExpired as e:
        raise LabError(f"`{' '.join(argv[:2])}` took longer than {FETCH_TIMEOUT}s") from e
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-1500:]
        raise LabError(f"`{' '.join(argv[:2])} … {argv[-1]}` failed: {tail}")


def _fetch(suite: str) -> None:
    """Download containerd from ``suite`` with a private apt state and unpack it."""
    apt = CACHE / "apt"
    for sub in ("sources.list.d", "preferences.d", "lists/partial", "cache/archives/partial"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "status").touch()
    suites = [s for s in SUITES.values() if s]
    (apt / "sources.list").write_text(
        "".join(f"deb [signed-by={KEYRING}] {MIRROR} {s} main\n" for s in suites)
    )
    options = _apt_options(apt)
    debs = CACHE / "debs"
    debs.mkdir(exist_ok=True)
    _run(["apt-get", *options, "-q", "update"], cwd=CACHE)
    for old in debs.glob("containerd_*.deb"):
        old.unlink()
    _run(["apt-get", *options, "-q", "download", f"containerd/{suite}"], cwd=debs)
    found = sorted(debs.glob("containerd_*.deb"))
    if len(found) != 1:
        raise LabError(f"expected one containerd package from {suite}, found {found}")
    unpacked = CACHE / f".{suite}.tmp"
    shutil.rmtree(unpacked, ignore_errors=True)
    _run(["dpkg-deb", "-x", str(found[0]), str(unpacked)], cwd=CACHE)
    shutil.rmtree(CACHE / suite, ignore_errors=True)
    unpacked.rename(CACHE / suite)
    (CACHE / suite / "PACKAGE").write_text(found[0].name + "\n")
