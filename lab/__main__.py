"""``python -m lab [--dir DIR] up [--nodes N]|down|status|env|verify|nodes|fault|scenario``."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

from lab.control import down, health, host_summary, up
from lab.errors import LabError
from lab.info import DEFAULT_DIR, LabInfo
from lab.nodefaults import KINDS, clear, set_fault
from lab.nodes import nodes_table
from lab.runtimes import RUNTIMES
from lab.scenario import apply, load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab",
        description="The pullcheck lab: containerd (CRI), registries, fault injectors on loopback.",
    )
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help=f"lab directory (default {DEFAULT_DIR})"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="less output")
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="start the lab (or reuse a healthy one)")
    up_parser.add_argument(
        "--nodes",
        type=int,
        default=0,
        metavar="N",
        help="also run nodes node-1..node-N, each in its own namespaces with its own containerd "
        "and agent (added to a running lab)",
    )
    up_parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default=None,
        help="containerd of the nodes started now (default 1.6; 1.7 and 2 are fetched once)",
    )
    sub.add_parser("nodes", help="list the nodes: address, runtime, faults, agent")
    fault = sub.add_parser("fault", help="switch a node's fault on or off")
    fault.add_argument("node", help="node-<i>")
    fault.add_argument("kind", choices=[*KINDS, "clear"], help="the fault (clear: all off)")
    fault.add_argument("switch", nargs="?", choices=["on", "off"], default="on")
    scenario = sub.add_parser("scenario", help="apply a scenario file (TOML, see lab/scenario.py)")
    scenario.add_argument("file", type=Path)
    sub.add_parser("down", help="stop everything and unmount")
    sub.add_parser("status", help="exit 0 if the lab is healthy")
    sub.add_parser("env", help="print `export K=V` lines pointing pullcheck at the lab")
    verify = sub.add_parser("verify", help="pull every lab image via CRI and check the outcome")
    verify.add_argument("--markdown", action="store_true", help="print a markdown table")
    verify.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default=None,
        help="pull through a lab node (without faults) running this containerd "
        "(default: the lab's own containerd 1.6, on loopback)",
    )
    verify.add_argument("keys", nargs="*", help="only these image keys")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="lab: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "up":
            t = time.monotonic()
            if args.nodes < 0:
                parser.error("--nodes must be >= 0")
            info = up(args.dir, nodes=args.nodes, agents=True, runtime=args.runtime)
            if not args.quiet:
                print(host_summary(info))
            took = time.monotonic() - t
            print(f"lab is up ({took:.1f}s); `python -m lab env` prints the environment")
        elif args.command == "down":
            t = time.monotonic()
            down(args.dir)
            print(f"lab is down ({time.monotonic() - t:.1f}s)")
        elif args.command == "status":
            problem = health(args.dir)
            if problem is not None:
                print(f"lab is not running in {args.dir}: {problem}", file=sys.stderr)
                return 1
            print(f"lab is running in {args.dir}")
        elif args.command == "env":
            info = LabInfo.load(args.dir)
            for key, value in info.env().items():
                print(f"export {key}={shlex.quote(value)}")
        elif args.command == "nodes":
            print(nodes_table(LabInfo.load(args.dir)))
        elif args.command == "fault":
            if args.kind == "clear":
                clear(args.dir, args.node)
                print(f"{args.node}: no faults")
            else:
                active = set_fault(args.dir, args.node, args.kind, args.switch == "on")
                print(f"{args.node}: faults {', '.join(active) or 'none'}")
        elif args.command == "scenario":
            apply(args.dir, load(args.file))
            print(nodes_table(LabInfo.load(args.dir)))
        elif args.command == "verify":
            from lab.verify import run

            return run(
                LabInfo.load(args.dir), args.keys, markdown=args.markdown, runtime=args.runtime
            )
    except LabError as e:
        print(f"lab {args.command} failed: {e}", file=sys.stderr)
        return 1
    except FileNotFoundError as e:
        print(
            f"lab {args.command}: no lab in {args.dir} ({e.filename}); run `python -m lab up`",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
