#!/usr/bin/env bash
# Set up (dev extra) and run every check: ruff (lint and format, config in pyproject.toml), mypy
# over the package (TensorRT calls checked against stubs of the newest supported release's real
# bindings; tests/test_trt_bindings.py checks every supported release) and the test suite. Extra
# arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
venv=${FCN_VENV:-.venv}
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
"$venv/bin/python" scripts/trt_bindings.py stubs typings >/dev/null
"$venv/bin/python" -m mypy fcn_deploy train/fcn_train
"$venv/bin/python" -m pytest -q "$@"
