#!/usr/bin/env bash
# The declared lower bounds, tested: a fresh environment with numpy 1.26 and opencv 4.11 (what
# PyTriton's numpy<2 allows), running the tests that touch images, files and the CLIs.
# Usage: bash scripts/test-min-deps.sh [pytest args]   (venv in $FCN_MIN_VENV, default .venv-min)
set -euo pipefail
cd "$(dirname "$0")/.."
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
printf 'numpy==1.26.*\nopencv-python-headless==4.11.0.86\n' > "$constraints"
venv=${FCN_MIN_VENV:-.venv-min}
PIP_CONSTRAINT="$constraints" FCN_VENV="$venv" bash scripts/setup.sh dev
"$venv/bin/python" -c 'import cv2, numpy; print("min deps: numpy", numpy.__version__, "opencv", cv2.__version__)'
"$venv/bin/python" -m pytest -q tests/test_cli_errors.py tests/test_predict_cli.py tests/test_data.py \
  tests/test_metrics.py tests/test_checkpoint.py tests/test_api.py "$@"
