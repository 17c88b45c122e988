#!/usr/bin/env bash
# Creates .venv and installs gradguard with its extras. Idempotent: a stamp keyed on
# pyproject.toml skips the work when nothing changed. torch is installed first, pinned to
# the CPU build, so that no later requirement resolves a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
stamp="$VENV/.gradguard-setup-$(sha256sum pyproject.toml | cut -c1-16)"
if [ -f "$stamp" ]; then exit 0; fi
echo "gradguard: setting up $VENV (first run only)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >&2 || true
"$VENV/bin/python" -m pip install -q "torch==2.13.0" >&2
"$VENV/bin/python" -m pip install -q -e ".[flower,nvflare,test]" >&2
rm -f "$VENV"/.gradguard-setup-*
touch "$stamp"
