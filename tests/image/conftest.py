"""The container image smoke test runs from scripts/image.sh, which builds the image first.

It needs the image named in PULLCHECK_IMAGE; a plain ``pytest`` run (no image built) does not
collect these tests, and CI runs them through scripts/image.sh, where a missing image or any
failure fails the run.
"""

from __future__ import annotations

import os

from lab.containers import IMAGE_ENV

collect_ignore_glob = [] if os.environ.get(IMAGE_ENV) else ["test_*.py"]
