"""Options shared by several commands, named as crictl and kubelet name them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from agent.credentials import Credential, CredentialError, Keyring, from_cli, load_docker_config
from agent.models import Cause
from agent.pulltest import NodeSettings

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _compose(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print exactly one JSON object (schema in the README)."
)

endpoint_option = click.option(
    "--endpoint",
    "-r",
    "--runtime-endpoint",
    "endpoint",
    envvar="CONTAINER_RUNTIME_ENDPOINT",
    metavar="URL",
    help="CRI socket, e.g. unix:///run/containerd/containerd.sock "
    "[env CONTAINER_RUNTIME_ENDPOINT; default: auto-detect like crictl].",
)

cri_options = _compose(
    endpoint_option,
    click.option(
        "--cri-timeout",
        type=click.FloatRange(min=0.1),
        default=2.0,
        show_default=True,
        metavar="S",
        help="Connect timeout and deadline of non-pull CRI calls.",
    ),
    click.option(
        "--cri-api",
        type=click.Choice(["v1", "v1alpha2"]),
        default=None,
        help="Force a CRI API version instead of negotiating (v1, then v1alpha2).",
    ),
)

path_options = _compose(
    click.option(
        "--resolv-conf",
        envvar="PULLCHECK_RESOLV_CONF",
        default="/etc/resolv.conf",
        show_default=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="Resolver config the runtime uses (the node's own) [env PULLCHECK_RESOLV_CONF].",
    ),
    click.option(
        "--hosts-file",
        envvar="PULLCHECK_HOSTS_FILE",
        default="/etc/hosts",
        show_default=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="Hosts file consulted before DNS, as the runtime's resolver does.",
    ),
    click.option(
        "--registry-config-path",
        envvar="PULLCHECK_REGISTRY_CONFIG_PATH",
        default="/etc/containerd/certs.d",
        show_default=True,
        metavar="DIR[:DIR]",
        help="containerd's registry config_path holding <host>/hosts.toml "
        "[env PULLCHECK_REGISTRY_CONFIG_PATH].",
    ),
    click.option(
        "--ca-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="Extra CA bundle trusted on top of the system trust store.",
    ),
    click.option(
        "--probe-timeout",
        type=click.FloatRange(min=0.1),
        default=10.0,
        show_default=True,
        metavar="S",
        help="Timeout of each probe step.",
    ),
)

credential_options = _compose(
    click.option(
        "--creds",
        envvar="CRICTL_CREDS",
        metavar="USER[:PASS]",
        default=None,
        help="Registry credentials, as crictl --creds [env CRICTL_CREDS].",
    ),
    click.option(
        "--auth",
        envvar="CRICTL_AUTH",
        metavar="BASE64",
        default=None,
        help="base64(USER:PASS), as crictl --auth [env CRICTL_AUTH].",
    ),
    click.option(
        "--docker-config",
        "docker_configs",
        multiple=True,
        metavar="FILE",
        type=click.Path(dir_okay=False, path_type=Path),
        help="A .dockerconfigjson / .dockercfg (or a pull Secret as JSON); "
        "credentials are chosen with kubelet's keyring rules. Repeatable.",
    ),
)


def exit_code(success: bool, cause: Cause | None) -> int:
    """0 success, 2 invalid input (a bad reference), 1 any other diagnosed failure."""
    if success:
        return EXIT_OK
    return EXIT_USAGE if cause is Cause.INVALID_REFERENCE else EXIT_FAILED


def settings_from(params: dict[str, Any]) -> NodeSettings:
    return NodeSettings(
        endpoint=params.get("endpoint"),
        resolv_conf=params.get("resolv_conf") or Path("/etc/resolv.conf"),
        hosts_file=params.get("hosts_file") or Path("/etc/hosts"),
        registry_config_path=params.get("registry_config_path") or "/etc/containerd/certs.d",
        ca_file=params.get("ca_file"),
        probe_timeout=params.get("probe_timeout") or 10.0,
        cri_timeout=params.get("cri_timeout") or 2.0,
        api_version=params.get("cri_api"),
    )


def credentials_from(params: dict[str, Any]) -> tuple[Credential | None, Keyring | None]:
    """Build credentials; a :class:`CredentialError` names what was wrong, never a secret."""
    credential = from_cli(params.get("creds"), params.get("auth"))
    configs: tuple[Path, ...] = params.get("docker_configs") or ()
    keyring: Keyring | None = None
    for path in configs:
        loaded = load_docker_config(path)
        keyring = loaded if keyring is None else keyring.merge(loaded)
    return credential, keyring


__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CredentialError",
    "credential_options",
    "credentials_from",
    "cri_options",
    "exit_code",
    "json_option",
    "path_options",
    "settings_from",
]
