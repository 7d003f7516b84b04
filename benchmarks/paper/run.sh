#!/usr/bin/env bash
# The paper's experiments in miniature (see benchmarks/paper/README.md): pretraining, convolutionalization,
# FCN-32s-fixed / 32s / scratch / 16s / 8s / 8s at-once, two seeds each, on the synthetic scenes.
# Resumable: rerun after an interruption and finished steps are skipped. Extra arguments go to
# paper.py (e.g. --seeds 0,1,2). On a shared machine: flock /tmp/fcn-heavy.lock bash benchmarks/paper/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
# One intra-op thread: on a shared 2-core machine two OpenMP threads spin at every barrier while the
# other jobs hold the cores (FCN-32s trained ~5x faster with one thread there). Override if quiet.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
exec "$PY" benchmarks/paper/paper.py --out benchmarks/paper/run --results benchmarks/paper/results "$@"
