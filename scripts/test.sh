#!/usr/bin/env bash
# The test command: set up, lint, type-check, check generated stubs, run every test on the lab.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the container image builds (Debian packages, pip) while the checks and the tests run; its smoke
# test needs the lab, so it runs after them
image_log=$(mktemp -t pullcheck-image-build.XXXXXX)
setsid bash scripts/image.sh --build-only >"$image_log" 2>&1 &
image_build=$!
trap 'kill -- "-$image_build" 2>/dev/null || true' EXIT
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python proto/generate.py --check
.venv/bin/python -m pytest "$@"
if ! wait "$image_build"; then
  cat "$image_log" >&2
  echo "test.sh: building the container image failed (its output above)" >&2
  exit 1
fi
rm -f "$image_log"
trap - EXIT
# the container image: smoke-tested against the lab as the manifests run it (rebuilt from the
# layer cache if anything changed meanwhile)
exec bash scripts/image.sh
