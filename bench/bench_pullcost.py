"""Does a pull test cost more than the pull? Whole processes, as a user meets them, on the lab.

Each round runs every variant once, cold (the image and its content absent before each run), in
an order rotated by one each round, and times the whole process (start-up to exit):

* ``cli``: ``pullcheck pull <big> --json`` (stdout to /dev/null): runtime check, probes beside
  the pull, ImageStatus, PullImage, ImageStatus, RemoveImage, diagnosis, JSON;
* ``cli_before`` (with ``--before DIR``): the same CLI from another tree, e.g. the landed one
  (``git archive HEAD | tar -x -C DIR``), paired with the others in the same rounds;
* ``bare``: ``bench/cri_pull_bare.py``: one CRI PullImage then RemoveImage with the generated
  stubs and synchronous grpc (what ``crictl pull`` + ``crictl rmi`` do, in Python);
* ``ctr``: ``ctr images pull --plain-http`` then ``ctr images rm --sync`` (Go; two processes).
  ctr fetches in its own process with the host's resolver, which does not know the lab's names,
  so it pulls the same repository by the registry's address (``127.0.0.1:15000``); the registry
  serves the same bytes either way.

Printed: the median wall time of each, the medians of the per-round ratios (cli/bare, cli/ctr,
and cli_before's), CPU seconds of the process and of containerd per run (medians) and the CLI's
peak RSS. The image is the lab's ``big`` (64 MiB in 8 gzip layers). Run as root::

    .venv/bin/python bench/bench_pullcost.py --rounds 9 [--before /tmp/pullcheck-before]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cli_options import bounded_int

from lab import control, services
from lab.info import LabInfo
from lab.layout import PLAIN_PORT

REPO = Path(__file__).resolve().parent.parent
_ACCEPT = "application/vnd.oci.image.manifest.v1+json"
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class _Image:
    name: str  # as kubelet and pullcheck name it
    by_address: str  # the same repository for ctr, by the registry's address
    image_id: str  # the config digest: the runtime's image id (CRI adds it as a reference)
    blobs: frozenset[str]  # config and layer digests: none may be in the content store


@dataclass
class _Run:
    wall: float
    cpu: float  # user + system seconds of the process(es)
    runtime_cpu: float  # containerd's user + system seconds during the run
    max_rss_kib: int


@dataclass
class _Variant:
    name: str
    commands: list[list[str]]
    env: dict[str, str]
    cwd: Path
    runs: list[_Run] = field(default_factory=list)


def _image(lab: LabInfo) -> _Image:
    name = lab.images["big"]
    repository, tag = name.split("/", 1)[1].rsplit(":", 1)
    status, _, body = services.http_get(
        PLAIN_PORT, f"/v2/{repository}/manifests/{tag}", headers={"Accept": _ACCEPT}
    )
    if status != 200:
        raise SystemExit(f"{name}: the lab registry answered {status}; is the lab up to date?")
    manifest = json.loads(body)
    blobs = {manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])}
    return _Image(
        name=name,
        by_address=f"127.0.0.1:{PLAIN_PORT}/{repository}:{tag}",
        image_id=manifest["config"]["digest"],
        blobs=frozenset(blobs),
    )


def _ctr(lab: LabInfo, *args: str) -> list[str]:
    return ["ctr", "-a", lab.endpoint.removeprefix("unix://"), "-n", "k8s.io", *args]


def _make_cold(lab: LabInfo, image: _Image) -> None:
    """Remove every reference to the image and check that none of its blobs is left."""
    refs = {image.name, image.by_address, image.image_id}
    listed = _output(_ctr(lab, "images", "ls", "-q")).split()
    present = sorted(refs & set(listed))
    if present:
        remove = _ctr(lab, "images", "rm", "--sync", *present)
        subprocess.run(remove, check=True, capture_output=True)
    left = image.blobs & set(_output(_ctr(lab, "content", "ls", "-q")).split())
    if left:
        raise SystemExit(f"not cold: {len(left)} blob(s) of {image.name} still in the store")


def _output(argv: list[str]) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def _run(variant: _Variant, runtime_pid: int) -> _Run:
    wall = cpu = 0.0
    rss = 0
    runtime_before = _cpu_seconds(runtime_pid)
    for argv in variant.commands:
        with tempfile.TemporaryFile() as err:
            start = time.perf_counter()
            proc = subprocess.Popen(
                argv, env=variant.env, cwd=variant.cwd, stdout=subprocess.DEVNULL, stderr=err
            )
            _, status, usage = os.wait4(proc.pid, 0)
            wall += time.perf_counter() - start
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                err.seek(0)
                text = err.read().decode(errors="replace").strip()[-800:]
                raise SystemExit(f"{variant.name}: {argv[0]} exited {code}: {text}")
        cpu += usage.ru_utime + usage.ru_stime
        rss = max(rss, int(usage.ru_maxrss))
    return _Run(wall, cpu, _cpu_seconds(runtime_pid) - runtime_before, rss)


def _cli(name: str, tree: Path, lab: LabInfo, image: _Image) -> _Variant:
    if not (tree / "agent" / "__init__.py").is_file():
        raise SystemExit(f"{tree}: no agent/__init__.py there")
    env = {**os.environ, **lab.env(), "PYTHONPATH": str(tree)}
    loaded = subprocess.run(
        [sys.executable, "-c", "import agent; print(agent.__file__)"],
        env=env,
        cwd=tree,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not Path(loaded).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"{tree}: the interpreter loads {loaded} instead")
    pullcheck = str(Path(sys.executable).parent / "pullcheck")  # the console script users run
    return _Variant(name, [[pullcheck, "pull", image.name, "--json"]], env, tree)


def _variants(lab: LabInfo, image: _Image, before: Path | None) -> list[_Variant]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    bare = [sys.executable, str(REPO / "bench" / "cri_pull_bare.py"), lab.endpoint, image.name]
    ctr_pull = _ctr(lab, "images", "pull", "--plain-http", image.by_address)
    ctr_rm = _ctr(lab, "images", "rm", "--sync", image.by_address, image.image_id)
    variants = [
        _cli("cli", REPO, lab, image),
        _Variant("bare", [bare], env, REPO),
        _Variant("ctr", [ctr_pull, ctr_rm], env, REPO),
    ]
    if before is not None:
        variants.insert(1, _cli("cli_before", before, lab, image))
    return variants


def _median(values: list[float], digits: int = 3) -> float:
    return round(statistics.median(values), digits)


def _figures(variants: list[_Variant], rounds: int) -> dict[str, object]:
    by_name = {v.name: v for v in variants}
    out: dict[str, object] = {"rounds": rounds, "image": "lab big (64 MiB, 8 gzip layers)"}
    for v in variants:
        out[f"{v.name}_wall_s"] = _median([r.wall for r in v.runs])
        out[f"{v.name}_cpu_s"] = _median([r.cpu for r in v.runs])
        out[f"{v.name}_containerd_cpu_s"] = _median([r.runtime_cpu for r in v.runs])
    for cli in ("cli", "cli_before"):
        if cli not in by_name:
            continue
        for base in ("bare", "ctr"):
            ratios = [
                a.wall / b.wall for a, b in zip(by_name[cli].runs, by_name[base].runs, strict=True)
            ]
            out[f"{cli}/{base}"] = _median(ratios, 2)
            out[f"{cli}/{base}_rounds"] = [round(r, 2) for r in ratios]
        out[f"{cli}_peak_rss_mib"] = _median([r.max_rss_kib / 1024 for r in by_name[cli].runs], 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=bounded_int(7, 101), default=9, help="7..101")
    parser.add_argument("--before", type=Path, help="another tree's CLI, paired in the rounds")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    lab = control.up()
    image = _image(lab)
    runtime_pid = lab.pids["containerd"]
    variants = _variants(lab, image, args.before)
    for variant in variants:  # warm-up: page cache, .pyc files, registry
        _make_cold(lab, image)
        _run(variant, runtime_pid)
    for i in range(args.rounds):
        shift = i % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            _make_cold(lab, image)
            variant.runs.append(_run(variant, runtime_pid))
        print(f"round {i + 1}/{args.rounds} done", file=sys.stderr)
    _make_cold(lab, image)
    figures = _figures(variants, args.rounds)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for key, value in figures.items():
            print(f"{key:32} {value}")


if __name__ == "__main__":
    main()
