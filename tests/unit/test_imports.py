"""The import tweaks of ``agent/_imports.py`` keep working: modules pullcheck never uses stay out.

Each case imports what a process imports at start-up, in a new interpreter, and lists the modules
loaded. A library update that imports one of them another way, or a pullcheck module that
imports httpx, dnspython or uvicorn before the tweaks are applied, fails here (the agent's idle
memory is measured by ``bench/agent_memory.py``; these assertions are about modules, never
about bytes or time).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: httpx's command line; DNS-over-HTTPS's HTTP/2 stack; HTTP/2; uvicorn's reload watcher and
#: WebSocket library (the servers run with ``ws="none"``)
UNUSED = frozenset(
    {
        *("httpx._main", "rich", "pygments"),
        *("httpx2", "httpcore2"),
        *("h2", "hpack", "hyperframe"),
        *("watchfiles", "websockets"),
    }
)

_LIST = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
loaded = sorted(n for n, m in sys.modules.items() if m is not None)
import dns.query
print(json.dumps({"loaded": loaded, "doh": dns.query._have_httpx2}))
"""


def _start_up(*modules: str) -> tuple[set[str], bool]:
    out = subprocess.run(
        [sys.executable, "-c", _LIST, *modules],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = json.loads(out)
    return set(found["loaded"]), bool(found["doh"])


@pytest.mark.parametrize(
    ("modules", "allowed"),
    [
        # the engine: probes first (the pull command, the agent's connectivity round)
        (("agent.probes",), frozenset()),
        (("agent.pulltest", "agent.probes", "agent.diagnosis"), frozenset()),
        # `pullcheck agent`: the server module first, then the app and its state
        (("agent.cli._serve", "agent.node.app", "agent.node.state", "agent.probes"), frozenset()),
        # `pullcheck aggregator`: its discovery asks the Kubernetes API with httpx2
        (("agent.cli._serve", "agent.cluster.app"), frozenset({"httpx2", "httpcore2"})),
    ],
    ids=["probes", "engine", "agent", "aggregator"],
)
def test_unused_modules_stay_out(modules: tuple[str, ...], allowed: frozenset[str]) -> None:
    loaded, doh = _start_up(*modules)
    assert "httpx" in loaded or "agent.cluster.app" in modules  # the tweaks had work to do
    assert sorted((UNUSED - allowed) & loaded) == []
    assert doh is False


def test_the_tweaks_leave_the_libraries_working() -> None:
    """httpx and dnspython still import and work; HTTP/2 is refused with a clear error."""
    script = """
import agent._imports, httpx, dns.message, dns.query
print(dns.message.make_query("registry.example", "A").question[0].name)
try:
    httpx.Client(http2=True)
except ImportError as exc:
    print("h2 refused:", "h2" in str(exc))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split("\n")
    assert out[0] == "registry.example."
    assert out[1] == "h2 refused: True"
