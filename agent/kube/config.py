"""The caller's cluster configuration, found the way kubectl finds it.

Order: ``--kubeconfig FILE``; else ``KUBECONFIG`` (a list of files joined with ``:``, merged as
kubectl merges them: the first file to set a name or the current context wins); else
``~/.kube/config``; else, inside a pod, the service account (``KUBERNETES_SERVICE_HOST`` and
``/var/run/secrets/kubernetes.io/serviceaccount``). ``--context`` picks a context; the namespace
is ``-n``, else the context's, else ``default``. Every problem is one :class:`KubeConfigError`
naming the file and what is wrong in it (never a token or key from it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from lightkube import ConfigError, KubeConfig
from lightkube.config.kubeconfig import SingleConfig

from agent.errors import InvalidInput

__all__ = ["KubeConfigError", "KubeTarget", "load"]

_MAX_FILE_BYTES = 4 * 1024 * 1024
_DEFAULT = Path("~/.kube/config")
_SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_SECTIONS = ("clusters", "contexts", "users")


class KubeConfigError(InvalidInput, ValueError):
    """No usable cluster configuration; the message names the file and the problem."""


@dataclass(frozen=True)
class KubeTarget:
    """Where requests go: the chosen context's configuration and namespace."""

    config: SingleConfig
    namespace: str
    source: str  # the kubeconfig file(s) read, or "in-cluster service account"

    @property
    def server(self) -> str:
        return str(self.config.cluster.server)

    @property
    def context(self) -> str:
        return str(self.config.context_name)


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.expanduser().open("rb") as handle:
            raw = handle.read(_MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise KubeConfigError(f"kubeconfig {path}: {exc.strerror or exc}") from None
    if len(raw) > _MAX_FILE_BYTES:
        raise KubeConfigError(f"kubeconfig {path}: over {_MAX_FILE_BYTES // 1024 // 1024} MiB")
    try:
        document = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise KubeConfigError(f"kubeconfig {path}: not YAML{where}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise KubeConfigError(f"kubeconfig {path}: expected a mapping (kind: Config)")
    return document


def _merge(paths: list[Path]) -> dict[str, Any]:
    """kubectl's merge of several kubeconfig files: first setting of each name wins."""
    merged: dict[str, Any] = {section: [] for section in _SECTIONS}
    seen: dict[str, set[str]] = {section: set() for section in _SECTIONS}
    for path in paths:
        document = _read(path)
        base = path.expanduser().absolute().parent
        if not merged.get("current-context") and document.get("current-context"):
            merged["current-context"] = document["current-context"]
        for section in _SECTIONS:
            entries = document.get(section) or []
            if not isinstance(entries, list):
                raise KubeConfigError(f"kubeconfig {path}: {section} must be a list")
            for entry in entries:
                if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                    raise KubeConfigError(f"kubeconfig {path}: an entry of {section} has no name")
                if entry["name"] not in seen[section]:
                    seen[section].add(entry["name"])
                    merged[section].append(_absolute(entry, base))
    return merged


_FILE_KEYS = frozenset(
    {"certificate-authority", "client-certificate", "client-key", "tokenFile", "token-file"}
)


def _absolute(entry: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative file references resolve against the file that holds them (as in kubectl)."""
    copied = dict(entry)
    for section in ("cluster", "user"):
        body = entry.get(section)
        if isinstance(body, dict):
            copied[section] = {
                k: str(base / v) if k in _FILE_KEYS and isinstance(v, str) and v else v
                for k, v in body.items()
            }
    return copied


def _files(kubeconfig: str | None) -> list[Path]:
    if kubeconfig:
        return [Path(kubeconfig)]
    listed = os.environ.get("KUBECONFIG", "")
    if listed:
        found = [Path(p) for p in listed.split(os.pathsep) if p]
        existing = [p for p in found if p.expanduser().is_file()]
        if not existing:
            raise KubeConfigError(f"KUBECONFIG={listed}: none of these files exists")
        return existing
    return [_DEFAULT] if _DEFAULT.expanduser().is_file() else []


def load(
    kubeconfig: str | None = None,
    context: str | None = None,
    namespace: str | None = None,
    *,
    service_account: Path = _SERVICE_ACCOUNT,
) -> KubeTarget:
    """The cluster, user and namespace kubectl would use with these flags."""
    files = _files(kubeconfig)
    if files:
        source = ":".join(str(p) for p in files)
        merged = _merge(files)
        if not merged["clusters"] or not merged["contexts"]:
            raise KubeConfigError(f"kubeconfig {source}: no clusters or no contexts")
        try:
            single = KubeConfig.from_dict(merged).get(context_name=context)
        except ConfigError as exc:
            raise KubeConfigError(f"kubeconfig {source}: {exc}") from None
        except (KeyError, TypeError) as exc:
            raise KubeConfigError(
                f"kubeconfig {source}: a context names {exc}, which is not defined"
            ) from None
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        source = "in-cluster service account"
        try:
            single = KubeConfig.from_service_account(service_account).get()
        except (ConfigError, KeyError, OSError) as exc:
            raise KubeConfigError(f"{source} ({service_account}): {exc}") from None
    else:
        raise KubeConfigError(
            "no kubeconfig: pass --kubeconfig, set KUBECONFIG, or create ~/.kube/config "
            "(or run inside a pod)"
        )
    if single is None:
        raise KubeConfigError(f"kubeconfig {source}: no current-context; pass --context")
    chosen = namespace or single.context.namespace or "default"
    return KubeTarget(config=single, namespace=chosen, source=source)
