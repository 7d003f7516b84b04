#!/usr/bin/env bash
# A virtual environment holding exactly the GPU machine's Python packages
# (scripts/gpu-machine-requirements.txt), CPU torch standing in for its CUDA build:
#   bash scripts/gpu-machine-env.sh [DIR]   (default $FCN_GPU_MACHINE_VENV or .venv-gpu-machine)
# fcn-deploy itself is not installed into it: gpu-check runs the checkout through PYTHONPATH, as
# the GPU machine does. Nothing is done when DIR was built from the same list (a stamp file).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-${FCN_GPU_MACHINE_VENV:-.venv-gpu-machine}}
list=scripts/gpu-machine-requirements.txt
stamp="$venv/requirements.sha256"
want=$(sha256sum "$list" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ]; then
  echo "gpu-machine-env: error: $venv exists and is not a virtual environment; pick another folder" >&2
  exit 2
fi
rm -rf "$venv"  # built from another list: start clean, so nothing unlisted stays
python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check install -q)
# PyPI's Linux torch is the CUDA build (several GB): PyTorch's CPU index first, as setup.sh does
"${pip[@]}" torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu --timeout 10 --retries 0 \
  2>/dev/null || "${pip[@]}" torch==2.13.0
"${pip[@]}" -r "$list"
echo "$want" > "$stamp"
echo "gpu-machine-env: ready in $venv"
