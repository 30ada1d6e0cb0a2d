#!/usr/bin/env bash
# touchpath's two commands, set-up included:
#   ./run.sh demo [options]   the whole pipeline on the embedded default (see --help)
#   ./run.sh test [pytest options]   lint + the full test suite
# Creates .venv (or $TOUCHPATH_VENV) and installs the project into it when needed.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${TOUCHPATH_VENV:-.venv}"
PY="${PYTHON:-python3}"

setup() {
  if [ ! -x "$VENV/bin/touchpath" ] || [ pyproject.toml -nt "$VENV/.touchpath-installed" ]; then
    echo "setting up $VENV (pip install -e '.[test]') ..." >&2
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
    touch "$VENV/.touchpath-installed"
  fi
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  demo)
    setup
    exec "$VENV/bin/touchpath" demo "$@"
    ;;
  test)
    setup
    # The ops-page test drives Debian's headless Chromium; CI installs it (as root).
    if [ -n "${CI:-}" ] && ! command -v chromedriver >/dev/null; then
      apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null
    fi
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    exec "$VENV/bin/pytest" --durations=25 "$@"  # the slowest tests, to keep CI short
    ;;
  *)
    echo "usage: ./run.sh demo [options] | ./run.sh test [pytest options]" >&2
    exit 2
    ;;
esac
