#!/usr/bin/env bash
# Set up (dev extra) and run every check: the test suite and mypy on the TensorRT layer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
venv=${FCN_VENV:-.venv}
"$venv/bin/python" -m pytest -q "$@"
