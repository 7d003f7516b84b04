#!/usr/bin/env bash
# Set up (dev extra) and run every check: ruff (lint and format, config in pyproject.toml), mypy
# over the package (TensorRT calls checked against stubs of the newest supported release's real
# bindings; tests/test_trt_bindings.py checks every supported release) and the test suite. Extra
# arguments go to pytest. The suite also needs the GPU machine's environment
# (tests/test_gpu_machine_env.py): built here first, once (about a minute; kept in
# $FCN_GPU_MACHINE_VENV, default .venv-gpu-machine, until its package list changes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
venv=${FCN_VENV:-.venv}
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
"$venv/bin/python" scripts/trt_bindings.py stubs typings >/dev/null
"$venv/bin/python" -m mypy fcn_deploy train/fcn_train
export FCN_GPU_MACHINE_VENV=${FCN_GPU_MACHINE_VENV:-$PWD/.venv-gpu-machine}
bash scripts/gpu-machine-env.sh "$FCN_GPU_MACHINE_VENV"
"$venv/bin/python" -m pytest -q "$@"
