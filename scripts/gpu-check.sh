#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU: bash scripts/gpu-check.sh [--setup]
#
# 0. with --setup: `bash scripts/setup.sh gpu` first (needs the network): a CUDA build of torch,
#    onnxruntime-gpu, TensorRT and pytest in .venv (or $FCN_VENV), the set-up under which every
#    gpu test runs instead of skipping;
# 1. the GPU tests (`pytest -m gpu`): eager PyTorch FP16, the default device, the trainer's
#    cpu:gloo,cuda:nccl group and AMP training always, ONNX Runtime's CUDA provider with IO
#    binding where onnxruntime-gpu is installed, TensorRT engines where tensorrt imports (each
#    skips with its reason otherwise);
# 2. fcn-bench with every GPU backend present (torch and torch-fp16 always, onnxruntime and
#    onnxruntime-fp16 with the CUDA provider, tensorrt where it imports) on the full FCN-8s at
#    500x500 and 1024x2048, batch 1 and 8, writing JSON/Markdown/PNG to
#    benchmarks/results/<gpu-name>-<date>-b1.* and -b8.*;
# 3. one summary table of both runs.
# Without --setup it needs no network: the model is made in memory with random weights. It runs
# with the project's virtual environment when there is one, else with python3 and
# PYTHONPATH=$PWD (no install needed). Each step gets what is left of a 10-minute budget
# (GPU_CHECK_BUDGET seconds; the set-up is not counted).
#
# Without a GPU it says so in one line, runs the plain-logic tests of the GPU paths (the CPU part
# of this check) and exits 0. Exit status: 0 when every step passed, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
venv=${FCN_VENV:-.venv}
case "${1:-}" in
  --setup) bash scripts/setup.sh gpu || exit 1 ;;
  "") ;;
  *) echo "gpu-check: unknown option '$1' (use --setup, or nothing)" >&2; exit 2 ;;
esac
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-$([ -x "$venv/bin/python" ] && echo "$venv/bin/python" || echo python3)}
budget=${GPU_CHECK_BUDGET:-570}
SECONDS=0
status=0

left() { echo $((budget - SECONDS > 10 ? budget - SECONDS : 10)); }

cpu_tests=(tests/test_engine_logic.py tests/test_engine_runtime_logic.py tests/test_engine_image_io.py
           tests/test_setup_torch_build.py tests/test_bench_gpu_paths.py)

gpu=$("$python" -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "")' 2>/dev/null)
if [ -z "$gpu" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu-check: an NVIDIA GPU is present but this torch has no CUDA; install its CUDA build (bash scripts/gpu-check.sh --setup)" >&2
    exit 1
  fi
  echo "gpu-check: no NVIDIA GPU here (torch sees none); ran only the CPU part: the plain-logic tests of the GPU paths"
  "$python" -m pytest -q -p no:cacheprovider "${cpu_tests[@]}" || exit 1
  exit 0
fi

slug=$(echo "$gpu" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/^-//; s/-$//')
stem="benchmarks/results/${slug}-$(date -u +%Y-%m-%d)"
mkdir -p benchmarks/results
echo "gpu-check: $gpu; results go to ${stem}-b1.* and ${stem}-b8.*"

missing=$("$python" - <<'EOF'
import importlib.util

wanted = ["onnx", "onnxruntime", "onnxscript", "cv2", "PIL", "matplotlib", "scipy", "pytest"]
print(" ".join(m for m in wanted if importlib.util.find_spec(m) is None))
EOF
)
[ -n "$missing" ] && echo "gpu-check: not installed here: $missing (steps that need them fail or skip)"
if ! "$python" -c 'import onnxruntime as o, sys; sys.exit("CUDAExecutionProvider" not in o.get_available_providers())' 2>/dev/null; then
  echo "gpu-check: no onnxruntime-gpu here: the ONNX Runtime CUDA tests and rows skip (bash scripts/gpu-check.sh --setup installs it)"
fi

# only the files holding gpu tests: one that imports what this machine lacks cannot stop the
# others (it still counts as a failure)
gpu_files=$(grep -l "mark.gpu" tests/test_*.py | tr '\n' ' ')
echo "== GPU tests (pytest -m gpu: $gpu_files)"
timeout "$(left)" "$python" -m pytest -q -rs -p no:cacheprovider --continue-on-collection-errors \
  -m gpu $gpu_files || status=1

backends=$("$python" - <<'EOF'
from fcn_deploy.engine._trt import tensorrt_available

names = ["torch", "torch-fp16"]
try:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        names += ["onnxruntime", "onnxruntime-fp16"]
except ImportError:
    pass
if tensorrt_available():
    names.append("tensorrt")
print(",".join(names))
EOF
)
echo "== fcn-bench on $gpu: $backends at 500x500 and 1024x2048"
cache=$(mktemp -d)
trap 'rm -rf "$cache"' EXIT
for batch in 1 8; do
  out="${stem}-b${batch}"
  plot=(--plot "$out.png")
  case " $missing " in *" matplotlib "*) plot=() ;; esac  # no PNG without matplotlib
  timeout "$(left)" "$python" -m fcn_deploy.cli.bench --device cuda --backends "$backends" \
    --sizes 500x500,1024x2048 --batch "$batch" --warmup 3 --iters 20 --e2e-iters 3 \
    --cache-dir "$cache" --json "$out.json" --markdown "$out.md" "${plot[@]}" >/dev/null \
    || status=1
done

echo "== summary"
"$python" - "${stem}-b1.json" "${stem}-b8.json" <<'EOF' || status=1
import json
import sys
from pathlib import Path

from fcn_deploy.bench.report import table

header, rows, skipped = None, [], []
for path in map(Path, sys.argv[1:]):
    if not path.is_file():
        print(f"(no {path}: that run failed, see above)")
        continue
    doc = json.loads(path.read_text())
    header, body = table(doc)  # it has a batch column: the two runs' rows stack
    rows += body
    skipped += [f"batch {doc['config']['batch']}: {s['backend']}: {s['reason']}" for s in doc["skipped"]]
if header:
    widths = [max(len(c) for c in col) for col in zip(header, *rows)]
    for i, line in enumerate([header, *rows]):
        print("  ".join(c.rjust(w) for c, w in zip(line, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
for line in skipped:
    print("skipped", line)
EOF
echo "gpu-check: $([ $status = 0 ] && echo passed || echo FAILED) in ${SECONDS}s"
exit $status
