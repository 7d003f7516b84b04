#!/usr/bin/env bash
# The main job end to end on the built-in synthetic data, no downloads:
#   set up → train a small FCN-8s → evaluate → export ONNX (verified; FP32, FP16, calibrated INT8)
#   → [GPU: FP16 TensorRT engine, gated] → evaluate every export → predict → benchmark.
# With an NVIDIA GPU it sets up the gpu extra (CUDA torch, onnxruntime-gpu, TensorRT), builds an
# FP16 engine from the FP16 export, scores it beside the checkpoint and the ONNX exports, and
# benchmarks TensorRT, ONNX Runtime CUDA and eager FP16 against eager FP32. Without a GPU (or
# without TensorRT) it says which steps it skips and why, and runs the rest. The last lines
# summarize every step, failures included, and say what to run next.
#
# Settings (environment variables):
#   FCN_DEMO_OUT               where everything goes (default demo-out). A folder an earlier demo
#                              wrote is started over; any other non-empty folder is refused.
#   FCN_DEMO_TRAIN_ITERATIONS  training budget in iterations (default 600)
#   FCN_DEMO_TRAIN_SECONDS     time cap on the training, in seconds (default 900)
#   FCN_VENV                   the virtual environment to set up and use (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${FCN_VENV:-.venv}
out=${FCN_DEMO_OUT:-demo-out}
iterations=${FCN_DEMO_TRAIN_ITERATIONS:-600}
seconds=${FCN_DEMO_TRAIN_SECONDS:-900}
marker="$out/.fcn-demo"  # the folder is the demo's own, so a rerun may start it over
if [ -d "$out" ] && [ -n "$(ls -A "$out")" ]; then
  if [ ! -f "$marker" ]; then
    echo "demo: error: $out/ holds files the demo did not write; set FCN_DEMO_OUT to another folder" >&2
    exit 2
  fi
  echo "demo: starting over in $out/ (replacing the previous run's files)"
  rm -rf "$out"
fi
mkdir -p "$out"
touch "$marker"

steps=()  # one summary line per step: ok, FAILED or INTERRUPTED, then what it was
current="" child="" signal_name="" finished=no
run() {   # run LABEL CMD...: run one step and record how it went
  local label=$1 code=0
  shift
  current=$label
  # in the background, so that a signal to this script is handled at once (bash runs traps only
  # between foreground commands) and passed on to the step; stdin stays the step's own
  "$@" <&0 &
  child=$!
  wait "$child" || code=$?
  child="" current=""
  if [ "$code" -eq 0 ]; then
    steps+=("ok           $label")
  else
    steps+=("FAILED       $label (exit $code)")
    return "$code"
  fi
}
stop() {  # stop NAME NUMBER: a signal ends the demo; the step running is marked interrupted
  signal_name=$1
  trap '' INT TERM HUP  # one stop, however many signals follow
  if [ -n "$child" ]; then
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  [ -n "$current" ] && steps+=("INTERRUPTED  $current (SIG$1)")
  exit $((128 + $2))
}
trap 'stop INT 2' INT
trap 'stop TERM 15' TERM
trap 'stop HUP 1' HUP
summary() {
  local code=$?
  printf '\n=== summary\n'
  [ "${#steps[@]}" -gt 0 ] && printf '%s\n' "${steps[@]}"
  if [ -f "$out/train/log.csv" ]; then
    python - "$out" <<'PY' || true
import csv, json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = list(csv.DictReader(open(out / "train" / "log.csv")))
it, s = int(rows[-1]["iteration"]), float(rows[-1]["elapsed_s"])
print(f"training: {it} iterations in {s:.0f} s ({it / max(s, 1e-9):.1f} it/s on this machine)")
for name in ("checkpoint", "onnx-fp32", "onnx-fp16", "onnx-int8", "engine"):
    path = out / f"eval-{name}.json"
    if path.is_file():
        scores = json.loads(path.read_text())["scores"]
        print(f"  {name:<11} pixel acc {scores['pixel_accuracy']:.4f}  mean IU {scores['mean_iu']:.4f}")
PY
  fi
  if [ -n "$signal_name" ]; then
    echo "the demo was stopped by SIG$signal_name (exit $code) before it finished; the steps after the last one above did not run"
    echo "run it again: bash scripts/demo.sh"
    return
  fi
  if [ "$finished" != yes ]; then
    echo "the demo stopped early (exit $code); the lines above say where"
    echo "run it again: bash scripts/demo.sh"
    return
  fi
  local model="$out/fcn8s-int8.onnx"  # the fastest on a CPU, unless it failed its verification
  [ -n "${int8_flags[*]-}" ] && model="$out/fcn8s.onnx"
  cat <<EOF

next: the fcn-* tools are installed in $venv; activate it in each new shell:
  source $venv/bin/activate
  fcn-predict $model $out/images -o out/ --overlay
  fcn-serve $out/fcn8s.onnx      # then, in another shell: fcn-predict --server 127.0.0.1:8000 $out/images -o served/
  fcn-bench $out/train/best.pt --backends torch,onnxruntime,onnxruntime-int8 --sizes 500x500
more: README.md and docs/
EOF
}
trap summary EXIT

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  run "set up $venv (gpu extra)" bash scripts/setup.sh gpu || {
    echo "demo: the GPU set-up failed (see above); going on with the CPU set-up" >&2
    run "set up $venv" bash scripts/setup.sh cpu
  }
else
  run "set up $venv" bash scripts/setup.sh cpu
fi
venv_path=$venv
case "$venv_path" in /*) ;; *) venv_path="$PWD/$venv_path" ;; esac
export PATH="$venv_path/bin:$PATH"

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

step "train: width-0.125 FCN-8s from scratch on the synthetic set ($iterations iterations, at most ${seconds}s)"
run "train ($out/train)" fcn-train --data synthetic --variant fcn8s --width 0.125 \
  --iterations "$iterations" --time-limit "$seconds" --val-every 200 --checkpoint-every 200 \
  --out "$out/train"

step "evaluate the checkpoint on the synthetic val split"
run "evaluate the checkpoint" \
  fcn-eval "$out/train/best.pt" --data synthetic --json "$out/eval-checkpoint.json" || true

step "export: FP32 tensor I/O and FP16 image I/O (preprocessing + argmax in the graph), both verified"
run "export FP32 ($out/fcn8s.onnx)" \
  fcn-export "$out/train/best.pt" -o "$out/fcn8s.onnx" --max-size 1024x1024 || true
run "export FP16 with image I/O ($out/fcn8s-image-fp16.onnx)" \
  fcn-export "$out/train/best.pt" -o "$out/fcn8s-image-fp16.onnx" --precision fp16 --io image \
  --max-size 1024x1024 || true

step "INT8: calibrated Q/DQ export, judged against FP32 on held-out synthetic scenes"
int8_flags=()
run "export INT8 ($out/fcn8s-int8.onnx)" fcn-export "$out/train/best.pt" \
  -o "$out/fcn8s-int8.onnx" --precision int8 --max-size 1024x1024 || {
  echo "note: the INT8 export missed its accuracy threshold (table above); it is marked unverified and scored anyway"
  int8_flags=(--allow-unverified)
}

evals=(checkpoint onnx-fp32 onnx-fp16 onnx-int8)
if [ "$trt" = yes ]; then
  step "engine: FP16 TensorRT engine from the FP16 export, gated against ONNX Runtime"
  run "engine ($out/fcn8s-image-fp16.engine)" \
    fcn-export "$out/fcn8s-image-fp16.onnx" --engine "$out/fcn8s-image-fp16.engine" \
    --timing-cache "$out/timing.cache"
  evals+=(engine)
fi

step "evaluate the exports on the same images"
run "evaluate the FP32 export" \
  fcn-eval "$out/fcn8s.onnx" --data synthetic --json "$out/eval-onnx-fp32.json" || true
run "evaluate the FP16 export" \
  fcn-eval "$out/fcn8s-image-fp16.onnx" --data synthetic --json "$out/eval-onnx-fp16.json" || true
if [ -f "$out/fcn8s-int8.onnx" ]; then
  run "evaluate the INT8 export" fcn-eval "$out/fcn8s-int8.onnx" --data synthetic \
    --json "$out/eval-onnx-int8.json" ${int8_flags[@]+"${int8_flags[@]}"} || true
fi
if [ "$trt" = yes ]; then
  run "evaluate the engine" fcn-eval --model "$out/fcn8s-image-fp16.engine" --data synthetic \
    --json "$out/eval-engine.json" || true
fi

step "predict: write a few synthetic scenes as JPEGs, segment them, write palette PNGs and overlays"
run "write 8 scenes ($out/images)" python - "$out/images" <<'PY'
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
run "predict 8 scenes ($out/predictions)" \
  fcn-predict "$model" "$out/images" -o "$out/predictions" --overlay || true

# the benchmark runs the exports made above (--onnx), never exports again
exports=()
for file in fcn8s.onnx fcn8s-int8.onnx $([ "$gpu" = yes ] && echo fcn8s-image-fp16.onnx); do
  [ -f "$out/$file" ] && exports+=(--onnx "$out/$file")
done
if [ "$gpu" = yes ]; then
  step "benchmark on the GPU: TensorRT, ONNX Runtime CUDA and eager FP16 against eager FP32"
  backends=torch,torch-fp16
  [ "$ort_cuda" = yes ] && backends+=,onnxruntime,onnxruntime-fp16
  [ "$trt" = yes ] && backends+=,tensorrt
  run "benchmark ($out/bench.md)" fcn-bench "$out/train/best.pt" ${exports[@]+"${exports[@]}"} \
    ${int8_flags[@]+"${int8_flags[@]}"} --device cuda --backends "$backends" \
    --sizes 224x224,500x500 --iters 20 --json "$out/bench.json" --markdown "$out/bench.md" \
    --plot "$out/bench.png" || true
else
  step "benchmark: eager PyTorch against the FP32 and INT8 exports (ONNX Runtime; OpenVINO where installed)"
  run "benchmark ($out/bench.md)" fcn-bench "$out/train/best.pt" ${exports[@]+"${exports[@]}"} \
    ${int8_flags[@]+"${int8_flags[@]}"} --sizes 224x224,500x500 --iters 10 \
    --json "$out/bench.json" --markdown "$out/bench.md" --plot "$out/bench.png" || true
fi
finished=yes
