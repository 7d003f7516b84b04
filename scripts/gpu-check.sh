#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU: bash scripts/gpu-check.sh --out DIR [--setup]
#
# It needs only the packages in scripts/gpu-machine-requirements.txt (no install, no network):
# the model is made in memory with random weights, and what is optional (jsonschema, OpenVINO,
# ONNX Runtime's CUDA provider, TensorRT, Triton) is a one-line skip. It runs with the project's
# virtual environment when there is one, else with python3, and PYTHONPATH=$PWD:$PWD/train (the
# library and the trainer; no install needed).
#
# 1. the GPU tests (`pytest -m gpu`): eager PyTorch FP16, the default device, the trainer's
#    cpu:gloo,cuda:nccl group and AMP training always, ONNX Runtime's CUDA provider and TensorRT
#    where they load (each skips with its reason otherwise);
# 2. fcn-bench on the full FCN-8s at 500x500 and 1024x2048, batch 1 and batch 8: eager FP32 and
#    FP16 (channels_last, cudnn.benchmark), ONNX Runtime FP32/FP16 and TensorRT where a real
#    session/engine can run on the GPU (else one line each), every row against the matmul peak
#    measured in the same run;
# 3. fcn-train (FCN-8s, synthetic scenes, 40 steps) with and without AMP: images/s;
# 4. torch.compile of the FP16 net against eager FP16, batch 1 and 8 (compile time in the notes);
# 5. a one-page summary of all of it, rewritten after every step (a check stopped by its time
#    limit still leaves one): every step's status, every failure, and every item that did not
#    run with its reason (a GPU test that skipped, a backend unavailable here, the results'
#    schema check without jsonschema, a step the budget cut). Its last line counts the skipped
#    items; "passed" alone means nothing was skipped.
# Everything a person needs to read the run lands in DIR (default benchmarks/results), 8 files,
# named <gpu>-<date>-*: the sweeps' b1 and b8 .json/.md/.png, <gpu>-<date>-gpu-check.log (all
# this prints, the test log included) and <gpu>-<date>-summary.md. Exit status: 0 when no step
# failed or was cut by the budget (skipped items are listed, not failures), 1 otherwise.
#
# Time: the whole check is one command under a 10-minute limit. GPU_CHECK_BUDGET (default 540 s)
# bounds the steps; each step gets what is left of it less RESERVE (30 s), kept for the summary,
# and is killed 10 s after its SIGTERM if it has not stopped by then (the trainer, say, saves a
# checkpoint on SIGTERM). The two sweeps share one --cache-dir: the batch-8 sweep reuses the
# batch-1 sweep's exports, engine and timing cache, and the FP16 file is exported once for ONNX
# Runtime and TensorRT.
# Estimate for an H200: the GPU tests ~1-2 min (two short AMP trainings, a 2-process NCCL group);
# each sweep ~1-2 min: the full FCN-8s is ~0.36 TFLOP per image at 500x500 and ~2 TFLOP at
# 1024x2048 (pad 100 included), so a timed batch-8 1024x2048 call in IEEE FP32 (~50 TFLOP/s) is
# ~0.3 s and its 3 + 20 + 3 calls ~10 s; FP16 is faster; model set-up, peaks and cuDNN's search
# add ~30 s per run. About 5 minutes for steps 1-2, ~1 minute for the training rates; inductor's
# compile time (step 4) is the least known, so it runs last: the budget cuts it, never the sweeps.
#
# --setup: `bash scripts/setup.sh gpu` first (needs the network; not counted in the budget).
# --rehearse: every step as on the GPU machine, on the CPU with a tiny net (gpu tests collected,
#   not run); tests/test_gpu_machine_env.py runs it in a copy of the GPU machine's environment.
# Without a GPU (and without --rehearse) it says so in one line, runs the plain-logic tests of the
# GPU paths (the CPU part of this check) and exits 0.
set -uo pipefail
venv=${FCN_VENV:-.venv}
out=
setup=0
rehearse=0
while [ $# -gt 0 ]; do
  case "$1" in
    --setup) setup=1 ;;
    --rehearse) rehearse=1 ;;
    --out)
      [ $# -ge 2 ] || { echo "gpu-check: error: --out needs a folder" >&2; exit 2; }
      out=$2
      shift ;;
    --out=*) out=${1#--out=} ;;
    *) echo "gpu-check: error: unknown option '$1' (use --out DIR, --setup or --rehearse)" >&2; exit 2 ;;
  esac
  shift
done
case "$out" in ''|/*) ;; *) out="$PWD/$out" ;; esac  # a relative --out is the caller's
cd "$(dirname "$0")/.."
out=${out:-benchmarks/results}
[ $setup = 1 ] && { bash scripts/setup.sh gpu || exit 1; }
export PYTHONPATH="$PWD:$PWD/train${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-$([ -x "$venv/bin/python" ] && echo "$venv/bin/python" || echo python3)}
budget=${GPU_CHECK_BUDGET:-540}
RESERVE=30
SECONDS=0

left() { echo $((budget - RESERVE - SECONDS > 10 ? budget - RESERVE - SECONDS : 10)); }

mkdir -p "$out" || { echo "gpu-check: error: cannot create --out $out" >&2; exit 2; }

# torch's own error, not a guess: a missing torch, a CPU build and a driver that cannot run this
# CUDA build are three different fixes
if ! probe=$("$python" -c 'import torch
print(torch.__version__, torch.version.cuda or "-", sep="|", end="|")
print(torch.cuda.get_device_name() if torch.cuda.is_available() else "")' 2>&1); then
  echo "gpu-check: error: $python cannot import torch: $(echo "$probe" | tail -n 1)" >&2
  exit 1
fi
probe=$(echo "$probe" | tail -n 1)  # torch may warn (an old driver) before the line
IFS='|' read -r torch_version torch_cuda gpu <<< "$probe"

cpu_tests=(tests/test_engine_logic.py tests/test_engine_runtime_logic.py tests/test_engine_image_io.py
           tests/test_setup_torch_build.py tests/test_bench_gpu_paths.py)
if [ -z "$gpu" ] && [ $rehearse = 0 ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    if [ "$torch_cuda" = - ]; then
      echo "gpu-check: error: an NVIDIA GPU is present but torch $torch_version is a CPU build; install its CUDA build (bash scripts/gpu-check.sh --setup)" >&2
    else
      echo "gpu-check: error: torch $torch_version (CUDA $torch_cuda) cannot use the GPU here: the driver is older than CUDA $torch_cuda needs, or the GPU is busy (see nvidia-smi)" >&2
    fi
    exit 1
  fi
  echo "gpu-check: no NVIDIA GPU here (torch sees none); ran only the CPU part: the plain-logic tests of the GPU paths"
  "$python" -m pytest -q -p no:cacheprovider "${cpu_tests[@]}" || exit 1
  exit 0
fi

if [ $rehearse = 1 ]; then
  gpu="rehearsal on the CPU"
  slug=rehearsal
  bench=(--device cpu --width 0.0625 --sizes 64x64 --warmup 0 --iters 2 --e2e-iters 1
         --matmul-size 256)
  train=(--device cpu --width 0.0625 --iterations 2 --log-every 1 --val-images 2)
  test_mode=(--collect-only)  # what a GPU would run, collected: imports and fixtures
else
  slug=$(echo "$gpu" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/^-//; s/-$//')
  bench=(--device cuda --sizes 500x500,1024x2048 --warmup 3 --iters 20 --e2e-iters 3)
  train=(--device cuda --iterations 40 --log-every 10 --val-images 4)
  test_mode=()
fi
stem="$out/${slug}-$(date -u +%Y-%m-%d)"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
runs=("fcn-bench batch 1=${stem}-b1.json" "fcn-bench batch 8=${stem}-b8.json"
      "torch.compile batch 1=$scratch/compile-b1.json" "torch.compile batch 8=$scratch/compile-b8.json")
summarize() {  # summarize [--final --seconds N]: (re)write the summary from what the steps left
  "$python" scripts/gpu_check_summary.py --summary "${stem}-summary.md" --scratch "$scratch" \
    --title "$gpu (torch $torch_version, CUDA $torch_cuda), $(date -u +%Y-%m-%d)" "$@" "${runs[@]}"
}
step() {  # step NAME CMD...: within what is left of the budget; recorded, then summarized
  local name=$1 start=$SECONDS code=0
  shift
  timeout -k 10 "$(left)" "$@" || code=$?
  printf '%s\t%s\t%s\n' "$name" "$code" "$((SECONDS - start))" >> "$scratch/steps.tsv"
  summarize || echo "gpu-check: the summary could not be written (see above)"
}

run() {
  echo "gpu-check: $gpu (torch $torch_version, CUDA $torch_cuda); results go to ${stem}-*"
  "$python" - scripts/gpu-machine-requirements.txt <<'PY'
import re
import sys
from importlib.metadata import PackageNotFoundError, version

missing = []
for line in open(sys.argv[1]):
    name = re.split(r"[\s<>=!~;#\[]", line.strip(), maxsplit=1)[0]
    try:
        name and version(name)
    except PackageNotFoundError:
        missing.append(name)
if missing:
    print(f"gpu-check: not installed here: {' '.join(missing)} (steps that need them fail or skip)")
PY

  # only the files holding gpu tests: one that cannot import still counts as a failure, but
  # does not stop the others; the JUnit report gives the summary every skip with its reason
  local gpu_files
  gpu_files=$(grep -l "mark.gpu" tests/test_*.py | tr '\n' ' ')
  echo "== GPU tests (pytest -m gpu ${test_mode[*]}: $gpu_files)"
  # shellcheck disable=SC2086
  step "GPU tests" "$python" -m pytest -q -rs -p no:cacheprovider --continue-on-collection-errors \
    --junitxml "$scratch/gpu-tests.xml" "${test_mode[@]}" -m gpu $gpu_files

  # every backend the GPU could run: fcn-bench asks a real session/engine and skips with one line
  # what cannot run here (ONNX Runtime's CUDA provider, TensorRT); one cache for both sweeps
  local backends=torch,torch-fp16,onnxruntime,onnxruntime-fp16,tensorrt
  local batch
  for batch in 1 8; do
    echo "== fcn-bench, batch $batch: $backends"
    step "fcn-bench batch $batch" "$python" -m fcn_deploy.cli.bench "${bench[@]}" \
      --backends "$backends" --batch "$batch" --cache-dir "$scratch/bench-cache" \
      --json "${stem}-b${batch}.json" --markdown "${stem}-b${batch}.md" --plot "${stem}-b${batch}.png"
  done

  # the rows below go into the summary and the log only (8 files come back); they run last, so
  # the budget cuts them, never the sweeps above
  local amp
  for amp in amp fp32; do
    echo "== fcn-train on synthetic scenes, $amp (images/s in the summary)"
    # shellcheck disable=SC2046
    step "fcn-train $amp" "$python" -c 'import sys; from fcn_train.cli import train_main; sys.exit(train_main())' \
      --data synthetic --variant fcn8s "${train[@]}" --val-every 1000 --checkpoint-every 1000 \
      --out "$scratch/train-$amp" $([ $amp = fp32 ] && echo --no-amp)
  done
  for batch in 1 8; do
    echo "== torch.compile in FP16 against eager FP16, batch $batch"
    step "torch.compile batch $batch" "$python" -m fcn_deploy.cli.bench "${bench[@]}" \
      --batch "$batch" --backends torch-fp16,torch-compile-fp16 --cache-dir "$scratch/bench-cache" \
      --json "$scratch/compile-b${batch}.json"
  done

  echo "== summary: ${stem}-summary.md"
  summarize --final --seconds "$SECONDS"
}

run 2>&1 | tee "${stem}-gpu-check.log"
exit "${PIPESTATUS[0]}"
