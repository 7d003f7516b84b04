"""``fcn-export``: a checkpoint → a verified dynamic-shape ONNX file (and optionally an engine)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from .._io import check_output_dir, check_output_file
from ..caffemodel import is_caffe_file
from ..checkpoint import load_model
from ..errors import FCNError
from ..export.quantize import (
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION_IMAGES,
    DEFAULT_HELD_OUT_IMAGES,
    INT8_TARGETS,
)
from ..export.verify import INT8_LABEL_AGREEMENT
from ..meta import IO_MODES, VARIANTS
from ..models import Net
from ._common import (
    EXIT_FAILED,
    OneLineParser,
    add_allow_unverified,
    add_verbosity,
    fraction,
    non_negative_float,
    non_negative_int,
    parse_args,
    positive_int,
    refuse_overwrites,
    run_cli,
    say,
    size_hw,
)
from .engine_args import add_engine_arguments, build_engine_from_args, check_engine_arguments
from .predict import add_classes, add_max_megapixels

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="fcn-export",
        description="Export an FCN checkpoint to a dynamic-shape ONNX file, checked against "
        "PyTorch under ONNX Runtime at input sizes drawn fresh each run. SOURCE may also be an "
        ".onnx file: then the export is skipped and --engine builds a TensorRT engine from it.",
    )
    p.add_argument(
        "source",
        type=Path,
        metavar="SOURCE",
        help="fcn-deploy checkpoint, PyTorch-port state dict, torchvision VGG16 .pth, Caffe "
        ".caffemodel (the FCN authors' release), or an .onnx file",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="ONNX",
        help="where to write the ONNX file; the name must end in .onnx (e.g. model.onnx)",
    )
    p.add_argument(
        "--variant",
        choices=VARIANTS,
        help="the net a bare state dict holds (default: from its keys)",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        default="fp32",
        help="fp16: the graph computes in half precision, with FP32 I/O unless --fp16-io; "
        "int8: Q/DQ around the convolutions, calibrated on --calibration images (default fp32)",
    )
    q = p.add_argument_group("INT8 (with --precision int8)")
    q.add_argument(
        "--calibration",
        default="synthetic",
        metavar="SOURCE",
        help="calibration images: synthetic (built-in scenes), voc:ROOT, sbd:ROOT (train split; "
        "scored on val), or a folder/glob of images (default synthetic)",
    )
    q.add_argument(
        "--calibration-images",
        type=positive_int,
        default=DEFAULT_CALIBRATION_IMAGES,
        metavar="N",
        help=f"how many images to calibrate on (default {DEFAULT_CALIBRATION_IMAGES})",
    )
    q.add_argument(
        "--held-out-images",
        type=positive_int,
        default=DEFAULT_HELD_OUT_IMAGES,
        metavar="N",
        help="how many images the INT8 model is scored on against FP32, none of them calibration "
        f"images (default {DEFAULT_HELD_OUT_IMAGES})",
    )
    q.add_argument(
        "--calibration-method",
        choices=CALIBRATION_METHODS,
        default="minmax",
        help="how activation ranges are chosen from the calibration images (default minmax)",
    )
    q.add_argument(
        "--int8-target",
        choices=INT8_TARGETS,
        help="cpu: uint8 activations (ONNX Runtime, OpenVINO; fastest and most accurate on x86); "
        "tensorrt: int8 activations with zero point 0, the only form TensorRT takes (default "
        "cpu, or tensorrt with --engine)",
    )
    q.add_argument(
        "--min-label-agreement",
        type=fraction,
        default=INT8_LABEL_AGREEMENT,
        metavar="F",
        help="fail when INT8 labels agree with FP32 on fewer than this share of pixels "
        f"(default {INT8_LABEL_AGREEMENT:g})",
    )
    q.add_argument(
        "--max-iu-drop",
        type=non_negative_float,
        default=1.0,
        metavar="POINTS",
        help="fail when INT8 loses more mean IU than this against FP32 (labelled sources; "
        "default 1.0)",
    )
    p.add_argument(
        "--fp16-io",
        action="store_true",
        help="with --precision fp16 --io tensor: float16 input and output",
    )
    p.add_argument(
        "--io",
        choices=IO_MODES,
        default="tensor",
        help="tensor: float N×3×H×W preprocessed → float logits; image: uint8 N×H×W×3 BGR → uint8 "
        "labels N×H×W, preprocessing and argmax in the graph (default tensor)",
    )
    p.add_argument(
        "--max-size",
        type=size_hw,
        default=(4096, 4096),
        metavar="HxW",
        help="largest input height×width (default 4096x4096)",
    )
    p.add_argument(
        "--max-batch", type=positive_int, default=32, metavar="N", help="largest batch (default 32)"
    )
    p.add_argument(
        "--opset", type=int, default=20, metavar="N", help="ONNX opset, 18..23 (default 20)"
    )
    p.add_argument(
        "--no-verify", action="store_true", help="skip the ONNX Runtime vs PyTorch check"
    )
    p.add_argument(
        "--seed",
        type=non_negative_int,
        metavar="N",
        help="seed for the verification sizes and inputs (default: random, printed)",
    )
    add_engine_arguments(p)
    t = p.add_argument_group(
        "Triton model repository",
        "Write DIR/NAME/config.pbtxt and DIR/NAME/1/model.onnx (or model.plan with --engine) for "
        "the official Triton Inference Server containers. SOURCE may be an .onnx file.",
    )
    t.add_argument("--triton-repo", type=Path, metavar="DIR", help="model repository folder")
    t.add_argument("--triton-name", default="fcn", metavar="NAME", help="model name (default fcn)")
    t.add_argument("--triton-instances", type=positive_int, default=1, metavar="N",
                   help="instances of the model (default 1)")  # fmt: skip
    t.add_argument("--triton-kind", choices=("gpu", "cpu"),
                   help="where the instances run (default: gpu for an engine, with "
                   "--triton-trt-fp16 or where this machine has a CUDA GPU; else cpu)")  # fmt: skip
    t.add_argument("--triton-queue-delay", type=non_negative_int, default=100, metavar="US",
                   help="dynamic batcher's queue delay in microseconds (default 100)")  # fmt: skip
    t.add_argument("--triton-trt-fp16", action="store_true",
                   help="ONNX only: Triton's TensorRT accelerator in FP16")  # fmt: skip
    add_classes(p)
    add_allow_unverified(p)
    add_verbosity(p)
    add_max_megapixels(p)
    return p


def _default_kind(args: argparse.Namespace) -> str:
    """gpu for a TensorRT plan, for Triton's TensorRT accelerator or where this machine has a CUDA
    GPU; else cpu."""
    import torch

    gpu = args.engine is not None or args.triton_trt_fp16 or torch.cuda.is_available()
    return "gpu" if gpu else "cpu"


def _write_triton_repo(args: argparse.Namespace, model: Path) -> None:
    """``--triton-repo``: the repository for the ONNX file, or for the engine just built."""
    from ..export.triton_repo import write_triton_repo

    metadata = max_batch = None
    profiles = 1
    if args.engine is not None:
        from ..engine import read_sidecar

        sidecar = read_sidecar(args.engine)
        model, metadata = args.engine, sidecar.onnx
        max_batch = max(profile.max[0] for profile in sidecar.profiles)
        profiles = len(sidecar.profiles)
    report = write_triton_repo(
        args.triton_repo, model, name=args.triton_name, metadata=metadata, max_batch=max_batch,
        instances=args.triton_instances, kind=args.triton_kind or _default_kind(args),
        queue_delay_us=args.triton_queue_delay, tensorrt_fp16=args.triton_trt_fp16,
        profiles=profiles,
    )  # fmt: skip
    say(report.summary())


def _main(argv: Sequence[str] | None) -> int:
    args = parse_args(build_parser(), argv)
    refuse_overwrites({"-o": args.output, "--engine": args.engine}, {"SOURCE": args.source})
    if args.engine is not None:  # before the export: a bad engine option must not waste it
        check_engine_arguments(args)
    if args.triton_repo is not None:  # likewise the repository folder and the model's name
        check_output_dir(args.triton_repo)
        from ..export.triton_repo import MODEL_NAME

        if not MODEL_NAME.match(args.triton_name):
            raise FCNError(
                f"--triton-name {args.triton_name!r}: use letters, digits, '.', '_' and '-' only"
            )
    if args.source.suffix.lower() == ".onnx" and not is_caffe_file(args.source):
        if args.engine is None and args.triton_repo is None:
            raise FCNError(
                f"{args.source} is already ONNX: nothing to export (pass --engine PATH to build an "
                "engine from it)"
            )
        if args.classes is not None:
            raise FCNError(
                f"--classes names the classes of a model being exported; {args.source} is already "
                "ONNX and keeps the names it was exported with"
            )
        from ..export import check_verified, read_onnx_metadata

        # a clear error now for a foreign or damaged file, or one whose export failed
        check_verified(read_onnx_metadata(args.source), args.source, args.allow_unverified)
        code = build_engine_from_args(args, args.source) if args.engine is not None else 0
        if code == 0 and args.triton_repo is not None:
            _write_triton_repo(args, args.source)
        return code
    if args.output is None:
        raise FCNError("no output: pass -o model.onnx")
    check_output_file(args.output, (".onnx",))  # before loading the checkpoint
    from ..export import export_onnx

    source: Path | Net = args.source
    if args.classes is not None:  # the names and colours travel in the ONNX file's metadata
        source = load_model(args.source, variant=args.variant)
        source.info = source.info.with_classes(args.classes)
    report = export_onnx(
        source,
        args.output,
        variant=args.variant,
        precision=args.precision,
        io=args.io,
        fp16_io=args.fp16_io,
        max_size=args.max_size,
        max_batch=args.max_batch,
        opset=args.opset,
        verify=not args.no_verify,
        seed=args.seed,
        calibration=args.calibration,
        calibration_images=args.calibration_images,
        held_out_images=args.held_out_images,
        calibration_method=args.calibration_method,
        int8_target=args.int8_target or "cpu",
        min_label_agreement=args.min_label_agreement,
        max_iu_drop=args.max_iu_drop,
        max_megapixels=args.max_megapixels,
    )
    m, g = report.metadata, report.graph
    fp16 = f", {g.fp16_convs}/{g.convs} convs in FP16" if m.precision == "fp16" else ""
    say(
        f"{report.path}: {m.info.variant} {m.precision} {m.io} I/O, {report.file_size / 2**20:.1f} "
        f"MiB, exported in {report.export_seconds:.1f}s; {g.nodes} nodes{fp16}"
    )
    if report.fp32_layers and m.precision == "fp16":
        say(f"kept in FP32 (activations near FP16's range): {', '.join(report.fp32_layers)}")
    if not report.rows:
        say("verification skipped (--no-verify): the file says 'not verified'")
    else:
        say(f"ONNX Runtime vs PyTorch FP32 (seed {report.seed}):", *report.table().splitlines())
        if report.int8 is not None:
            c = m.calibration or {}
            kept = ", ".join(c.get("fp32_layers", [])) or "none"
            say(
                f"INT8 vs FP32 ({c.get('method')} ranges from {c.get('images')} "
                f"{c.get('source')} image(s); kept in FP32: {kept}; the logits' upsampling always "
                "is):"
            )
            say(*report.int8.table().splitlines())
        if report.fp16_label_agreement is not None:
            say(
                f"FP16 vs FP32: worst label agreement {report.fp16_label_agreement:.4%}, largest "
                f"activation {report.activation_peak:.4g} (FP16 max 65504)"
            )
        if not report.passed:
            say(
                f"verification FAILED: {report.path} is kept for inspection, its failure recorded "
                "inside (fcn-predict, fcn-serve, fcn-bench and Segmenter.load refuse it without "
                "--allow-unverified)"
            )
            return EXIT_FAILED
    code = build_engine_from_args(args, report.path) if args.engine is not None else 0
    if code == 0 and args.triton_repo is not None:
        _write_triton_repo(args, report.path)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: ``fcn-export SOURCE -o model.onnx [options]``."""
    return run_cli(_main, argv, build_parser())
