"""pullcheck's container image run the way the manifests run it, against the lab.

For ``tests/image`` and ``bench/bench_image.py``. The ``podman run`` options are read from the
workload itself (``manifests/base/agent-daemonset.yaml``, ``aggregator-deployment.yaml``):
host network, user and groups, read-only root filesystem, dropped capabilities, no privilege
escalation, the runtime's default seccomp profile, CPU and memory limits, env, command, and
every volume mount with its read-only flag. Each volume's source is given by the caller: the
lab's file or directory that stands for the node's (the CRI socket's directory, ``certs.d``,
``resolv.conf``), the host's own (``/etc/hosts``, the trust store), or a prepared directory for
a ConfigMap or Secret; an ``emptyDir`` becomes a tmpfs of its ``sizeLimit``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from lab.errors import LabError
from lab.info import LabInfo
from lab.servers import TOKEN, free_port, merge

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests" / "base"
IMAGE_ENV = "PULLCHECK_IMAGE"  # the image to run (scripts/image.sh sets it)
# extra `podman run` options, e.g. "--ulimit nofile=1024:1024" where the machine needs them
ULIMITS_ENV = "PULLCHECK_IMAGE_ULIMITS"

#: a volume's source: a path bound at the mount path, or names → paths bound beneath it
Source = Path | Mapping[str, Path]

_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi)?$")
_BYTES = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


class ContainerError(LabError):
    """podman failed, or a container did not come up; the message has podman's words or logs."""


def podman(
    *args: str, timeout: float = 120.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``podman ARGS``; with ``check``, a failure raises naming the subcommand."""
    proc = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise ContainerError(f"podman {args[0]} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


@dataclass(frozen=True)
class Workload:
    """One container of a manifest's pod template."""

    pod: dict[str, Any]
    container: dict[str, Any]

    @classmethod
    def load(cls, manifest: str, container: str) -> Workload:
        doc = yaml.safe_load((MANIFESTS / manifest).read_text())
        pod = doc["spec"]["template"]["spec"]
        for entry in pod["containers"]:
            if entry["name"] == container:
                return cls(pod, entry)
        raise ContainerError(f"{manifest}: no container {container!r}")

    def volume_mounts(self) -> list[dict[str, Any]]:
        return list(self.container.get("volumeMounts", []))

    def run_args(
        self,
        sources: Mapping[str, Source],
        *,
        field_refs: Mapping[str, str],
        env: Mapping[str, str] | None = None,
        network: str | None = None,
    ) -> list[str]:
        """``podman run`` options for this container; ``sources`` maps volume names to paths.

        ``field_refs`` gives the downward-API values (``spec.nodeName`` → the node), ``env``
        adds to the manifest's, ``network`` overrides the pod's (``host`` when hostNetwork).
        """
        args = [*_security(self.pod, self.container), *_resources(self.container)]
        args += ["--network", network or ("host" if self.pod.get("hostNetwork") else "bridge")]
        for entry in self.container.get("env", []):
            if "value" in entry:
                args += ["--env", f"{entry['name']}={entry['value']}"]
                continue
            path = entry["valueFrom"]["fieldRef"]["fieldPath"]
            if path not in field_refs:
                raise ContainerError(f"env {entry['name']}: no value given for fieldRef {path}")
            args += ["--env", f"{entry['name']}={field_refs[path]}"]
        for name, value in (env or {}).items():
            args += ["--env", f"{name}={value}"]
        volumes = {v["name"]: v for v in self.pod.get("volumes", [])}
        _nested_mount_points(volumes, self.volume_mounts(), sources)
        for mount in self.volume_mounts():
            args += _mount(volumes[mount["name"]], mount, sources)
        args += ["--entrypoint", json.dumps(self.container["command"])]
        return args


def _security(pod: Mapping[str, Any], container: Mapping[str, Any]) -> list[str]:
    pod_ctx = pod.get("securityContext", {})
    ctx = {**pod_ctx, **container.get("securityContext", {})}
    if ctx.get("privileged"):
        raise ContainerError("a privileged container is not modelled")
    args: list[str] = []
    if "runAsUser" in ctx:
        args += ["--user", f"{ctx['runAsUser']}:{ctx.get('runAsGroup', ctx['runAsUser'])}"]
    if "fsGroup" in pod_ctx:  # the group that may read the Secret's 0440 files
        args += ["--group-add", str(pod_ctx["fsGroup"])]
    if ctx.get("readOnlyRootFilesystem"):
        # podman would otherwise mount writable tmpfs on /run, /tmp, /var/tmp: kubelet does not
        args += ["--read-only", "--read-only-tmpfs=false"]
    capabilities = ctx.get("capabilities", {})
    args += [f"--cap-drop={c}" for c in capabilities.get("drop", [])]
    args += [f"--cap-add={c}" for c in capabilities.get("add", [])]
    if ctx.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    seccomp = ctx.get("seccompProfile", {}).get("type")
    if seccomp != "RuntimeDefault":  # podman's default profile is the runtime default
        raise ContainerError(f"seccompProfile {seccomp!r} is not modelled (RuntimeDefault is)")
    return args


def _resources(container: Mapping[str, Any]) -> list[str]:
    limits = container.get("resources", {}).get("limits", {})
    args = []
    if "cpu" in limits:
        args += ["--cpus", f"{_quantity(str(limits['cpu'])):g}"]
    if "memory" in limits:
        args += ["--memory", str(int(_quantity(str(limits["memory"]))))]
    return args


def _quantity(text: str) -> float:
    """A Kubernetes quantity as cores (``500m`` → 0.5) or bytes (``256Mi``)."""
    match = _QUANTITY.match(text)
    if not match:
        raise ContainerError(f"quantity {text!r} is not modelled")
    number, unit = float(match.group(1)), match.group(2)
    if unit == "m":
        return number / 1000
    return number * _BYTES.get(unit or "", 1)


def _nested_mount_points(
    volumes: Mapping[str, Any], mounts: list[dict[str, Any]], sources: Mapping[str, Source]
) -> None:
    """Make the mount points of mounts nested in a ConfigMap or Secret volume, as kubelet does
    (kubernetes#60342): the runtime cannot create them under a read-only mount."""
    for outer in mounts:
        source = sources.get(outer["name"])
        kind = volumes[outer["name"]]
        if not isinstance(source, Path) or not ("configMap" in kind or "secret" in kind):
            continue
        for inner in mounts:
            relative = Path(inner["mountPath"]).relative_to("/")
            parent = Path(outer["mountPath"]).relative_to("/")
            if inner is not outer and parent in relative.parents:
                (source / relative.relative_to(parent)).mkdir(parents=True, exist_ok=True)


def _mount(
    volume: Mapping[str, Any], mount: Mapping[str, Any], sources: Mapping[str, Source]
) -> list[str]:
    target = mount["mountPath"]
    if "emptyDir" in volume:
        size = volume["emptyDir"].get("sizeLimit")
        options = f"size={int(_quantity(size))}" if size else "rw"
        return ["--tmpfs", f"{target}:{options}"]
    if volume["name"] not in sources:
        raise ContainerError(f"no source given for volume {volume['name']!r} ({target})")
    mode = "ro" if mount.get("readOnly") else "rw"
    source = sources[volume["name"]]
    if isinstance(source, Path):
        return ["--volume", f"{source}:{target}:{mode}"]
    args: list[str] = []
    for name, path in source.items():
        args += ["--volume", f"{path}:{target}/{name}:{mode}"]
    return args


@dataclass
class Container:
    """A running container of the image with its API on ``url`` (host network, loopback)."""

    name: str
    url: str

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, trust_env=False)

    def logs(self) -> str:
        proc = podman("logs", self.name, check=False)
        return proc.stdout + proc.stderr

    def host_pid(self) -> int:
        """The container's main process (pullcheck itself) as the host sees it."""
        return int(podman("inspect", "--format", "{{.State.Pid}}", self.name).stdout)

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *command)


def extra_options() -> list[str]:
    """The machine's extra ``podman run`` options (:data:`ULIMITS_ENV`)."""
    return shlex.split(os.environ.get(ULIMITS_ENV, ""))


def run_once(
    image: str, options: list[str], *args: str, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """``podman run --rm OPTIONS IMAGE ARGS`` to its end; the caller checks the exit status."""
    return podman(
        "run", "--rm", *extra_options(), *options, image, *args, timeout=timeout, check=False
    )


@contextmanager
def running(
    image: str, options: list[str], args: list[str], *, url: str, kind: str, wait: float = 60.0
) -> Iterator[Container]:
    """Start the image detached; yield once ``url``/healthz answers 200; stop and remove it."""
    name = f"pullcheck-{kind}-{secrets.token_hex(4)}"
    container = Container(name, url)
    try:
        podman("run", "--detach", "--name", name, *extra_options(), *options, image, *args)
        wait_healthy(container, wait)
        yield container
    finally:  # also a container podman created but could not start
        podman("stop", "--time", "10", name, check=False)
        podman("rm", "--force", name, check=False)


def wait_healthy(container: Container, wait: float) -> None:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{container.url}/healthz", timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        state = podman("inspect", "--format", "{{.State.Status}}", container.name, check=False)
        if state.stdout.strip() in {"exited", "stopped"}:
            raise ContainerError(f"{container.name} exited:\n{container.logs()[-3000:]}")
        time.sleep(0.02)
    raise ContainerError(
        f"{container.name} not healthy within {wait:g} s:\n{container.logs()[-3000:]}"
    )


# --- the agent and the aggregator on the lab ----------------------------------------------------

AGENT = ("agent-daemonset.yaml", "agent")
AGGREGATOR = ("aggregator-deployment.yaml", "aggregator")


def lab_config(lab: LabInfo, **overrides: Any) -> dict[str, Any]:
    """manifests/base/config.yaml with what the lab needs instead (and ``overrides``)."""
    base = yaml.safe_load((MANIFESTS / "config.yaml").read_text())
    return merge(
        merge(
            base,
            {
                "allow": ["*.pullcheck.test:*/*"],
                "registries": [lab.registries["plain"]],
                "limits": {"min_free_space": 0},  # the lab's image filesystem: a 512 MiB tmpfs
            },
        ),
        overrides,
    )


def _projected(workload: Workload, workdir: Path, config: dict[str, Any]) -> dict[str, Source]:
    """The workload's ConfigMap and Secret volumes as kubelet projects them: each key a file
    with the volume's ``defaultMode``, group-owned by the pod's ``fsGroup`` when it has one."""
    contents = {
        "config": {"config.yaml": yaml.safe_dump(config)},
        "prepull-jobs": {"jobs.yaml": (MANIFESTS / "jobs.yaml").read_text()},
        "token": {"token": TOKEN},
    }
    group = workload.pod.get("securityContext", {}).get("fsGroup", 0)
    found: dict[str, Source] = {}
    for volume in workload.pod.get("volumes", []):
        kind = volume.get("configMap") or volume.get("secret")
        if kind is None:
            continue
        directory = workdir / volume["name"]
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
        for name, text in contents[volume["name"]].items():
            path = directory / name
            path.write_text(text)
            os.chown(path, 0, group)
            path.chmod(kind.get("defaultMode", 0o644))
        found[volume["name"]] = directory
    return found


def agent_options(
    lab: LabInfo, workdir: Path, *, node: str, socket_dir: Path, port: int
) -> list[str]:
    """``podman run`` options for an agent on ``port`` whose node's runtime is ``socket_dir``."""
    workload = Workload.load(*AGENT)
    config = lab_config(lab, agent={"listen": f"127.0.0.1:{port}"})
    sources = {
        **_projected(workload, workdir, config),
        "containerd-run": socket_dir,
        "containerd-etc": {"certs.d": Path(lab.registry_config_path)},
        "host-resolv-conf": Path(lab.resolv_conf),
        "host-hosts": Path("/etc/hosts"),
        "host-ssl-certs": Path("/etc/ssl/certs"),
    }
    options = workload.run_args(sources, field_refs={"spec.nodeName": node})
    # the lab's hosts.toml name its CA by its host path, as a node's name theirs under
    # /etc/containerd (which the DaemonSet mounts at its host path for that reason)
    return [*options, "--volume", f"{lab.ca_file}:{lab.ca_file}:ro"]


def aggregator_options(
    lab: LabInfo, workdir: Path, *, agents: Mapping[str, str], port: int
) -> list[str]:
    """``podman run`` options for an aggregator on ``port`` in front of ``agents`` (node → URL).

    Host network, unlike the Deployment's pod network: the agents listen on loopback here.
    """
    static = [f"{node}={url.removeprefix('http://')}" for node, url in agents.items()]
    config = lab_config(
        lab,
        aggregator={
            "listen": f"127.0.0.1:{port}",
            "discovery": {"mode": "static", "agents": static},
        },
    )
    name = f"aggregator-{port}"
    workload = Workload.load(*AGGREGATOR)
    return workload.run_args(
        _projected(workload, workdir, config),
        field_refs={
            "metadata.name": name,
            "metadata.namespace": "pullcheck",
            "status.podIP": "127.0.0.1",
        },
        network="host",
    )


def container_args(kind: tuple[str, str]) -> list[str]:
    """The manifest's ``args`` of the agent or the aggregator (after ``command``)."""
    return list(Workload.load(*kind).container.get("args", []))


@contextmanager
def agent(
    lab: LabInfo, image: str, workdir: Path, *, node: str, socket_dir: Path
) -> Iterator[Container]:
    """The image's agent for ``node``, run as the DaemonSet runs it."""
    port = free_port()
    options = agent_options(lab, workdir, node=node, socket_dir=socket_dir, port=port)
    with running(
        image, options, container_args(AGENT), url=f"http://127.0.0.1:{port}", kind=f"agent-{node}"
    ) as container:
        yield container


@contextmanager
def aggregator(
    lab: LabInfo, image: str, workdir: Path, *, agents: Mapping[str, str]
) -> Iterator[Container]:
    """The image's aggregator in front of ``agents`` (node → URL), run as the Deployment runs it."""
    port = free_port()
    options = aggregator_options(lab, workdir, agents=agents, port=port)
    url = f"http://127.0.0.1:{port}"
    with running(
        image, options, container_args(AGGREGATOR), url=url, kind="aggregator"
    ) as container:
        yield container
