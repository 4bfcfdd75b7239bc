"""Import tweaks: modules pullcheck never uses stay out of its processes. One place for them.

Importing this module applies them; it must come before the first ``import httpx``, the first
import of dnspython's ``dns.query`` and ``import uvicorn``: ``agent/probes/dns.py`` (the first
probe module loaded), ``agent/probes/_transport.py`` and ``agent/cli/_serve.py`` import it first.
``tests/unit/test_imports.py`` checks that the modules stay out. A ``None`` entry in
``sys.modules`` makes an import of that module fail; each library below expects that failure.

* ``httpx._main``: ``import httpx`` imports httpx's own command line (rich, pygments, click:
  ~36 ms, ~2 MiB) unless that fails (``httpx.main`` then says how to install it).
* DNS-over-HTTPS: dnspython's ``dns.query`` imports an HTTP/2 client stack (httpx2, httpcore2,
  h2, hpack: ~45 ms, ~3 MiB) when those are installed. The DNS probe asks over UDP and TCP only,
  like the node's resolver; the aggregator's discovery imports httpx2 itself.
* ``h2`` (h2, hpack, hyperframe: ~0.6 MiB): httpcore and httpcore2 import it when installed, for
  HTTP/2, which no pullcheck client speaks (the probes ask over HTTP/1.1); a client asked for
  ``http2=True`` would say that h2 is not installed.
* ``watchfiles`` (a Rust extension, ~0.8 MiB): ``import uvicorn`` imports it for ``--reload``
  when installed and falls back to its stat-based reloader otherwise; pullcheck's servers never
  reload.
"""

from __future__ import annotations

import sys

import dns._features

for _unused in ("httpx._main", "h2", "watchfiles"):
    sys.modules.setdefault(_unused, None)  # type: ignore[arg-type]  # None: "known missing"
dns._features.force("doh", False)
