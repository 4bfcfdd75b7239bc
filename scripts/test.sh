#!/usr/bin/env bash
# The test command: set up, lint, type-check, check generated stubs, run every test on the lab.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python proto/generate.py --check
.venv/bin/python -m pytest "$@"
# the container image: built here and smoke-tested against the lab as the manifests run it
exec bash scripts/image.sh
