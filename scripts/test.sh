#!/usr/bin/env bash
# Set up (dev extra) and run every check: ruff (lint and format, config in pyproject.toml), mypy
# over the package (TensorRT calls checked against stubs of the newest supported release's real
# bindings; tests/test_trt_bindings.py checks every supported release) and the test suite. Extra
# arguments go to pytest. The suite also needs the GPU machine's environment
# (tests/test_gpu_machine_env.py): built here first, once (about a minute; kept in
# $FCN_GPU_MACHINE_VENV, default .venv-gpu-machine, until its package list changes).
#
# --quick: the inner loop (about 2 minutes on 2 cores): ruff and the tests that run no CLI, server
# or browser process of their own (`-m "not slow"`), on the .venv already set up; no mypy.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${FCN_VENV:-.venv}
if [[ ${1:-} == --quick ]]; then
    shift
    [[ -x $venv/bin/pytest ]] || bash scripts/setup.sh dev
    "$venv/bin/ruff" check .
    exec "$venv/bin/python" -m pytest -q -n 2 -m "not slow" "$@"
fi
bash scripts/setup.sh dev
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
"$venv/bin/python" scripts/trt_bindings.py stubs typings >/dev/null
"$venv/bin/python" -m mypy fcn_deploy train/fcn_train
export FCN_GPU_MACHINE_VENV=${FCN_GPU_MACHINE_VENV:-$PWD/.venv-gpu-machine}
bash scripts/gpu-machine-env.sh "$FCN_GPU_MACHINE_VENV"
# two workers, each test module on one (its servers and fixtures are built once)
"$venv/bin/python" -m pytest -q -n 2 --dist loadfile "$@"
