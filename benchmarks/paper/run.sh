#!/usr/bin/env bash
# The paper's experiments in miniature (see benchmarks/paper/README.md): pretraining, convolutionalization,
# FCN-32s-fixed / 32s / scratch / 16s / 8s / 8s at-once, two seeds each, on the synthetic scenes.
# Resumable: rerun after an interruption and finished steps are skipped. Extra arguments go to
# paper.py (e.g. --seeds 0,1,2).
set -euo pipefail
cd "$(dirname "$0")/../.."
# torch's default thread count (12 min on a quiet 2-core CPU). On a machine busy with other jobs,
# OMP_NUM_THREADS=1 is much faster: OpenMP threads spin at every barrier while others hold the cores.
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
exec "$PY" benchmarks/paper/paper.py --out benchmarks/paper/run --results benchmarks/paper/results "$@"
