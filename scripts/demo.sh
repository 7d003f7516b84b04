#!/usr/bin/env bash
# The main job end to end on the built-in synthetic data, no downloads:
#   set up → train a small FCN-8s → evaluate → export ONNX (verified) → predict → benchmark.
# Everything lands in demo-out/ (or $FCN_DEMO_OUT). About 10 minutes on a 2-core CPU; set
# FCN_DEMO_TRAIN_SECONDS to train for longer or shorter (default 240).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh cpu
venv=${FCN_VENV:-.venv}
export PATH="$PWD/$venv/bin:$PATH"
out=${FCN_DEMO_OUT:-demo-out}
seconds=${FCN_DEMO_TRAIN_SECONDS:-240}
mkdir -p "$out"

step() { printf '\n=== %s\n' "$*"; }

step "1/6 train: width-0.125 FCN-8s from scratch on the synthetic set (${seconds}s budget)"
fcn-train --data synthetic --variant fcn8s --width 0.125 --iterations 5000 --time-limit "$seconds" \
  --val-every 250 --checkpoint-every 250 --out "$out/train"

step "2/6 evaluate the checkpoint on the synthetic val split"
fcn-eval --model "$out/train/best.pt" --data synthetic --json "$out/eval-checkpoint.json"

step "3/6 export: FP32 tensor I/O and FP16 image I/O (preprocessing + argmax in the graph), both verified"
fcn-export "$out/train/best.pt" -o "$out/fcn8s.onnx" --max-size 1024x1024
fcn-export "$out/train/best.pt" -o "$out/fcn8s-image-fp16.onnx" --precision fp16 --io image --max-size 1024x1024

step "4/6 evaluate the FP16 image-mode export on the same images"
fcn-eval --model "$out/fcn8s-image-fp16.onnx" --data synthetic --json "$out/eval-onnx-fp16.json"

# --- INT8 (issue 15): one contiguous block ---
step "4b/6 INT8: calibrated Q/DQ export, scored against FP32 on held-out synthetic scenes"
fcn-export "$out/train/best.pt" -o "$out/fcn8s-int8.onnx" --precision int8 --max-size 1024x1024 \
  || echo "note: the INT8 export missed its accuracy threshold (table above); scoring it anyway"
fcn-eval --model "$out/fcn8s-int8.onnx" --data synthetic --json "$out/eval-onnx-int8.json"
python - "$out" <<'PY'
import json, sys
out = sys.argv[1]
for name, f in (("FP32 checkpoint", "eval-checkpoint"), ("FP16 ONNX", "eval-onnx-fp16"), ("INT8 ONNX", "eval-onnx-int8")):
    print(f"{name:16s} mean IU {100 * json.load(open(f'{out}/{f}.json'))['scores']['mean_iu']:.2f}")
PY
# --- end INT8 ---

step "5/6 predict: write a few synthetic scenes as JPEGs, segment them, write palette PNGs and overlays"
python - "$out/images" <<'PY'
import sys
from pathlib import Path
import cv2
from fcn_deploy.data import SyntheticSegmentation
folder = Path(sys.argv[1]); folder.mkdir(parents=True, exist_ok=True)
for i, (image, _) in enumerate(SyntheticSegmentation("val", num_images=8, seed=123)):
    cv2.imwrite(str(folder / f"scene{i}.jpg"), image)
PY
fcn-predict "$out/images" -o "$out/predictions" --model "$out/fcn8s-image-fp16.onnx" --overlay

step "6/6 benchmark: eager PyTorch against ONNX Runtime on the trained model"
fcn-bench --model "$out/train/best.pt" --backends torch,onnxruntime,onnxruntime-fp16 \
  --sizes 224x224,500x500 --iters 10 --json "$out/bench.json" --markdown "$out/bench.md" --plot "$out/bench.png"

step "done: see $out/ (training curves $out/train/*.png, predictions $out/predictions/, benchmark $out/bench.*)"
