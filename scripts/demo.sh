#!/usr/bin/env bash
# The main job on the local lab: start containerd + registries on loopback, run pull tests that
# succeed and that fail for each cause, print the diagnoses, stop the lab.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
[ "${1:-}" != --keep ] || export PULLCHECK_KEEP_LAB=1 PULLCHECK_DEMO_KEEP=1  # leave the dashboard up
keep_lab=${PULLCHECK_KEEP_LAB:-}
$PY -m lab up
[ -n "$keep_lab" ] || trap '$PY -m lab down' EXIT
eval "$($PY -m lab env)"
img() { $PY -c "from lab.info import LabInfo; print(LabInfo.load().images['$1'])"; }

run() {
  echo
  echo "\$ pullcheck $*"
  .venv/bin/pullcheck "$@" || true
}
run runtime
run pull "$(img good)"
run pull "$(img mirrored)"
run pull --mode resolve "$(img dockerhub_mirror)"
run pull "$(img missing_tag)"
run pull "$(img missing_repo)"
run pull "$(img private)"
run pull "$(img ratelimited)"
run pull "$(img untrusted)"
run pull "$(img mismatch)"
run pull "$(img refused)"
run pull --timeout 5 "$(img blackhole)"
run pull "$(img nxdomain)"
run pull "$(img corrupt)"
run pull "$(img foreign_platform)"
run pull "$(img blob_gone)"
run pull 'Plain.pullcheck.test:15000/Pullcheck/Good'
run probe "$(img good)"
echo; echo "# the cluster view: five lab nodes, two broken in different ways, one aggregator"
.venv/bin/python scripts/demo_cluster.py
