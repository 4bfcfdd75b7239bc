"""Where a real ``pullcheck agent``'s idle memory goes: each import's share, then the rest.

A child process runs the agent itself (``pullcheck agent --config …`` through ``agent.cli.main``,
on the lab's containerd and registries, like ``bench/bench_agent.py``) with an import hook
installed first. At the first import of each top-level package (and of each ``agent.<name>``
sub-package or module) the hook reads ``/proc/self/smaps_rollup`` before and after, and charges
the package only what it added itself: first imports of other packages nested inside it are
charged to those. After ``--idle`` seconds (the first connectivity round and readiness check
done) it takes the final reading and stops the agent. What the imports do not explain is the
agent at work: the app, TLS contexts, the probes' state, allocator slack, thread stacks.

Each run is done twice in separate processes: once for RSS (``Rss``, ``Anonymous``, file-backed =
the rest), once with ``tracemalloc`` started first for the Python heap (tracemalloc's own
bookkeeping inflates RSS, so the two never share a process). Figures are medians over ``--runs``.
``import`` statements and ``importlib.import_module`` are both measured; imports in two threads
at once blur each other's figures (the agent imports at start-up on one
thread; the connectivity round's imports run on the event loop's).

``.venv/bin/python bench/agent_memory.py [--runs 3] [--idle 3] [--tree DIR] [--env K=V ...]
[--json]``: ``--tree`` measures another source tree (``git archive REV | tar -x -C DIR``);
``--env`` sets a variable for the agent (``MALLOC_ARENA_MAX=2``, ``PYTHONMALLOC=malloc``).
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import importlib
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Final

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cli_options import bounded_int, env_setting, use_tree

_SCRIPT: Final = Path(__file__).resolve()
_MIB: Final = 1024 * 1024
_FIELDS: Final = ("rss", "anon", "file", "heap", "modules", "ms")
_INTERPRETER: Final = "(interpreter, site, this script)"
_AT_WORK: Final = "(not imports: the app at work, TLS contexts, probe state, allocator)"


# --- the child: the agent with the import hook ----------------------------------------------


def _rollup() -> tuple[float, float]:
    """(Rss, Anonymous) of this process in MiB, from ``/proc/self/smaps_rollup``."""
    rss = anon = 0.0
    with open("/proc/self/smaps_rollup", "rb") as f:  # noqa: PTH123 - cheap, hot path
        for line in f:
            if line.startswith(b"Rss:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith(b"Anonymous:"):
                anon = int(line.split()[1]) / 1024
    return rss, anon


def _heap() -> float:
    return tracemalloc.get_traced_memory()[0] / _MIB if tracemalloc.is_tracing() else 0.0


def _reading() -> dict[str, float]:
    rss, anon = _rollup()
    return {
        "rss": rss,
        "anon": anon,
        "file": rss - anon,
        "heap": _heap(),
        "modules": float(len(sys.modules)),
        "ms": time.perf_counter() * 1000,
    }


_DEPTH = 1  # components of a third-party module's name that make its key (``--depth``)


def _key(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[: max(_DEPTH, 2) if parts[0] == "agent" else _DEPTH])


class _Hook:
    """``builtins.__import__`` wrapped: self shares of every first import, per key."""

    def __init__(self) -> None:
        self.shares: dict[str, dict[str, float]] = {}
        self._local = threading.local()
        self._real = builtins.__import__

    def install(self) -> None:
        builtins.__import__ = self
        real_import_module = importlib.import_module

        def import_module(name: str, package: str | None = None) -> ModuleType:
            absolute = importlib.util.resolve_name(name, package) if name[0] == "." else name
            return self._measured(absolute, lambda: real_import_module(name, package))

        importlib.import_module = import_module

    def __call__(
        self,
        name: str,
        globals: Mapping[str, object] | None = None,
        locals: Mapping[str, object] | None = None,
        fromlist: Sequence[str] | None = (),
        level: int = 0,
    ) -> ModuleType:
        absolute = name
        if level:
            package = str((globals or {}).get("__package__") or "")
            absolute = importlib.util.resolve_name("." * level + name, package)
        return self._measured(absolute, lambda: self._real(name, globals, locals, fromlist, level))

    def _measured(self, name: str, load: Callable[[], ModuleType]) -> ModuleType:
        key = _key(name)
        if key in sys.modules or key in self.shares:
            return load()
        stack: list[dict[str, float]] = self._local.__dict__.setdefault("stack", [])
        children = dict.fromkeys(_FIELDS, 0.0)
        stack.append(children)
        self.shares[key] = {}  # taken: nested imports of the same key are its own
        before = _reading()
        try:
            return load()
        finally:
            after = _reading()
            stack.pop()
            total = {f: after[f] - before[f] for f in _FIELDS}
            self.shares[key] = {f: total[f] - children[f] for f in _FIELDS}
            if stack:
                for f in _FIELDS:
                    stack[-1][f] += total[f]


def _child(args: argparse.Namespace) -> None:
    global _DEPTH
    _DEPTH = int(args.depth)
    if args.child == "heap":
        tracemalloc.start()
    start = _reading()
    hook = _Hook()
    hook.install()

    def finish() -> None:
        time.sleep(args.idle)
        # then until no module has been imported for a second (tracemalloc slows the round)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            count = len(sys.modules)
            time.sleep(1)
            if len(sys.modules) == count:
                break
        end = _reading()
        imported = {f: sum(s.get(f, 0.0) for s in hook.shares.values()) for f in _FIELDS}
        shares = dict(hook.shares)
        shares[_INTERPRETER] = {**start, "ms": 0.0}
        shares[_AT_WORK] = {
            f: end[f] - start[f] - imported[f] for f in _FIELDS if f not in ("modules", "ms")
        }
        shares["(total)"] = {**end, "ms": 0.0}
        Path(args.out).write_text(json.dumps(shares))
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=finish, daemon=True).start()
    from agent.cli import main

    with contextlib.suppress(SystemExit):
        main(["agent", "--config", args.config, "--log-level", "warning"])


# --- the parent: lab config, runs, medians, the table ---------------------------------------


def _config(workdir: Path) -> Path:
    sys.path.insert(0, str(_SCRIPT.parent.parent))
    import yaml

    from lab import control
    from lab.servers import TOKEN, agent_config, free_port

    lab = control.up()
    token = workdir / "token"
    token.write_text(TOKEN + "\n")
    config = agent_config(lab, token, lab.endpoint, agent={"listen": f"127.0.0.1:{free_port()}"})
    path = workdir / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run(
    mode: str, config: Path, idle: float, depth: int, env: dict[str, str]
) -> dict[str, dict[str, float]]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, str(_SCRIPT), "--child", mode, "--config", str(config)]
        command += ["--idle", str(idle), "--depth", str(depth), "--out", out.name]
        # uvicorn re-raises the SIGTERM that stopped it once it has shut down
        done = subprocess.run(command, check=False, env=env, timeout=idle + 120)
        if done.returncode not in (0, -signal.SIGTERM):
            raise SystemExit(f"the agent's measuring run failed: exit {done.returncode}")
        shares: dict[str, dict[str, float]] = json.loads(Path(out.name).read_text())
        return shares


def measure(
    runs: int, idle: float, depth: int, extra_env: dict[str, str]
) -> dict[str, dict[str, float]]:
    """Medians over ``runs`` of each key's share: RSS fields from plain runs, ``heap`` from
    tracemalloc runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULLCHECK_")} | extra_env
    with tempfile.TemporaryDirectory(prefix="pullcheck-memory-") as tmp:
        config = _config(Path(tmp))
        plain = [_run("rss", config, idle, depth, env) for _ in range(runs)]
        traced = [_run("heap", config, idle, depth, env) for _ in range(runs)]
    keys = {k for run in plain for k in run}
    table: dict[str, dict[str, float]] = {}
    for key in keys:
        row = {
            f: statistics.median(run.get(key, {}).get(f, 0.0) for run in plain)
            for f in ("rss", "anon", "file", "modules", "ms")
        }
        row["heap"] = statistics.median(run.get(key, {}).get("heap", 0.0) for run in traced)
        table[key] = {f: round(v, 2) for f, v in row.items()}
    return table


def _print(table: dict[str, dict[str, float]], top: int) -> None:
    total = table.pop("(total)")
    rows = sorted(table.items(), key=lambda kv: -kv[1]["rss"])
    print(f"{'share':66} {'RSS':>6} {'anon':>6} {'file':>6} {'pyheap':>6} {'mods':>5} {'ms':>6}")
    for key, row in rows[:top]:
        print(
            f"{key:66} {row['rss']:6.1f} {row['anon']:6.1f} {row['file']:6.1f} "
            f"{row['heap']:6.1f} {row.get('modules', 0):5.0f} {row.get('ms', 0):6.1f}"
        )
    rest = rows[top:]
    if rest:
        summed = {f: sum(r[f] for _, r in rest) for f in ("rss", "anon", "file", "heap")}
        print(
            f"{f'({len(rest)} more)':66} {summed['rss']:6.1f} {summed['anon']:6.1f} "
            f"{summed['file']:6.1f} {summed['heap']:6.1f}"
        )
    print(
        f"{'(total, idle agent)':66} {total['rss']:6.1f} {total['anon']:6.1f} "
        f"{total['file']:6.1f} {total['heap']:6.1f} {total['modules']:5.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=bounded_int(1, 20), default=3, help="runs per mode (median)")
    parser.add_argument("--idle", type=bounded_int(1, 60), default=3, help="seconds before reading")
    parser.add_argument("--tree", type=Path, help="measure the agent of this source tree")
    parser.add_argument("--env", type=env_setting, action="append", default=[], help="NAME=VALUE")
    parser.add_argument(
        "--depth", type=bounded_int(1, 4), default=1, help="name components per share (agent: 2)"
    )
    parser.add_argument("--top", type=bounded_int(1, 500), default=30, help="rows shown")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", choices=("rss", "heap"), help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    if args.tree is not None:
        use_tree(args.tree)
    table = measure(args.runs, args.idle, args.depth, dict(args.env))
    if args.json:
        print(json.dumps(table, indent=2, sort_keys=True))
    else:
        _print(table, args.top)


if __name__ == "__main__":
    main()
