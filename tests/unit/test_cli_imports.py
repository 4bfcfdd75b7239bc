"""What the CLI imports before it runs anything: offline commands load no heavy library.

``pullcheck --help``, ``--version``, every command's ``--help`` and usage errors must start
like a native tool. Each runs in a new process through the real entry point
(``python -X importtime -m agent …``): the interpreter lists every module it imports on
stderr, however the process ends, so a stray import at the top of a command module (or of
anything a command module imports) fails here instead of quietly costing half a second. The
assertions are about which modules load, never about time.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from agent.cli import COMMANDS, Lazy, LazyGroup, cli

ROOT = Path(__file__).resolve().parents[2]

#: libraries (top-level packages) an offline command must not import
HEAVY = frozenset(
    {
        "grpc",
        "google",  # protobuf
        "httpx",
        "httpx2",
        "httpcore",
        "httpcore2",
        "h11",
        "anyio",
        "fastapi",
        "starlette",
        "uvicorn",
        "pydantic",
        "pydantic_core",
        "pydantic_settings",
        "dns",  # dnspython
        "prometheus_client",
        "lightkube",
        "yaml",
        "cryptography",
        "rich",
        "asyncio",
    }
)
#: pullcheck's own modules that bring those libraries (or rich) in
ENGINE = (
    *("agent.pulltest", "agent.probes", "agent.cri", "agent.models", "agent.credentials"),
    *("agent.node", "agent.cluster", "agent.service", "agent.cli._render"),
)


def _groups() -> list[tuple[str, LazyGroup]]:
    return [(name, entry) for name, entry in COMMANDS.items() if isinstance(entry, LazyGroup)]


def _every_help() -> list[list[str]]:
    """``--help`` of the top level, of every command and of every group's commands."""
    argvs = [["--help"]]
    for name, entry in COMMANDS.items():
        argvs.append([name, "--help"])
        if isinstance(entry, LazyGroup):
            argvs += [[name, sub, "--help"] for sub in entry.lazy]
    return argvs


def _imports(*argv: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``pullcheck argv`` as a user would; its result and every module it imported."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PULLCHECK_", "CRICTL_", "CONTAINER_RUNTIME_ENDPOINT"))
    }
    env.update(COLUMNS="100", PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "agent", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    modules = {
        line.rpartition("|")[2].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    modules.discard("imported package")  # the header: "import time: self [us] | cumulative | …"
    return proc, modules


def _heavy(modules: set[str]) -> list[str]:
    return sorted(
        name for name in modules if name.split(".")[0] in HEAVY or name.startswith(ENGINE)
    )


OFFLINE = [
    # (argv, exit status, text the command must have printed on stdout or stderr)
    *[(argv, 0, "Usage: pullcheck") for argv in _every_help()],
    (["--version"], 0, "pullcheck, version"),
    ([], 2, "Usage: pullcheck"),
    (["cluster"], 2, "Usage: pullcheck cluster"),
    (["pull"], 2, "Missing argument 'IMAGE'"),
    (["pull", "--json"], 2, '"error": "usage"'),
    (["pull", "--timeout", "nan", "x"], 2, "'nan' is not a number of seconds"),
    (["pull", "--timeout", "nan", "x", "--json"], 2, '"error": "usage"'),
    (["probe"], 2, "Missing argument 'IMAGE_OR_REGISTRY'"),
    (["images", "--cri-timeout=-1"], 2, "'-1' is not a number of seconds"),
    (["cluster", "pull", "x", "--nodes", ","], 2, "expected node names"),
    (["prepull", "job"], 2, "Missing argument 'NAME'"),
    (["agent", "--log-level", "x", "--json"], 2, '"error": "usage"'),
    (["nosuch"], 2, "No such command 'nosuch'"),
    (["pod", "Bad_Name", "--json"], 2, '"error": "usage"'),
    (["pods", "-n", "x", "-A"], 2, "exclude each other"),
    # explain is offline as a whole, not only its help
    (["explain", 'Failed to pull image "r.test/a:1": 502 Bad Gateway'], 0, "registry_error"),
    (["explain", "--json", "pull QPS exceeded"], 0, '"cause": "rate_limited"'),
    (["explain", "--json", "-", "more"], 2, '"error": "invalid_input"'),
]


def _name(value: object) -> str | None:
    return " ".join(value) or "(no arguments)" if isinstance(value, list) else None


@pytest.mark.parametrize(("argv", "status", "said"), OFFLINE, ids=_name)
def test_offline_commands_import_no_heavy_library(argv: list[str], status: int, said: str) -> None:
    proc, modules = _imports(*argv)
    assert proc.returncode == status, proc.stderr[-2000:]
    assert said in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "click" in modules  # the listing is real: the CLI's own parser was imported
    heavy = _heavy(modules)
    assert heavy == [], f"pullcheck {' '.join(argv)} imported {', '.join(heavy[:12])}"


def test_the_import_check_sees_a_command_that_loads_the_runtime_client() -> None:
    """The control: a command that talks to a runtime does import grpc, and only then."""
    proc, modules = _imports("images", "--endpoint", "unix:///nonexistent/cri.sock", "--json")
    assert proc.returncode == 1 and '"runtime_unavailable"' in proc.stdout
    heavy = _heavy(modules)
    assert "grpc" in heavy and "agent.cri" in heavy
    assert "agent.pulltest" not in heavy  # listing images needs the CRI client, not the engine


def test_each_listed_help_is_the_first_line_of_the_commands_docstring() -> None:
    """The table in agent/cli/__init__.py is what --help lists; the docstrings are the truth."""
    ctx = click.Context(cli)
    checked = []
    for group in (cli, *(entry for _, entry in _groups())):
        assert isinstance(group, LazyGroup)
        for name, entry in group.lazy.items():
            command = group.get_command(ctx, name)
            assert command is not None and command.name == name, entry.target
            assert command.help is not None
            assert entry.help == inspect.cleandoc(command.help).splitlines()[0], entry.target
            checked.append(name)
    assert len(checked) == 14


@pytest.mark.parametrize("width", [40, 80, 200])
def test_the_lazy_listing_is_what_click_prints_for_the_loaded_commands(width: int) -> None:
    for group in (cli, *(entry for _, entry in _groups())):
        ctx = click.Context(group)
        loaded = {name: group.get_command(ctx, name) for name in group.list_commands(ctx)}
        eager = click.Group(group.name, commands={k: v for k, v in loaded.items() if v})
        lazy_text, eager_text = click.HelpFormatter(width=width), click.HelpFormatter(width=width)
        group.format_commands(ctx, lazy_text)
        eager.format_commands(ctx, eager_text)
        assert lazy_text.getvalue() == eager_text.getvalue()
        assert lazy_text.getvalue().count("\n") >= len(loaded) + 1  # heading + one row each


def test_a_lazy_entry_that_is_not_a_command_is_refused() -> None:
    group = LazyGroup("g", lazy={"x": Lazy("agent.defaults:RESOLV_CONF", "Not a command.")})
    with pytest.raises(TypeError, match=r"agent\.defaults:RESOLV_CONF is not a click command"):
        group.get_command(click.Context(group), "x")
    assert group.list_commands(click.Context(group)) == ["x"]
