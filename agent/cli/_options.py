"""Options shared by several commands, named as crictl and kubelet name them.

Every command module imports this one to declare its options, so it imports only click and
:mod:`agent.defaults` at top level; what turns the parsed options into settings and
credentials imports the engine when a command runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from agent import defaults

if TYPE_CHECKING:
    from agent.credentials import Credential, Keyring
    from agent.models import Cause
    from agent.pulltest import NodeSettings

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C

MAX_TEST_SECONDS = 86_400.0  # a pull test's deadline: one day is already absurd
MAX_STEP_SECONDS = 3_600.0  # one CRI call or one probe step


class CommandError(click.ClickException):
    """A command that could not do its job for a reason other than usage (exit 1 by default).

    ``main()`` prints it as one JSON object ``{"success": false, "error": kind, "message": …}``
    with ``--json``, else as one line on stderr.
    """

    def __init__(self, message: str, kind: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code  # the process exit status
        self.ctx = click.get_current_context(silent=True)  # names the command in the message


class Number(click.ParamType[float, Any]):
    """A finite number within ``[minimum, maximum]``: nan, inf and out-of-range are usage errors.

    click's FloatRange lets nan through (every comparison with nan is false), so this type
    parses the text itself and names the option and the accepted range in its message.
    """

    name = "number"

    def __init__(self, minimum: float, maximum: float, unit: str = "") -> None:
        if not (math.isfinite(minimum) and math.isfinite(maximum) and minimum <= maximum):
            raise ValueError(f"bad bounds [{minimum}, {maximum}]")
        self.minimum, self.maximum, self.unit = minimum, maximum, unit

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        number: float | None
        if isinstance(value, bool):  # bool is an int; True is not a number of seconds
            number = None
        elif isinstance(value, int | float):
            number = float(value)
        else:
            try:
                number = float(str(value).strip())
            except (ValueError, OverflowError):
                number = None
        if number is None or not (math.isfinite(number) and self.minimum <= number <= self.maximum):
            unit = f" {self.unit}" if self.unit else ""
            self.fail(
                f"{str(value)!r} is not a number{unit} from {self.minimum:g} to {self.maximum:g}",
                param,
                ctx,
            )
        return number

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str | None:
        return f"[{self.minimum:g}-{self.maximum:g}]"


def seconds(maximum: float, minimum: float = 0.1) -> Number:
    """A duration option in seconds."""
    return Number(minimum, maximum, unit="of seconds")


def _compose(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print exactly one JSON object (schema in the README)."
)

verbose_option = click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="Show the phase and endpoint tables for a success too (failures always show them).",
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
        type=seconds(MAX_STEP_SECONDS),
        default=defaults.CRI_TIMEOUT,
        show_default=True,
        help="Connect timeout and deadline of non-pull CRI calls, in seconds.",
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
        default=defaults.RESOLV_CONF,
        show_default=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="Resolver config the runtime uses (the node's own) [env PULLCHECK_RESOLV_CONF].",
    ),
    click.option(
        "--hosts-file",
        envvar="PULLCHECK_HOSTS_FILE",
        default=defaults.HOSTS_FILE,
        show_default=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="Hosts file consulted before DNS, as the runtime's resolver does.",
    ),
    click.option(
        "--registry-config-path",
        envvar="PULLCHECK_REGISTRY_CONFIG_PATH",
        default=defaults.REGISTRY_CONFIG_PATH,
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
        type=seconds(MAX_STEP_SECONDS),
        default=defaults.PROBE_TIMEOUT,
        show_default=True,
        help="Timeout of each probe step, in seconds.",
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


# --- the servers: pullcheck agent, pullcheck aggregator ----------------------------------------

config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"YAML configuration [default: {defaults.CONFIG_FILE} if it exists]; "
    "PULLCHECK_* environment variables override it.",
)
listen_option = click.option(
    "--listen", metavar="HOST:PORT", default=None, help="Address to serve on (overrides config)."
)
log_level_option = click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)

# --- the aggregator's clients: pullcheck cluster, pullcheck prepull ----------------------------

url_option = click.option(
    "--url",
    envvar="PULLCHECK_AGGREGATOR_URL",
    default="http://127.0.0.1:8480",
    show_default=True,
    help="The aggregator [env PULLCHECK_AGGREGATOR_URL].",
)
token_option = click.option(
    "--token-file",
    envvar="PULLCHECK_TOKEN_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    default=defaults.TOKEN_FILE,
    show_default=True,
    help="File holding the bearer token [env PULLCHECK_TOKEN_FILE].",
)


def exit_code(success: bool, cause: Cause | None) -> int:
    """0 success, 2 invalid input (a bad reference), 1 any other diagnosed failure."""
    from agent.models import Cause

    if success:
        return EXIT_OK
    return EXIT_USAGE if cause is Cause.INVALID_REFERENCE else EXIT_FAILED


def cri_from(params: dict[str, Any]) -> tuple[str | None, float, str | None]:
    """What :data:`cri_options` gave: the CRI endpoint, its timeout, a forced API version."""
    return (
        params.get("endpoint"),
        params.get("cri_timeout") or defaults.CRI_TIMEOUT,
        params.get("cri_api"),
    )


def settings_from(params: dict[str, Any]) -> NodeSettings:
    from agent.pulltest import NodeSettings  # the whole engine: only the commands that run it

    endpoint, cri_timeout, api_version = cri_from(params)
    return NodeSettings(
        endpoint=endpoint,
        resolv_conf=params.get("resolv_conf") or defaults.RESOLV_CONF,
        hosts_file=params.get("hosts_file") or defaults.HOSTS_FILE,
        registry_config_path=params.get("registry_config_path") or defaults.REGISTRY_CONFIG_PATH,
        ca_file=params.get("ca_file"),
        probe_timeout=params.get("probe_timeout") or defaults.PROBE_TIMEOUT,
        cri_timeout=cri_timeout,
        api_version=api_version,
    )


def credentials_from(params: dict[str, Any]) -> tuple[Credential | None, Keyring | None]:
    """Build credentials; a :class:`CredentialError` names what was wrong, never a secret."""
    from agent.credentials import from_cli, load_docker_config

    credential = from_cli(params.get("creds"), params.get("auth"))
    configs: tuple[Path, ...] = params.get("docker_configs") or ()
    keyring: Keyring | None = None
    for path in configs:
        loaded = load_docker_config(path)
        keyring = loaded if keyring is None else keyring.merge(loaded)
    return credential, keyring


__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "MAX_STEP_SECONDS",
    "MAX_TEST_SECONDS",
    "CommandError",
    "Number",
    "config_option",
    "credential_options",
    "credentials_from",
    "cri_from",
    "cri_options",
    "exit_code",
    "json_option",
    "listen_option",
    "log_level_option",
    "path_options",
    "seconds",
    "settings_from",
    "token_option",
    "url_option",
    "verbose_option",
]
