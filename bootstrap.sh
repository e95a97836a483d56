#!/usr/bin/env bash
# Creates .venv with the locked TFX 1.16 environment and this project (editable).
#
# Finds Python 3.10 (TFX 1.16 supports nothing newer) via $MARCO_PYTHON, PATH,
# pyenv, or uv's own interpreters; installs a pinned uv next to the project if
# none is wanted from PATH; then installs exactly what uv.lock says. Re-running
# is cheap: an up-to-date .venv is left as it is.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

UV_VERSION="0.9.30"
TOOLS_DIR=".cache/bootstrap"

is_py310() {
  [ -x "$1" ] && "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 10) else 1)' \
    2>/dev/null
}

find_python() {
  local candidate
  if [ -n "${MARCO_PYTHON:-}" ]; then
    if is_py310 "$MARCO_PYTHON"; then echo "$MARCO_PYTHON"; return 0; fi
    echo "bootstrap: MARCO_PYTHON=$MARCO_PYTHON is not a Python 3.10 interpreter" >&2
    return 1
  fi
  for candidate in "$(command -v python3.10 || true)" "$(command -v python3 || true)" \
                   "$(command -v python || true)"; do
    if [ -n "$candidate" ] && is_py310 "$candidate"; then echo "$candidate"; return 0; fi
  done
  local pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
  if command -v pyenv >/dev/null 2>&1; then pyenv_root="$(pyenv root)"; fi
  for candidate in $(ls -d "$pyenv_root"/versions/3.10*/bin/python3.10 2>/dev/null | sort -rV); do
    if is_py310 "$candidate"; then echo "$candidate"; return 0; fi
  done
  if command -v uv >/dev/null 2>&1; then
    candidate="$(uv python find 3.10 2>/dev/null || true)"
    if [ -n "$candidate" ] && is_py310 "$candidate"; then echo "$candidate"; return 0; fi
  fi
  return 1
}

if ! PYTHON="$(find_python)"; then
  cat >&2 <<'MSG'
bootstrap: Python 3.10 was not found, and this project needs exactly 3.10
(TFX 1.16, tfx-bsl, TFDV, TFMA and ml-metadata 1.16 publish no wheels for 3.11+).
Looked at: $MARCO_PYTHON, python3.10/python3/python on PATH, pyenv versions,
and uv-managed interpreters. Get one of these, then run ./bootstrap.sh again:
  - pyenv:  pyenv install 3.10.13
  - uv:     uv python install 3.10
  - conda:  conda create -n py310 python=3.10, then MARCO_PYTHON=<that env>/bin/python
  - or any 3.10 build: MARCO_PYTHON=/path/to/python3.10 ./bootstrap.sh
MSG
  exit 1
fi
echo "bootstrap: using Python 3.10 at $PYTHON"

UV="$TOOLS_DIR/bin/uv"
if ! { [ -x "$UV" ] && [ "$("$UV" --version 2>/dev/null | cut -d' ' -f2)" = "$UV_VERSION" ]; }; then
  echo "bootstrap: installing uv $UV_VERSION into $TOOLS_DIR"
  rm -rf "$TOOLS_DIR"
  "$PYTHON" -m venv "$TOOLS_DIR"
  "$TOOLS_DIR/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi

# --frozen: install exactly uv.lock, never re-resolve. The project goes in editable.
"$UV" sync --frozen --extra dev --compile-bytecode --python "$PYTHON" --quiet

# The plate viewer's browser tests drive a real headless Chromium: Debian's chromium
# and chromium-driver packages (a browser cannot be downloaded at test time).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: chromium and chromedriver are missing and this is not a Debian-like" \
         "system; install them, or the plate viewer's browser tests are skipped" >&2
  else
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
      if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else SUDO="none"; fi
    fi
    if [ "$SUDO" = none ]; then
      echo "bootstrap: chromium and chromedriver are missing; run as root (or install sudo)," \
           "or: apt-get install -y chromium chromium-driver; until then the plate viewer's" \
           "browser tests are skipped" >&2
    else
      echo "bootstrap: installing chromium and chromium-driver with apt-get"
      # Only the browser tests need them: a failed install (no network to the Debian
      # mirror) is reported, and the environment is still usable without them.
      if ! { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
             && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                  chromium chromium-driver >/dev/null; }; then
        echo "bootstrap: apt-get could not install chromium and chromium-driver; the plate" \
             "viewer's browser tests are skipped until they are installed" >&2
      fi
    fi
  fi
fi
echo "bootstrap: .venv is ready ($(.venv/bin/python --version)); try .venv/bin/marco --help"
