"""``fcn-bench``: backends against eager PyTorch across input sizes, with the machine's limit.

Defaults measure what is fast on the device: on a CPU eager PyTorch against FP32 and INT8 under
ONNX Runtime (and OpenVINO where installed), on a GPU eager FP32 and FP16, ONNX Runtime and
TensorRT; the full FCN-8s with random weights at 224×224 and 500×500 (126 and 363 GFLOPs per
image, about 1 and 2-3 s per call on a 2-core CPU), 1 warm-up call and 5 timed calls per size, 3
end-to-end calls, each peak probe within 5 s. Exports already made (``--onnx``) run as they
are. On a GPU, ask for more: ``--iters 50 --sizes 224x224,500x500,512x1024,1024x2048``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from .._io import check_output_file
from ..bench import (
    BENCH_BACKENDS,
    SCENARIOS,
    BenchConfig,
    format_console,
    run_benchmark,
    validate,
    write_json,
    write_markdown,
    write_plot,
)
from ..bench.machine import PROBE_BUDGET_S
from ..bench.scenarios import BENCH_CALIBRATION
from ..imageio import check_megapixels
from ._common import (
    EXIT_FAILED,
    OneLineParser,
    add_allow_unverified,
    add_model_argument,
    add_verbosity,
    non_negative_float,
    non_negative_int,
    parse_args,
    positive_float,
    positive_int,
    refuse_overwrites,
    run_cli,
    say,
    size_list,
)
from .predict import add_max_megapixels

__all__ = ["build_parser", "main"]

DESCRIPTION = (
    "Time backends against eager PyTorch FP32 on the same inputs, across input sizes, with each "
    "rate next to the machine's measured matmul peak. Rows whose calls scatter (p90 over 1.25x "
    "p50) and a peak that drifted during the run are marked."
)

DEFAULT_SIZES = "224x224,500x500"
SLIDING_SIZES = "224x224,352x352,480x480"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="fcn-bench",
        description=DESCRIPTION,
    )
    p.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="sizes",
        help="sizes: every backend at every size (default); stream: random sizes through one "
        "model; sliding-window: one convolutional pass against the FC classifier per window; "
        "static-vs-dynamic: TensorRT engines",
    )
    add_model_argument(
        p,
        "checkpoint, PyTorch-port state dict (with --variant), .onnx or .engine; "
        "default: a full-size net with random weights, made in memory",
    )
    p.add_argument(
        "--variant", help="net of a bare state dict, or of the random default model (fcn8s)"
    )
    p.add_argument(
        "--width",
        type=positive_float,
        default=1.0,
        help="channel multiplier of the random default model (default 1)",
    )
    p.add_argument(
        "--num-classes",
        type=positive_int,
        default=21,
        help="classes of the random default model (default 21)",
    )
    p.add_argument(
        "--backends",
        help=f"comma-separated, from {', '.join(BENCH_BACKENDS)} (default: on a CPU torch, "
        "onnxruntime, onnxruntime-int8, and openvino, openvino-int8 where installed; on a GPU "
        "torch, torch-fp16, onnxruntime, tensorrt)",
    )
    p.add_argument(
        "--onnx",
        type=Path,
        action="append",
        default=[],
        metavar="FILE|DIR",
        help="an exported .onnx file, or a folder of them (repeatable): the ONNX backends (and "
        "TensorRT, from the FP16 one) run these instead of exporting MODEL again; one per "
        "precision, verified and exported from MODEL",
    )
    p.add_argument(
        "--sizes",
        type=size_list,
        help=f"HxW list (default {DEFAULT_SIZES}; sliding-window: {SLIDING_SIZES})",
    )
    p.add_argument("--batch", type=positive_int, default=1, help="images per call (default 1)")
    p.add_argument(
        "--warmup", type=non_negative_int, default=1, help="untimed calls per size (default 1)"
    )
    p.add_argument(
        "--iters", type=positive_int, default=5, help="timed calls per size, at least (default 5)"
    )
    p.add_argument(
        "--min-time",
        type=non_negative_float,
        default=0.0,
        help="keep timing each size for at least this many seconds (default 0)",
    )
    p.add_argument(
        "--e2e-iters",
        type=non_negative_int,
        default=3,
        help="end-to-end calls (image → labels via Segmenter); 0 skips (default 3)",
    )
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument(
        "--threads",
        type=positive_int,
        help="intra-op threads for PyTorch and ONNX Runtime (default: all cores)",
    )
    p.add_argument(
        "--stream",
        type=_stream,
        default=(8, 64, 1024),
        metavar="FRAMES:MIN-MAX",
        help="stream scenario: frames and their side lengths (default 8:64-1024)",
    )
    p.add_argument(
        "--matmul-size",
        type=positive_int,
        help="side of the matmul measured as the peak (default: the largest, up to 4096 CPU and "
        "8192 GPU, that fits --peak-seconds)",
    )
    p.add_argument(
        "--peak-seconds",
        type=positive_float,
        default=PROBE_BUDGET_S,
        metavar="S",
        help=f"time budget of each peak probe, one per matmul kernel (default {PROBE_BUDGET_S:g})",
    )
    p.add_argument(
        "--calibration",
        default=BENCH_CALIBRATION,
        metavar="SOURCE",
        help="INT8 backends made from a checkpoint calibrate on these images: bench (drawn like "
        "the measured inputs, never the same ones; default), synthetic (the built-in scenes), "
        "voc:ROOT, sbd:ROOT or a folder/glob",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the inputs (default 0)")
    p.add_argument(
        "--cache-dir",
        type=Path,
        help="where on-the-fly ONNX files/engines go and stay (default: a temp dir, removed at "
        "the end)",
    )
    p.add_argument("--json", type=Path, help="write the result document here")
    p.add_argument("--markdown", type=Path, help="write a Markdown table here")
    p.add_argument("--plot", type=Path, help="write a PNG plot here")
    add_allow_unverified(p)
    add_verbosity(p)
    add_max_megapixels(p)
    return p


def _stream(text: str) -> tuple[int, int, int]:
    """``FRAMES:MIN-MAX`` → (frames, smallest side, largest side)."""
    try:
        frames, _, span = text.partition(":")
        low, _, high = span.partition("-")
        count, lo, hi = int(frames), int(low), int(high)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected FRAMES:MIN-MAX such as 8:64-1024, got {text!r}"
        ) from None
    if count < 1 or not 1 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"need FRAMES ≥ 1 and 1 ≤ MIN ≤ MAX, got {text!r}")
    return count, lo, hi


def _main(argv: Sequence[str] | None) -> int:
    args = parse_args(build_parser(), argv)
    outputs = {"--json": args.json, "--markdown": args.markdown, "--plot": args.plot}
    exports = {f"--onnx {f}": f for f in args.onnx if not f.is_dir()}
    refuse_overwrites(outputs, {"--model": args.model, **exports})
    for out in outputs.values():
        if out is not None:
            check_output_file(out)  # before the benchmark, not after it
    if args.model is not None and args.model.suffix.lower() == ".onnx":
        from ..export import check_verified, read_onnx_metadata

        check_verified(read_onnx_metadata(args.model), args.model, args.allow_unverified)
    sliding = args.scenario == "sliding-window"
    side = args.stream[2]
    for h, w in [*(args.sizes or []), (side, side)]:  # inputs are allocated: the usual limit
        check_megapixels(h, w, args.max_megapixels, "a --sizes/--stream input")
    cfg = BenchConfig(
        sizes=args.sizes or size_list(SLIDING_SIZES if sliding else DEFAULT_SIZES),
        batch=args.batch,
        warmup=args.warmup,
        iters=args.iters,
        min_time=args.min_time,
        e2e_iters=args.e2e_iters,
        seed=args.seed,
    )
    doc = run_benchmark(
        args.scenario,
        model=None if args.model is None else str(args.model),
        variant=args.variant,
        width=args.width,
        num_classes=args.num_classes,
        backends=args.backends,
        config=cfg,
        device=args.device,
        threads=args.threads,
        stream=args.stream,
        cache_dir=args.cache_dir,
        matmul_size=args.matmul_size,
        calibration=args.calibration,
        onnx=args.onnx,
        allow_unverified=args.allow_unverified,
        peak_seconds=args.peak_seconds,
        command=shlex.join(["fcn-bench", *(argv if argv is not None else sys.argv[1:])]),
    )
    problems = validate(doc)
    if problems:  # a bug here, not bad input: say so loudly but still save what was measured
        say("warning: result does not match its schema: " + "; ".join(problems[:5]), err=True)
    say(*format_console(doc).splitlines())
    if args.json:
        write_json(doc, args.json)
    if args.markdown:
        write_markdown(doc, args.markdown)
    if args.plot:
        write_plot(doc, args.plot)
    failed = [s for s in doc["skipped"] if s["status"] == "failed"]
    return EXIT_FAILED if failed or problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, build_parser())


if __name__ == "__main__":
    sys.exit(main())
