"""Lab nodes as hosts: each in its own network and mount namespace, with its own containerd.

Node ``node-<i>`` has the address ``10.99.0.(10+i)`` on the lab bridge (``lab.netns``), its own
``/etc/resolv.conf`` (the bridge resolver ``10.99.0.1``), ``/etc/hosts``, trust store
(``/etc/ssl``) and hosts.toml tree, its own containerd (1.6, 1.7 or 2.x: ``lab.runtimes``) on its
own tmpfs, and, when asked for, its own agent listening on ``10.99.0.(10+i):8479`` as a
host-network DaemonSet pod would. The registries are reached over the bridge; the CRI socket stays
on the host's filesystem (``<dir>/nodes/<name>/run/containerd.sock``), so the host talks CRI to
every node directly. Files: ``lab.nodefiles``; faults: ``lab.nodefaults``.

Processes of a node (all recorded in ``pids.json``): ``holder-<name>`` (owns the namespaces: the
mounts and the network live as long as it does), ``containerd-<name>`` and ``agent-<name>``
(both entered into the holder's namespaces with ``nsenter``). The bridge's resolvers
(``lab.resolvers``) run once for all nodes.

``ensure_nodes(lab, 3, agents=True)`` starts whatever is missing or broken of node-1..node-3 and
returns their CRI endpoints; nodes beyond the count are kept. ``python -m lab up --nodes 3`` does
the same with agents; ``down`` stops everything and removes the bridge.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from lab import netns, nodefiles, resolvers, runtimes, services, state
from lab.errors import LabError
from lab.info import LabInfo
from lab.layout import Paths, node_name
from lab.nodefiles import AGENT_PORT, NodeFiles, NodeState

__all__ = [
    "AGENT_PORT",
    "agent_url",
    "agent_urls",
    "discovery_section",
    "ensure_nodes",
    "holder_pid",
    "lab_paths",
    "node_index",
    "node_names",
    "nodes_table",
    "restart_containerd",
    "set_runtime",
]

log = logging.getLogger("lab")

READY_TIMEOUT = 30.0
AGENT_READY_TIMEOUT = 60.0
BRIDGE_SERVICES = ("dnsmasq-bridge", "dnsmasq-nxdomain", "servfail")


def node_names(count: int) -> list[str]:
    """``node_names(3)`` -> ``["node-1", "node-2", "node-3"]``."""
    return [node_name(i) for i in range(1, count + 1)]


def node_index(name: str) -> int:
    """``node_index("node-2")`` -> 2; LabError for anything that is not a lab node name."""
    prefix, _, number = name.rpartition("-")
    if prefix != "node" or not number.isdigit() or not 1 <= int(number) <= netns.MAX_NODES:
        raise LabError(f"not a lab node name: {name!r} (node-1 .. node-{netns.MAX_NODES})")
    return int(number)


def agent_url(name: str) -> str:
    """``agent_url("node-1")`` -> ``"http://10.99.0.11:8479"``."""
    return f"http://{netns.node_address(node_index(name))}:{AGENT_PORT}"


def agent_urls(lab: LabInfo) -> dict[str, str]:
    """Node name -> agent URL, for every node of ``lab`` that runs an agent."""
    paths = lab_paths(lab)
    pids = state.recorded_pids(paths)
    return {n: agent_url(n) for n in lab.nodes if f"agent-{n}" in pids}


def nodes_table(lab: LabInfo) -> str:
    """One line per node: name, address, containerd, agent, faults (``python -m lab nodes``)."""
    paths = lab_paths(lab)
    urls = agent_urls(lab)
    lines = []
    for name in lab.nodes:
        try:
            node_state = NodeFiles(paths, name).load()
        except (OSError, ValueError, TypeError):
            lines.append(f"{name:<8} (no node.json)")
            continue
        lines.append(
            f"{name:<8} {netns.node_address(node_state.index):<11} "
            f"containerd {node_state.runtime:<4} agent {urls.get(name, '-'):<22} "
            f"faults: {', '.join(node_state.faults) or 'none'}"
        )
    return "\n".join(lines) or "no nodes"


def discovery_section(lab: LabInfo) -> dict[str, object]:
    """The aggregator's ``discovery`` settings that find the nodes' agents: DNS, as in a cluster."""
    return {
        "mode": "dns",
        "service": resolvers.AGENTS_NAME,
        "resolv_conf": str(nodefiles.discovery_resolv_conf(lab_paths(lab))),
        "agent_port": AGENT_PORT,
        "ip_family": "ipv4",
        "refresh": 1,
    }


def lab_paths(lab: LabInfo | Path | str) -> Paths:
    directory = Path(lab.dir) if isinstance(lab, LabInfo) else Path(lab)
    return Paths(Path(os.path.abspath(directory)))  # noqa: PTH100 (no symlink resolution wanted)


def ensure_nodes(
    lab: LabInfo | Path | str,
    count: int,
    *,
    agents: bool = False,
    runtime: str | None = None,
    names: Sequence[str] = (),
) -> dict[str, str]:
    """Make node-1..node-``count`` (and the nodes ``names``) run on the lab; return their
    name -> CRI endpoint.

    Idempotent and cheap when they already run. Also restarts any recorded node (or part of one)
    that died. ``agents``: every node also runs its agent. ``runtime``: the containerd of nodes
    started now (existing nodes keep theirs; see ``set_runtime``). ``lab`` is the lab's
    ``LabInfo`` (updated in place: ``nodes``, ``node_pids``) or its directory. The lab must be up.
    """
    if not 0 <= count <= netns.MAX_NODES:
        raise ValueError(f"count must be 0..{netns.MAX_NODES}, not {count}")
    if runtime is not None:
        runtimes.check(runtime)
    wanted = list(dict.fromkeys([*node_names(count), *names]))
    for name in wanted:
        node_index(name)  # LabError for anything that is not a node name
    paths = lab_paths(lab)
    with state.locked(paths):
        if not paths.lab_json.exists():
            raise LabError(f"no lab running in {paths.dir}; start it first (`python -m lab up`)")
        info = ensure_locked(paths, LabInfo.load(paths.dir), wanted, agents=agents, runtime=runtime)
    if isinstance(lab, LabInfo):
        lab.nodes = dict(info.nodes)
        lab.node_pids = dict(info.node_pids)
    return {name: info.nodes[name] for name in wanted}


def holder_pid(paths: Paths, name: str) -> int | None:
    """The pid holding node ``name``'s namespaces, if it runs."""
    pid = state.recorded_pids(paths).get(f"holder-{name}")
    return pid if pid is not None and services.owned(pid, paths.dir) else None


def _mounted_in(pid: int, target: Path) -> bool:
    try:
        lines = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    except OSError:
        return False
    return any(line.split()[4] == str(target) for line in lines)


def _agent_problem(name: str) -> str | None:
    conn = http.client.HTTPConnection(netns.node_address(node_index(name)), AGENT_PORT, timeout=2)
    try:
        conn.request("GET", "/healthz")
        status = conn.getresponse().status
    except OSError as e:
        return f"{name} agent does not answer: {e}"
    finally:
        conn.close()
    return None if status == 200 else f"{name} agent /healthz gave {status}"


def problem(paths: Paths, name: str, pid: int) -> str | None:
    """None if node ``name`` (containerd ``pid``) and its holder and agent are healthy."""
    files = NodeFiles(paths, name)
    holder = holder_pid(paths, name)
    if holder is None:
        return f"{name}: the process holding its namespaces is not running"
    if not _mounted_in(holder, files.containerd.root):
        return f"{name}: tmpfs not mounted at {files.containerd.root} in the node"
    if not services.owned(pid, paths.dir):
        return f"{name} containerd (pid {pid}) is not running"
    try:
        services.cri_version_check(files.containerd.endpoint)
    except Exception as e:
        return f"{name} containerd CRI does not answer: {e}"
    agent = state.recorded_pids(paths).get(f"agent-{name}")
    if agent is not None:
        if not services.owned(agent, paths.dir):
            return f"{name} agent (pid {agent}) is not running"
        return _agent_problem(name)
    return None


def problems(paths: Paths, info: LabInfo) -> dict[str, str]:
    """Node name -> problem, for every recorded node that is not healthy."""
    found = {}
    for name, pid in sorted(info.node_pids.items()):
        reason = problem(paths, name, pid)
        if reason is not None:
            found[name] = reason
    return found


def ensure_locked(
    paths: Paths,
    info: LabInfo,
    names: Sequence[str],
    *,
    agents: bool = False,
    runtime: str | None = None,
) -> LabInfo:
    """``ensure_nodes`` for a caller that holds the directory lock. Saves and returns ``info``."""
    wanted = sorted(set(names) | set(info.node_pids), key=node_index)
    todo = []
    for name in wanted:
        pid = info.node_pids.get(name)
        needs_agent = agents and f"agent-{name}" not in state.recorded_pids(paths)
        reason = "not started" if pid is None else problem(paths, name, pid)
        if reason is None and not needs_agent:
            continue
        if reason is not None and pid is not None:
            log.warning("restarting %s: %s", name, reason)
        todo.append(name)
    if not todo and _bridge_services_ok(paths):
        return info
    t = time.monotonic()
    netns.ensure_bridge()
    nodefiles.write_net_files(paths)
    _ensure_bridge_services(paths, wanted)
    for name in todo:
        files = NodeFiles(paths, name)
        node_state = _state_for(files, name, runtime, agents)
        info.node_pids[name] = _ensure_node(paths, info, files, node_state)
        info.nodes[name] = files.containerd.endpoint
    info.node_pids = dict(sorted(info.node_pids.items(), key=lambda kv: node_index(kv[0])))
    info.nodes = dict(sorted(info.nodes.items(), key=lambda kv: node_index(kv[0])))
    info.save()
    _write_hosts(paths, list(info.nodes))
    if todo:
        log.info("%-28s %.2fs", f"nodes ready ({', '.join(todo)})", time.monotonic() - t)
    return info


def _state_for(files: NodeFiles, name: str, runtime: str | None, agents: bool) -> NodeState:
    try:
        node_state = files.load()
    except (OSError, ValueError, TypeError):
        node_state = NodeState(index=node_index(name))
    if runtime is not None and not files.state_file.exists():
        node_state.runtime = runtime
    node_state.agent = node_state.agent or agents
    return node_state


def _bridge_services_ok(paths: Paths) -> bool:
    pids = state.recorded_pids(paths)
    return all(services.owned(pids.get(n, 0), paths.dir) for n in BRIDGE_SERVICES)


def _ensure_bridge_services(paths: Paths, names: list[str]) -> None:
    """The bridge resolvers (``lab.resolvers``); started if not running."""
    d = nodefiles.net_dir(paths)
    if not (d / "hosts").exists():  # dnsmasq reads it at start; later changes are SIGHUPed
        _write_hosts(paths, names, reload=False)
    pids = state.recorded_pids(paths)
    plan: list[tuple[str, list[str], dict[str, str] | None]] = [
        ("dnsmasq-bridge", resolvers.bridge_dnsmasq_argv(d), None),
        ("dnsmasq-nxdomain", resolvers.nxdomain_dnsmasq_argv(d), None),
        (
            "servfail",
            [sys.executable, "-m", "lab.resolvers", "servfail", "--listen", netns.SERVFAIL_DNS,
             "--lab-dir", str(paths.dir)],
            services.python_env(paths),
        ),
    ]  # fmt: skip
    started = {}
    for name, argv, env in plan:
        if services.owned(pids.get(name, 0), paths.dir):
            continue
        pid = services.spawn(paths, name, argv, env)
        state.record_pid(paths, name, pid)
        started[name] = pid
    for name, pid in started.items():
        services.wait_ready(name, pid, lambda: None, paths.log(name), timeout=5)
    if started:
        time.sleep(0.2)  # bind() happens right after start; the nodes' first query is later


def _write_hosts(paths: Paths, names: list[str], *, reload: bool = True) -> None:
    """The bridge resolver's hosts file (``agents.pullcheck.test`` = every node); SIGHUP it."""
    addresses = {n: netns.node_address(node_index(n)) for n in names}
    hosts = nodefiles.net_dir(paths) / "hosts"
    text = resolvers.hosts_text(addresses)
    if hosts.exists() and hosts.read_text() == text:
        return
    hosts.write_text(text)
    pid = state.recorded_pids(paths).get("dnsmasq-bridge")
    if reload and pid is not None and services.owned(pid, paths.dir):
        os.kill(pid, signal.SIGHUP)


def _ensure_node(paths: Paths, info: LabInfo, files: NodeFiles, node_state: NodeState) -> int:
    """Bring node ``files.name`` to health: holder, containerd, agent. Returns containerd's pid."""
    from lab import nodefaults

    name = files.name
    pids = state.recorded_pids(paths)
    holder = holder_pid(paths, name)
    if holder is None or not _mounted_in(holder, files.containerd.root):
        _stop(paths, [f"agent-{name}", files.containerd.log_name, f"holder-{name}"])
        if state.is_mounted(files.containerd.root):  # an older lab's node: tmpfs on the host
            netns.run(["umount", "-l", str(files.containerd.root)], check=False)
        nodefiles.prepare(files, node_state)
        holder = _start_holder(paths, files, node_state.index)
        nodefaults.reapply(paths, name)
        pids = state.recorded_pids(paths)
    containerd = pids.get(files.containerd.log_name, 0)
    if not services.owned(containerd, paths.dir) or _cri_problem(files):
        _stop(paths, [files.containerd.log_name])
        containerd = _start_containerd(paths, files, holder, node_state)
    if node_state.agent:
        agent = pids.get(f"agent-{name}", 0)
        if not services.owned(agent, paths.dir) or _agent_problem(name):
            _stop(paths, [f"agent-{name}"])
            _start_agent(paths, info, files, holder, node_state.index)
    files.save(node_state)
    return containerd


def _cri_problem(files: NodeFiles) -> str | None:
    try:
        services.cri_version_check(files.containerd.endpoint)
    except Exception as e:
        return str(e)
    return None


def _stop(paths: Paths, names: list[str]) -> None:
    pids = state.recorded_pids(paths)
    services.stop({n: pids[n] for n in names if n in pids}, paths.dir)


def _start_holder(paths: Paths, files: NodeFiles, index: int) -> int:
    argv = [
        *["unshare", "--net", "--mount", "--propagation", "private"],
        *["sh", "-c", nodefiles.holder_script(files)],
    ]
    name = f"holder-{files.name}"
    pid = services.spawn(paths, name, argv)
    state.record_pid(paths, name, pid)
    root = files.containerd.root

    def mounted() -> str | None:
        return None if _mounted_in(pid, root) else f"{root} not mounted in the node yet"

    services.wait_ready(name, pid, mounted, paths.log(name), timeout=10)
    netns.attach(index, pid)
    return pid


def node_env(paths: Paths, proxy: str | None = None) -> dict[str, str]:
    """containerd's environment in a node (``proxy``: HTTP(S)_PROXY, as a systemd drop-in sets)."""
    env = services.clean_env(paths)
    if proxy:
        for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env[key] = proxy
    return env


def _start_containerd(paths: Paths, files: NodeFiles, holder: int, node_state: NodeState) -> int:
    from lab import nodefaults

    c = files.containerd
    c.sock.unlink(missing_ok=True)
    nodefiles.write_containerd_config(files, node_state.runtime)
    argv = [
        *["nsenter", "-t", str(holder), "-n", "-m", "--"],
        *[str(runtimes.binary(node_state.runtime)), "--config", str(c.config)],
    ]
    env = node_env(paths, nodefaults.proxy_for(node_state))
    pid = services.spawn(paths, c.log_name, argv, env)
    state.record_pid(paths, c.log_name, pid)
    services.wait_ready(
        f"containerd {files.name}",
        pid,
        services.containerd_check(paths, c),
        paths.log(c.log_name),
        timeout=READY_TIMEOUT,
    )
    return pid


def _start_agent(paths: Paths, info: LabInfo, files: NodeFiles, holder: int, index: int) -> int:
    nodefiles.write_agent_config(files, index, info)
    argv = [
        *["nsenter", "-t", str(holder), "-n", "-m", "--"],
        *[sys.executable, "-m", "agent", "agent", "--config", str(files.agent_config)],
    ]
    env = services.python_env(paths)
    env["NODE_NAME"] = files.name
    name = f"agent-{files.name}"
    pid = services.spawn(paths, name, argv, env)
    state.record_pid(paths, name, pid)
    services.wait_ready(
        name,
        pid,
        lambda: _agent_problem(files.name),
        paths.log(name),
        timeout=AGENT_READY_TIMEOUT,
    )
    return pid


def restart_containerd(lab: LabInfo | Path | str, name: str) -> int:
    """Restart node ``name``'s containerd (new environment/config; its images stay). New pid."""
    paths = lab_paths(lab)
    with state.locked(paths):
        info = LabInfo.load(paths.dir)
        files = NodeFiles(paths, name)
        holder = holder_pid(paths, name)
        if name not in info.node_pids or holder is None:
            raise LabError(f"{name} is not running; start it with ensure_nodes")
        _stop(paths, [files.containerd.log_name])
        pid = _start_containerd(paths, files, holder, files.load())
        info.node_pids[name] = pid
        info.save()
    if isinstance(lab, LabInfo):
        lab.node_pids[name] = pid
    return pid


def set_runtime(lab: LabInfo | Path | str, names: list[str], runtime: str) -> None:
    """Run containerd ``runtime`` on each node in ``names`` (restarted only if it changes).

    A node changing runtime starts with an empty image store (the metadata formats differ).
    """
    runtimes.check(runtime)
    runtimes.binary(runtime)  # fetch before touching any node
    paths = lab_paths(lab)
    for name in names:
        files = NodeFiles(paths, name)
        node_state = files.load()
        if node_state.runtime == runtime:
            continue
        node_state.runtime = runtime
        files.save(node_state)
        holder = holder_pid(paths, name)
        if holder is not None:
            with state.locked(paths):
                _stop(paths, [files.containerd.log_name])
            _wipe_root(holder, files)
        restart_containerd(lab, name)


def _wipe_root(holder: int, files: NodeFiles) -> None:
    """Empty the node's containerd root (inside the node's mount namespace)."""
    netns.run(
        [
            *["nsenter", "-t", str(holder), "-m", "--"],
            *["sh", "-c", f'umount -R "{files.containerd.root}"/* 2>/dev/null; '
              f'rm -rf "{files.containerd.root}"/* '],
        ],
        check=False,
    )  # fmt: skip


def teardown(paths: Paths) -> None:
    """After every lab process was stopped: remove the bridge and what is left of the nodes."""
    with contextlib.suppress(LabError):
        netns.teardown()
