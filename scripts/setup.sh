#!/usr/bin/env bash
# Create a virtual environment and install fcn-deploy into it: bash scripts/setup.sh [dev|gpu|cpu]
#
# torch first: with no torch present, a bare `torch` requirement pulls several GB of CUDA packages,
# so a machine without an NVIDIA GPU gets the CPU build (2.13.0) and one with a GPU the default
# CUDA build. Then the package with one extra: `cpu` (onnxruntime, the default), `dev` (cpu plus
# pytest, mypy and the TensorRT stubs for type-checking) or `gpu` (onnxruntime-gpu, tensorrt).
# onnxruntime and onnxruntime-gpu must never be installed together, so `gpu` removes the other.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=${1:-cpu}
venv=${FCN_VENV:-.venv}
python=${PYTHON:-python3}

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip

if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found, installing the CUDA build of torch"
    "${pip[@]}" install -q torch
  else
    echo "setup: no NVIDIA GPU, installing the CPU build of torch 2.13.0"
    "${pip[@]}" install -q torch==2.13.0 \
      || "${pip[@]}" install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
  fi
fi

case "$extra" in
  gpu) "${pip[@]}" uninstall -q -y onnxruntime 2>/dev/null || true ;;
  cpu|dev) "${pip[@]}" uninstall -q -y onnxruntime-gpu 2>/dev/null || true ;;
  *) echo "setup: unknown extra '$extra' (use cpu, dev or gpu)" >&2; exit 2 ;;
esac
"${pip[@]}" install -q -e ".[$extra]"
if [ "$extra" = dev ]; then
  # The stubs' own `tensorrt` dependency downloads from NVIDIA's index: install them alone.
  "${pip[@]}" install -q --no-deps "tensorrt-stubs==10.13.*"
fi
echo "setup: ready in $venv ($("$venv/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
