#!/usr/bin/env bash
# Create .venv and install uinet-tap with its test tools. Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
# Byte-compile now: where PYTHONDONTWRITEBYTECODE is set every run would compile from source.
.venv/bin/python -m compileall -q uinet_tap reassembly stack plugins >/dev/null
.venv/bin/uinet-tap --version
