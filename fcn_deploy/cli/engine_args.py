"""The ``--engine`` options of ``fcn-export``: build a TensorRT engine right after the export.

Kept apart from the export CLI so the engine layer owns its flags; ``fcn-export`` calls
`add_engine_arguments` while building its parser and `build_engine_from_args` when ``--engine``
is given. Everything here maps one-to-one onto `fcn_deploy.build_engine` keywords.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import FCNError
from ._common import EXIT_FAILED, fraction, positive_float, say

__all__ = ["add_engine_arguments", "build_engine_from_args", "check_engine_arguments"]


def _share(text: str) -> float:
    """A share of pixels in (0, 1]."""
    value = fraction(text)
    if value == 0.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the TensorRT engine options (a group of their own in ``--help``)."""
    g = parser.add_argument_group(
        "TensorRT engine (needs TensorRT 10.12+ and an NVIDIA GPU)",
        "Build a dynamic-shape engine from the exported ONNX file, check it against ONNX Runtime "
        "and write it with a JSON sidecar (ENGINE.json). Repeat --min/--opt/--max-shape once per "
        "optimization profile (e.g. one landscape, one portrait); default: profiles derived from "
        "the export's size bounds.",
    )
    g.add_argument(
        "--engine",
        type=Path,
        metavar="PATH",
        help="write a TensorRT engine here (e.g. model.engine)",
    )
    g.add_argument(
        "--min-shape",
        action="append",
        default=[],
        metavar="NxCxHxW",
        help="smallest input of a profile, e.g. 1x3x64x64 (repeatable)",
    )
    g.add_argument(
        "--opt-shape",
        action="append",
        default=[],
        metavar="NxCxHxW",
        help="shape the profile is tuned for, e.g. 1x3x512x512 "
        "(repeatable; default: the shape within the profile nearest 1x3x512x512)",
    )
    g.add_argument(
        "--max-shape",
        action="append",
        default=[],
        metavar="NxCxHxW",
        help="largest input of a profile, e.g. 4x3x1024x1024 (repeatable)",
    )
    g.add_argument(
        "--workspace",
        type=positive_float,
        default=4.0,
        metavar="GIB",
        help="builder workspace limit in GiB (default 4)",
    )
    g.add_argument(
        "--opt-level",
        type=int,
        default=3,
        choices=range(6),
        metavar="0-5",
        help="builder optimization level: higher builds slower and may run faster (default 3)",
    )
    g.add_argument(
        "--timing-cache",
        type=Path,
        metavar="PATH",
        help="load and save the builder timing cache here: "
        "rebuilds on the same GPU get much faster",
    )
    g.add_argument(
        "--engine-precision",
        choices=("fp16", "fp32", "int8"),
        help="fp16, fp32 or int8 engine (default: the precision of the ONNX graph; fp16/int8 need "
        "an fp16/int8 export on TensorRT 10.12+)",
    )
    g.add_argument(
        "--gate-threshold",
        type=_share,
        default=0.99,
        metavar="AGREEMENT",
        help="least share of pixels whose label must match ONNX Runtime "
        "at every checked size (default 0.99)",
    )
    g.add_argument(
        "--no-gate",
        action="store_true",
        help="skip the accuracy check against ONNX Runtime (not recommended)",
    )


def check_engine_arguments(args: argparse.Namespace) -> None:
    """Everything about the engine options that can be refused before the export runs."""
    from .._io import check_output_file
    from ..engine import ENGINE_SUFFIXES

    check_output_file(args.engine, ENGINE_SUFFIXES)
    _profiles(args)
    if getattr(args, "precision", None) == "int8":  # fcn-export of a checkpoint to INT8
        if args.int8_target == "cpu":
            raise FCNError(
                "--int8-target cpu makes UINT8 activations with non-zero zero points, which "
                "TensorRT cannot parse: drop it (with --engine the target is tensorrt)",
                param="int8_target",
            )
        args.int8_target = "tensorrt"


def _profiles(args: argparse.Namespace) -> list | None:
    from ..engine import profiles_from_strings

    if args.min_shape or args.max_shape or args.opt_shape:
        return list(profiles_from_strings(args.min_shape, args.opt_shape, args.max_shape))
    return None


def build_engine_from_args(args: argparse.Namespace, onnx_path: Path) -> int:
    """Build ``args.engine`` from ``onnx_path`` with the parsed options; returns the exit code."""
    from ..engine import EngineGateError, build_engine

    if args.engine is None:
        raise FCNError("build_engine_from_args needs --engine PATH")
    profiles = _profiles(args)
    try:
        report = build_engine(
            onnx_path,
            args.engine,
            profiles=profiles,
            precision=args.engine_precision,
            workspace_gib=args.workspace,
            opt_level=args.opt_level,
            timing_cache=args.timing_cache,
            gate=not args.no_gate,
            gate_threshold=args.gate_threshold,
            allow_unverified=args.allow_unverified,
        )
    except EngineGateError as e:
        say(e.report.summary(), f"failed: {e}")
        return EXIT_FAILED
    say(report.summary())
    return 0
