#!/usr/bin/env bash
# Idempotent set-up on Debian/Ubuntu as root: the lab's system packages, a virtualenv, pullcheck.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(containerd runc docker-registry skopeo nginx-light dnsmasq-base nftables iproute2
              openssl apache2-utils python3-venv
              chromium fonts-liberation   # the dashboard's browser tests and screenshots
              podman mmdebstrap           # scripts/image.sh: the container image and its base
              prometheus)                 # promtool for the alert rules; the lab's Prometheus
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Newer Ubuntu folds nginx-light into nginx.
  if [[ " ${missing[*]} " == *" nginx-light "* ]] && ! apt-cache show nginx-light >/dev/null 2>&1; then
    missing=("${missing[@]/nginx-light/nginx}")
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts packaged daemons on install where it can; the lab runs its own, never these.
for svc in containerd nginx docker-registry prometheus; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done
# The lab starts its own Prometheus on demand (lab/prometheus.py); the packaged one stays off.
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled --quiet prometheus 2>/dev/null; then
  systemctl disable --quiet prometheus 2>/dev/null || true
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.pullcheck-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  log=.venv/pip-install.log
  if ! { .venv/bin/python -m pip install -q --upgrade pip &&
         .venv/bin/python -m pip install -q -e '.[dev]'; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup: pip install failed (log above)" >&2
    exit 1
  fi
  touch "$stamp"
fi
