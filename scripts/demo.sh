#!/usr/bin/env bash
# The main job end to end on the built-in synthetic data, no downloads:
#   set up → train a small FCN-8s → evaluate → export ONNX (verified; FP32, FP16, calibrated INT8)
#   → [GPU: FP16 TensorRT engine, gated] → evaluate every export → predict → benchmark.
# With an NVIDIA GPU it sets up the gpu extra (CUDA torch, onnxruntime-gpu, TensorRT), builds an
# FP16 engine from the FP16 export, scores it beside the checkpoint and the ONNX exports, and
# benchmarks TensorRT, ONNX Runtime CUDA and eager FP16 against eager FP32. Without a GPU (or
# without TensorRT) it says which steps it skips and why, and runs the rest.
# Everything lands in demo-out/ (or $FCN_DEMO_OUT). About 10 minutes on a 2-core CPU; set
# FCN_DEMO_TRAIN_SECONDS to train for longer or shorter (default 240).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${FCN_VENV:-.venv}
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  bash scripts/setup.sh gpu || {
    echo "demo: the GPU set-up failed (see above); going on with the CPU set-up" >&2
    bash scripts/setup.sh cpu
  }
else
  bash scripts/setup.sh cpu
fi
case "$venv" in /*) ;; *) venv="$PWD/$venv" ;; esac
export PATH="$venv/bin:$PATH"
out=${FCN_DEMO_OUT:-demo-out}
seconds=${FCN_DEMO_TRAIN_SECONDS:-240}
mkdir -p "$out"

# What this machine can run: "gpu trt" / "gpu" / "" (one line says what is skipped and why).
read -r gpu trt ort_cuda skip < <(python - <<'PY'
import importlib.util
import torch
from fcn_deploy.engine._trt import tensorrt_available
gpu = torch.cuda.is_available()
ort_cuda = False
if gpu and importlib.util.find_spec("onnxruntime"):
    from fcn_deploy.export.ort import cuda_provider_problem

    ort_cuda = cuda_provider_problem() is None  # a real session: the provider list cannot tell
trt = gpu and tensorrt_available()
if not gpu:
    why = "no CUDA GPU" + ("" if torch.version.cuda else f" (torch {torch.__version__} is a CPU build)")
    skip = f"skipping the TensorRT engine, its evaluation and the GPU benchmark: {why}"
elif not trt:
    skip = "skipping the TensorRT engine and its evaluation: TensorRT is not installed (bash scripts/setup.sh gpu)"
else:
    skip = ""
if gpu and not ort_cuda:
    skip += ("; " if skip else "") + f"skipping ONNX Runtime on the GPU: {cuda_provider_problem()}"
print("yes" if gpu else "no", "yes" if trt else "no", "yes" if ort_cuda else "no", skip or "-")
PY
)
[ "$skip" != "-" ] && echo "demo: $skip"

step() { printf '\n=== %s\n' "$*"; }

step "train: width-0.125 FCN-8s from scratch on the synthetic set (${seconds}s budget)"
fcn-train --data synthetic --variant fcn8s --width 0.125 --iterations 5000 --time-limit "$seconds" \
  --val-every 250 --checkpoint-every 250 --out "$out/train"

step "evaluate the checkpoint on the synthetic val split"
fcn-eval --model "$out/train/best.pt" --data synthetic --json "$out/eval-checkpoint.json"

step "export: FP32 tensor I/O and FP16 image I/O (preprocessing + argmax in the graph), both verified"
fcn-export "$out/train/best.pt" -o "$out/fcn8s.onnx" --max-size 1024x1024
fcn-export "$out/train/best.pt" -o "$out/fcn8s-image-fp16.onnx" --precision fp16 --io image --max-size 1024x1024

step "INT8: calibrated Q/DQ export, scored against FP32 on held-out synthetic scenes"
fcn-export "$out/train/best.pt" -o "$out/fcn8s-int8.onnx" --precision int8 --max-size 1024x1024 \
  || echo "note: the INT8 export missed its accuracy threshold (table above); scoring it anyway"

evals=(checkpoint onnx-fp32 onnx-fp16 onnx-int8)
if [ "$trt" = yes ]; then
  step "engine: FP16 TensorRT engine from the FP16 export, gated against ONNX Runtime"
  fcn-export "$out/fcn8s-image-fp16.onnx" --engine "$out/fcn8s-image-fp16.engine" \
    --timing-cache "$out/timing.cache"
  evals+=(engine)
fi

step "evaluate the exports on the same images"
fcn-eval --model "$out/fcn8s.onnx" --data synthetic --json "$out/eval-onnx-fp32.json"
fcn-eval --model "$out/fcn8s-image-fp16.onnx" --data synthetic --json "$out/eval-onnx-fp16.json"
fcn-eval --model "$out/fcn8s-int8.onnx" --data synthetic --json "$out/eval-onnx-int8.json"
if [ "$trt" = yes ]; then
  fcn-eval --model "$out/fcn8s-image-fp16.engine" --data synthetic --json "$out/eval-engine.json"
fi
python - "$out" "${evals[@]}" <<'PY'
import json, sys
out, names = sys.argv[1], sys.argv[2:]
print(f"{'model':<12} {'pixel acc':>9} {'mean IU':>8}")
for name in names:
    with open(f"{out}/eval-{name}.json") as f:
        scores = json.load(f)["scores"]
    print(f"{name:<12} {scores['pixel_accuracy']:>9.4f} {scores['mean_iu']:>8.4f}")
PY

step "predict: write a few synthetic scenes as JPEGs, segment them, write palette PNGs and overlays"
python - "$out/images" <<'PY'
import sys
from pathlib import Path
import cv2
from fcn_deploy.data import SyntheticSegmentation
folder = Path(sys.argv[1]); folder.mkdir(parents=True, exist_ok=True)
for i, (image, _) in enumerate(SyntheticSegmentation("val", num_images=8, seed=123)):
    cv2.imwrite(str(folder / f"scene{i}.jpg"), image)
PY
model="$out/fcn8s-image-fp16.onnx"
[ "$trt" = yes ] && model="$out/fcn8s-image-fp16.engine"
fcn-predict "$out/images" -o "$out/predictions" --model "$model" --overlay

if [ "$gpu" = yes ]; then
  step "benchmark on the GPU: TensorRT, ONNX Runtime CUDA and eager FP16 against eager FP32"
  backends=torch,torch-fp16
  [ "$ort_cuda" = yes ] && backends+=,onnxruntime,onnxruntime-fp16
  [ "$trt" = yes ] && backends+=,tensorrt
  fcn-bench --model "$out/train/best.pt" --device cuda --backends "$backends" \
    --sizes 224x224,500x500 --iters 20 --json "$out/bench.json" --markdown "$out/bench.md" --plot "$out/bench.png"
else
  step "benchmark: eager PyTorch against ONNX Runtime on the trained model"
  fcn-bench --model "$out/train/best.pt" --backends torch,onnxruntime,onnxruntime-fp16 \
    --sizes 224x224,500x500 --iters 10 --json "$out/bench.json" --markdown "$out/bench.md" --plot "$out/bench.png"
fi

step "done: see $out/ (training curves $out/train/*.png, predictions $out/predictions/, benchmark $out/bench.*)"
