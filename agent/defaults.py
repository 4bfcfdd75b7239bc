"""Where pullcheck looks on a node and how long it waits, unless told otherwise: one place.

The CLI options, the node settings of a pull test (:class:`agent.pulltest.NodeSettings`) and the
configuration file's sections (:mod:`agent.service.config`) all default to these values.
The paths are a node's real ones; the lab and the tests override them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = [
    "CONFIG_FILE",
    "CRI_TIMEOUT",
    "HOSTS_FILE",
    "JOBS_FILE",
    "PROBE_TIMEOUT",
    "PULL_TIMEOUT",
    "REGISTRY_CONFIG_PATH",
    "RESOLV_CONF",
    "TOKEN_FILE",
]

# --- the node's files, as the runtime reads them ----------------------------------------------

#: the resolver configuration containerd's Go resolver reads
RESOLV_CONF: Final = Path("/etc/resolv.conf")
#: the hosts file consulted before DNS (Go resolver order: files, then dns)
HOSTS_FILE: Final = Path("/etc/hosts")
#: containerd's registry ``config_path`` (``<host>/hosts.toml``); several roots joined with ``:``
REGISTRY_CONFIG_PATH: Final = "/etc/containerd/certs.d"

# --- pullcheck's own files ---------------------------------------------------------------------

#: the YAML configuration of the agent and the aggregator (absent → defaults)
CONFIG_FILE: Final = Path("/etc/pullcheck/config.yaml")
#: the aggregator's warm-cache job file (absent at this path → no jobs)
JOBS_FILE: Final = Path("/etc/pullcheck/jobs.yaml")
#: the bearer token the APIs require and the CLI sends (a mounted Secret)
TOKEN_FILE: Final = Path("/var/run/secrets/pullcheck/token")

# --- timeouts, in seconds ----------------------------------------------------------------------

#: each probe step: one DNS query, connect, TLS handshake or HTTP request
PROBE_TIMEOUT: Final = 10.0
#: connecting to the CRI socket and every non-pull CRI call (crictl's ``--timeout`` default)
CRI_TIMEOUT: Final = 2.0
#: a whole pull test, the pull included
PULL_TIMEOUT: Final = 300.0
