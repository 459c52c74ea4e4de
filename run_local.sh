#!/usr/bin/env bash
# ./run_local.sh        set up (.venv, install, beamline setup), then the demo (beamline demo)
# ./run_local.sh test   same set-up, then the whole pytest suite (extra args go to pytest)
# The demo reads $BEAMLINE_DATA (default ../shared/data) and writes $BEAMLINE_REGISTRY
# (registry) and $BEAMLINE_OUT (out); `beamline demo --help` lists its options.
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
export PYTHONUNBUFFERED=1

if [ ! -x "$VENV/bin/python" ]; then
  "$(command -v python3.11 || command -v python3)" -m venv "$VENV"
fi
# Reinstall only when setup.py changed since the last install.
stamp="$VENV/.installed-$(sha256sum setup.py | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[test]'
  rm -f "$VENV"/.installed-* && touch "$stamp"
fi

case "${1:-demo}" in
  test) shift; exec "$VENV/bin/python" -m pytest "$@" ;;
  demo) shift || true
        "$VENV/bin/beamline" setup
        exec "$VENV/bin/beamline" demo "$@" ;;
  *) echo "usage: $0 [demo [beamline demo options] | test [pytest options]]" >&2; exit 2 ;;
esac
