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
# setup.py goes on without the C data plane where it cannot build; with a compiler here, a
# failed build is an error to see, not a slow fallback to find later.
if command -v gcc >/dev/null &&
    ! .venv/bin/python -c 'from uinet_tap.stack import fastpath; assert fastpath.AVAILABLE' 2>/dev/null; then
    echo "setup.sh: gcc is installed but the C data plane did not build; see: .venv/bin/pip install -v -e ." >&2
    exit 1
fi
# Byte-compile now: where PYTHONDONTWRITEBYTECODE is set every run would compile from source.
.venv/bin/python -m compileall -q uinet_tap reassembly stack plugins >/dev/null
.venv/bin/uinet-tap --version
