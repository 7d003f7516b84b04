#!/usr/bin/env bash
# Create a virtual environment and install fcn-deploy into it: bash scripts/setup.sh [dev|gpu|cpu]
#
# torch first, the build that fits the machine (checked by scripts/torch_build.py, not by whether
# `import torch` works): without an NVIDIA GPU the CPU build 2.13.0 — PyPI's Linux torch is the
# CUDA build with several GB of NVIDIA packages, so PyTorch's CPU index is tried first (one quick
# attempt), then the default index; with a GPU, or for the `gpu` extra, a CUDA build. Then the
# package with one extra: `cpu` (onnxruntime, the default), `dev` (cpu, serve, openvino, ray and
# ui, plus pytest, Selenium for the page's browser tests, mypy and pybind11-stubgen, which makes
# TensorRT stubs for type-checking) or `gpu` (onnxruntime-gpu,
# TensorRT and pytest, so `pytest -m gpu` runs the GPU tests). onnxruntime and onnxruntime-gpu must never be installed
# together, so each extra removes the other.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=${1:-cpu}
venv=${FCN_VENV:-.venv}
python=${PYTHON:-python3}
case "$extra" in
  cpu|dev|gpu) ;;
  *) echo "setup: unknown extra '$extra' (use cpu, dev or gpu)" >&2; exit 2 ;;
esac

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip

if [ "$extra" = gpu ] || { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }; then
  want=cuda
else
  want=cpu
fi
# torch warns "Failed to initialize NumPy" when imported before numpy is installed (it comes
# with the package, next): noise at this step, so that one warning is silenced
build() { PYTHONWARNINGS="ignore:Failed to initialize NumPy" "$venv/bin/python" scripts/torch_build.py "$want"; }
if ! problem=$(build); then
  echo "setup: $problem: installing the $want build of torch"
  # a build of the same version counts as installed: remove it first
  "${pip[@]}" uninstall -q -y torch 2>/dev/null || true
  if [ "$want" = cuda ]; then
    "${pip[@]}" install -q torch
  else
    "${pip[@]}" install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
      --timeout 10 --retries 0 \
      || "${pip[@]}" install -q torch==2.13.0
  fi
  if ! problem=$(build); then
    if [ "$want" = cuda ]; then
      echo "setup: $problem; install one for your CUDA driver (https://pytorch.org/get-started/locally/)" >&2
      exit 1
    fi
    echo "setup: warning: $problem; for the CPU build: pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" >&2
  fi
fi

if [ "$extra" = gpu ]; then
  "${pip[@]}" uninstall -q -y onnxruntime 2>/dev/null || true
  # TensorRT's CUDA variant follows torch's CUDA major (pyproject.toml: gpu, gpu-cu12)
  cuda_major=$("$venv/bin/python" -c 'import torch; print((torch.version.cuda or "13").split(".")[0])')
  gpu_extra=gpu
  [ "$cuda_major" = 12 ] && gpu_extra=gpu-cu12
  "${pip[@]}" install -qq -e ".[$gpu_extra,test]"  # -qq: not setuptools' editable-install box
  # onnxruntime-gpu lists its CUDA provider even when it cannot load it: ask a real session
  "$venv/bin/python" - <<'PY' || true
import onnx, onnx.helper as h, onnxruntime as ort
g = h.make_graph([h.make_node("Identity", ["x"], ["y"])], "g",
                 [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                 [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
s = ort.InferenceSession(m.SerializeToString(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
ok = "CUDAExecutionProvider" in s.get_providers()
print(f"setup: onnxruntime-gpu {ort.__version__}: CUDA provider " + ("active" if ok else "NOT active (CUDA/cuDNN libraries missing; see the error above)"))
PY
else
  "${pip[@]}" uninstall -q -y onnxruntime-gpu 2>/dev/null || true
  "${pip[@]}" install -qq -e ".[$extra]"  # -qq: not setuptools' editable-install box
fi
echo "setup: ready in $venv ($("$venv/bin/python" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)'))"
