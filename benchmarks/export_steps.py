"""Where an export's time and memory go: wall time and peak resident memory of each step.

    python benchmarks/export_steps.py fcn8s-port.pth --variant fcn8s --seed 7
    python benchmarks/export_steps.py fcn8s-port.pth --variant fcn8s --seed 7 \\
        --trees ../before . --repeat 2          # two versions, alternated, in one run

One `export_onnx` call runs in a fresh process. Its steps are cut at the exporter's own progress
lines (INFO messages of the ``fcn_deploy`` logger) and, inside them, at the library calls that
take the time: capture (``torch.export``), decompositions, ONNX translation, the optimizer,
serialization to a ModelProto, ``onnx.checker``, shape inference, ``onnx.save``, ONNX Runtime's
session creation and runs, ``torch.load``. Time not spent in one of those calls is shown under
the progress line it follows (PyTorch's own inference, for example). Each step's peak is the
process's ``VmHWM``, reset through ``/proc/self/clear_refs`` at every cut (Linux), so it is exact,
not sampled. CPU seconds (all threads, ``time.process_time``) depend much less than wall time on
what else the machine runs. The same cuts exist in every fcn-deploy version, so ``--trees``
compares versions: each one runs with ``PYTHONPATH`` at that checkout, in turn, ``--repeat``
times.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# library calls timed on their own: (module, attribute path, label)
CALLS = [
    ("torch", "load", "torch.load (checkpoint)"),
    ("torch.export", "export", "torch.export (capture)"),
    ("torch.onnx._internal.exporter._core", "_prepare_exported_program_for_export",
     "decompositions"),
    ("torch.onnx._internal.exporter._core", "_exported_program_to_onnx_program",
     "ONNX translation"),
    ("torch.onnx._internal.exporter._onnx_program", "ONNXProgram.optimize", "optimizer"),
    ("onnx_ir.serde", "serialize_model", "IR -> ModelProto"),
    ("fcn_deploy.export.exporter", "check_graph", "graph checks (other)"),
    ("onnx.checker", "check_model", "onnx.checker"),
    ("onnx.shape_inference", "infer_shapes", "shape inference"),
    ("onnx", "save_model", "onnx.save (serialize + write)"),
    ("onnx", "save", "onnx.save (serialize + write)"),
    ("fcn_deploy.export.exporter", "write_model", "write_model (streamed)"),
    ("gc", "collect", "gc.collect"),
    ("onnxruntime", "InferenceSession.__init__", "ONNX Runtime session"),
    ("onnxruntime", "InferenceSession.run", "ONNX Runtime runs"),
]  # fmt: skip


def _status(key: str) -> float:
    """GiB of ``VmHWM``/``VmRSS`` from /proc/self/status."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(key + ":"))
    return int(line.split()[1]) / 2**20


class Timeline:
    """Consecutive segments, each labelled and measured (seconds, peak GiB)."""

    def __init__(self) -> None:
        self.rows: dict[str, list[float]] = {}  # label → [seconds, CPU seconds, peak]
        self.stack: list[str] = []
        self.step = "start (imports done)"
        self.last, self.last_cpu = time.perf_counter(), time.process_time()
        self._reset()

    def _reset(self) -> None:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS

    def cut(self) -> None:
        """Close the current segment: charge it to the innermost call, else the step."""
        now, cpu, peak = time.perf_counter(), time.process_time(), _status("VmHWM")
        label = self.stack[-1] if self.stack else self.step
        row = self.rows.setdefault(label, [0.0, 0.0, 0.0])
        row[0] += now - self.last
        row[1] += cpu - self.last_cpu
        row[2] = max(row[2], peak)
        self.last, self.last_cpu = now, cpu
        self._reset()

    @contextlib.contextmanager
    def call(self, label: str) -> Iterator[None]:
        self.cut()
        self.stack.append(label)
        try:
            yield
        finally:
            self.cut()
            self.stack.pop()

    def new_step(self, message: str) -> None:
        self.cut()
        self.step = "· " + re.split(r" \(| \.\.\.|: ", message, maxsplit=1)[0]


def _wrap(timeline: Timeline) -> None:
    import importlib

    for module_name, path, label in CALLS:
        try:
            owner: Any = importlib.import_module(module_name)
        except ImportError:
            continue
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent, None)
        original = getattr(owner, name, None) if owner is not None else None
        if original is None or getattr(original, "_timed", False):
            continue

        def timed(*args: Any, __f: Callable[..., Any] = original, __l: str = label, **kw: Any):
            with timeline.call(__l):
                return __f(*args, **kw)

        timed = functools.wraps(original)(timed)
        timed._timed = True  # type: ignore[attr-defined]
        setattr(owner, name, timed)


class _Steps(logging.Handler):
    def __init__(self, timeline: Timeline) -> None:
        super().__init__(logging.INFO)
        self.timeline = timeline

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno == logging.INFO:
            self.timeline.new_step(record.getMessage())


def run_once(args: argparse.Namespace) -> dict[str, Any]:
    """One export in this process, measured."""
    from fcn_deploy.export import export_onnx

    base = _status("VmRSS")
    timeline = Timeline()
    _wrap(timeline)
    logger = logging.getLogger("fcn_deploy")
    logger.setLevel(logging.INFO)
    logger.addHandler(_Steps(timeline))
    start, start_cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        report = export_onnx(
            args.source,
            Path(tmp) / "model.onnx",
            variant=args.variant,
            precision=args.precision,
            seed=args.seed,
            verify=not args.no_verify,
            progress=False,
        )
        timeline.cut()
    return {
        "total_s": time.perf_counter() - start,
        "cpu_s": time.process_time() - start_cpu,
        "peak_gib": max(p for _, _, p in timeline.rows.values()),
        "imports_gib": base,
        "steps": timeline.rows,
        "file_mib": report.file_size / 2**20,
        "passed": report.passed,
        "worst_rel_error": max((r.rel_error or 0.0 for r in report.rows), default=None),
        "verification": getattr(report.metadata, "verification", None)  # None: before records
        or ("passed" if report.passed else "failed"),
    }


def table(result: dict[str, Any]) -> str:
    lines = [f"{'step':<44} {'seconds':>8} {'CPU s':>7} {'peak GiB':>9}"]
    for label, (seconds, cpu, peak) in result["steps"].items():
        if seconds >= 0.05:
            lines.append(f"{label:<44} {seconds:8.1f} {cpu:7.1f} {peak:9.2f}")
    lines.append(
        f"{'total':<44} {result['total_s']:8.1f} {result['cpu_s']:7.1f} "
        f"{result['peak_gib']:9.2f}   "
        f"(imports alone {result['imports_gib']:.2f} GiB; {result['file_mib']:.1f} MiB written; "
        f"verification {result['verification']}, worst rel. error {result['worst_rel_error']})"
    )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", help="checkpoint, state dict or .caffemodel to export")
    p.add_argument("--variant", default=None)
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16"))
    p.add_argument("--seed", type=int, default=7, help="verification sizes (default 7)")
    p.add_argument("--no-verify", action="store_true")
    p.add_argument("--dir", default=None, help="where the ONNX file is written (default tmp)")
    p.add_argument("--trees", nargs="+", type=Path, help="checkouts to compare, run in turn")
    p.add_argument("--repeat", type=int, default=1, help="rounds over --trees (default 1)")
    p.add_argument("--json", type=Path, help="write every run's figures here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(run_once(args)))
        return
    argv = _without_values(sys.argv[1:], ("--trees", "--repeat", "--json"))
    runs = []
    for round_ in range(args.repeat):
        for tree in args.trees or [Path(__file__).resolve().parents[1]]:
            env = os.environ | {"PYTHONPATH": f"{tree.resolve()}:{tree.resolve() / 'train'}"}
            out = subprocess.run(
                [sys.executable, __file__, *argv, "--child"],
                env=env, capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            result = json.loads(out.strip().splitlines()[-1]) | {"tree": str(tree)}
            runs.append(result)
            print(f"== {tree} (round {round_ + 1})\n{table(result)}\n", flush=True)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1) + "\n")


def _without_values(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """``argv`` without ``options`` and the values after each (up to the next ``-`` word)."""
    kept, skipping = [], False
    for a in argv:
        if a.startswith("-"):
            skipping = a in options
        if not skipping:
            kept.append(a)
    return kept


if __name__ == "__main__":
    main()
