"""How fast the CLI starts and ends: whole processes, as a user meets them, no lab needed.

Each round runs every case once, in an order rotated by one each round, and times the whole
process (fork to exit, stdout and stderr to /dev/null); figures are medians over the rounds,
ratios are taken per round and then the median. Cases:

* floors: ``python -c pass`` (the interpreter with its site packages), ``ctr --help`` and
  ``crictl --help`` when installed (Go tools), and ``grpc+stubs``: a process that imports only
  grpc and the generated CRI stubs, the floor of a Python pull (``bench/cri_pull_bare.py``);
* ``pullcheck …`` through the console script users run: ``--help``, ``--version``,
  ``pull --help``, a usage error (``pull``), the pull command's whole fixed cost without network
  or runtime (``pull UPPER/Case:tag --json``: the engine is imported, the parser refuses the
  reference) and a command that loads the CRI client (``images`` on a missing socket);
* with ``--before DIR`` the same commands from another tree (``git archive HEAD | tar -x -C
  DIR``), paired in the same rounds;
* teardown: the same command ending through ``main()`` as the console script does (the process
  leaves at once) and through ``main(argv)`` (SystemExit, the interpreter frees every module).

Usage::

    .venv/bin/python bench/bench_cli_startup.py [--rounds 15] [--before DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cli_options import bounded_int

REPO = Path(__file__).resolve().parent.parent
PULLCHECK = str(Path(sys.executable).parent / "pullcheck")  # the console script
MISSING_SOCKET = "unix:///nonexistent/pullcheck-bench/cri.sock"
TARGET_HELP_S = 0.15

#: (name, arguments, exit status)
COMMANDS: list[tuple[str, list[str], int]] = [
    ("--help", ["--help"], 0),
    ("--version", ["--version"], 0),
    ("pull --help", ["pull", "--help"], 0),
    ("pull (usage error)", ["pull"], 2),
    ("pull BAD --json (engine, no I/O)", ["pull", "UPPER/Case:tag", "--json"], 2),
    ("images (missing socket)", ["images", "--endpoint", MISSING_SOCKET, "--json"], 1),
]
_FAST_EXIT = "from agent.cli import main; main()"
_INTERPRETER_EXIT = "import sys; from agent.cli import main; main(sys.argv[1:])"
_GRPC_STUBS = (
    "import sys; sys.path.insert(0, {bench!r}); import cri_pull_bare as bare; "
    "bare._stub_packages(); from agent.cri._pb.runtime.v1 import api_pb2, api_pb2_grpc"
)


@dataclass
class _Case:
    name: str
    argv: list[str]
    status: int
    env: dict[str, str]
    walls: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)

    def run(self) -> None:
        start = time.perf_counter()
        proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd="/",  # no source tree on the path by accident
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        self.walls.append(time.perf_counter() - start)
        self.rss_kib.append(int(usage.ru_maxrss))
        code = os.waitstatus_to_exitcode(status)
        if code != self.status:
            raise SystemExit(f"{self.name}: exit {code}, expected {self.status}: {self.argv}")


def _env(tree: Path | None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "PYTHONPATH" and not k.startswith(("PULLCHECK_", "CRICTL_", "CONTAINER_RUNTIME"))
    }
    if tree is None:
        return env
    if not (tree / "agent" / "__init__.py").is_file():
        raise SystemExit(f"--before {tree}: no agent/__init__.py there")
    env["PYTHONPATH"] = str(tree)
    loaded = subprocess.run(
        [sys.executable, "-c", "import agent.cli; print(agent.cli.__file__)"],
        env=env,
        cwd="/",
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not Path(loaded).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"--before {tree}: the interpreter loads {loaded} instead")
    return env


def _cases(before: Path | None) -> list[_Case]:
    env = _env(None)
    cases = [_Case("python -c pass", [sys.executable, "-c", "pass"], 0, env)]
    for tool in ("ctr", "crictl"):
        found = shutil.which(tool)
        if found:
            cases.append(_Case(f"{tool} --help (Go)", [found, "--help"], 0, env))
    if (REPO / "bench" / "cri_pull_bare.py").is_file():
        code = _GRPC_STUBS.format(bench=str(REPO / "bench"))
        cases.append(_Case("grpc+stubs (Python pull floor)", [sys.executable, "-c", code], 0, env))
    trees = [("", env)] + ([("before: ", _env(before))] if before is not None else [])
    for prefix, tree_env in trees:
        for name, args, status in COMMANDS:
            cases.append(_Case(f"{prefix}pullcheck {name}", [PULLCHECK, *args], status, tree_env))
    for name, args, status in COMMANDS[1:2] + COMMANDS[4:]:
        for how, code in (("fast exit", _FAST_EXIT), ("interpreter exit", _INTERPRETER_EXIT)):
            argv = [sys.executable, "-c", code, *args]
            cases.append(_Case(f"teardown, {how}: {name}", argv, status, env))
    return cases


def _median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


def _ratio(a: _Case, b: _Case) -> float:
    return round(statistics.median(x / y for x, y in zip(a.walls, b.walls, strict=True)), 2)


def _rows(cases: list[_Case]) -> dict[str, dict[str, float]]:
    """Per case: median wall time, median ratio to ``python -c pass``, median peak RSS."""
    python = next(case for case in cases if case.name == "python -c pass")
    return {
        case.name: {
            "wall_ms": _median_ms(case.walls),
            "x_python": _ratio(case, python),
            "peak_rss_mib": round(statistics.median(case.rss_kib) / 1024, 1),
        }
        for case in cases
    }


def _pairs(cases: list[_Case]) -> dict[str, float]:
    """After/before per command, and the teardown the fast exit saves (paired per round)."""
    by_name = {case.name: case for case in cases}
    pairs = {}
    for name, _, _ in COMMANDS:
        before = by_name.get(f"before: pullcheck {name}")
        if before is not None:
            pairs[f"pullcheck {name}: after/before"] = _ratio(by_name[f"pullcheck {name}"], before)
    for name, _, _ in COMMANDS[1:2] + COMMANDS[4:]:
        fast = by_name[f"teardown, fast exit: {name}"]
        slow = by_name[f"teardown, interpreter exit: {name}"]
        saved = statistics.median(s - f for f, s in zip(fast.walls, slow.walls, strict=True))
        pairs[f"teardown saved by the fast exit, {name} (ms)"] = round(saved * 1000, 1)
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=bounded_int(7, 201), default=15, help="7..201")
    parser.add_argument("--before", type=Path, help="another tree's CLI, paired in the rounds")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    cases = _cases(args.before)
    for case in cases:  # warm-up: page cache and .pyc files
        case.run()
        case.walls.clear()
        case.rss_kib.clear()
    for i in range(args.rounds):
        shift = i % len(cases)
        for case in cases[shift:] + cases[:shift]:
            case.run()
    rows, pairs = _rows(cases), _pairs(cases)
    help_ms = rows["pullcheck --help"]["wall_ms"]
    verdict = "met" if help_ms <= TARGET_HELP_S * 1000 else "NOT met"
    target = f"pullcheck --help <= {TARGET_HELP_S * 1000:.0f} ms: {verdict} ({help_ms} ms)"
    if args.json:
        print(json.dumps({"rounds": args.rounds, "cases": rows, "pairs": pairs, "target": target}))
        return
    print(f"{args.rounds} rounds; medians")
    print(f"{'case':58} {'wall ms':>9} {'x python':>9} {'RSS MiB':>8}")
    for name, row in rows.items():
        print(f"{name:58} {row['wall_ms']:9.1f} {row['x_python']:9.2f} {row['peak_rss_mib']:8.1f}")
    for name, value in pairs.items():
        print(f"{name:68} {value}")
    print(target)


if __name__ == "__main__":
    main()
