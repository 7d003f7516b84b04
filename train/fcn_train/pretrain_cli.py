"""``fcn-pretrain``: a thin shell over `fcn_train.pretrain.pretrain`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from fcn_deploy._io import check_output_file
from fcn_deploy.cli._common import (
    OneLineParser,
    add_verbosity,
    non_negative_int,
    parse_args,
    positive_float,
    positive_int,
    refuse_overwrites,
    run_cli,
    say,
)

from .evaluate import write_results
from .pretrain import PretrainConfig, pretrain

__all__ = ["pretrain_main", "pretrain_parser"]

EPILOG = """\
the task: 224x224 windows of the synthetic train scenes, each labelled by the class at its centre
(background or one of the six shapes); outside the scene the window holds the mean colour.
Accuracy is top-1 on windows of the synthetic val scenes.

the output is a bare state dict in torchvision's VGG16 layout (features.N, classifier.0/3/6):
  fcn-pretrain --width 0.125 --iterations 400 --out vgg16-synthetic.pth
  fcn-train --data synthetic --variant fcn32s --init vgg16:vgg16-synthetic.pth --out r32
"""


def pretrain_parser() -> argparse.ArgumentParser:
    d = PretrainConfig()
    p = OneLineParser(
        prog="fcn-pretrain",
        description="Train a VGG16-layout classifier on the synthetic scenes (FCN's step one).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default=d.out, help=f"weights file to write (default {d.out})")
    p.add_argument(
        "--width",
        type=positive_float,
        default=d.width,
        help=f"channel multiplier (default {d.width:g})",
    )
    p.add_argument(
        "--iterations",
        type=positive_int,
        default=d.iterations,
        help=f"Adam steps (default {d.iterations})",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=d.batch_size,
        help=f"windows per step (default {d.batch_size})",
    )
    p.add_argument(
        "--lr", type=positive_float, default=d.lr, help=f"Adam learning rate (default {d.lr:g})"
    )
    p.add_argument(
        "--seed",
        type=non_negative_int,
        default=d.seed,
        help=f"init and window draws (default {d.seed})",
    )
    p.add_argument(
        "--margin",
        type=non_negative_int,
        default=d.margin,
        metavar="PX",
        help=f"window centres at least PX from an outline (default {d.margin})",
    )
    p.add_argument(
        "--val-images",
        type=positive_int,
        default=d.val_images,
        metavar="N",
        help=f"val scenes to score (default {d.val_images})",
    )
    p.add_argument(
        "--time-limit",
        type=positive_float,
        metavar="SECONDS",
        help="stop training after this long, then save",
    )
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when present)")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the result as JSON")
    add_verbosity(p)
    return p


def _pretrain(argv: Sequence[str] | None) -> int:
    args = vars(parse_args(pretrain_parser(), argv))
    json_path = args.pop("json")
    del args["verbose"], args["quiet"]
    config = PretrainConfig(**args)
    config.validate()  # bad values and outputs refused before the training
    refuse_overwrites({"--out": config.out, "--json": json_path})
    if json_path is not None:
        check_output_file(json_path)
    result = pretrain(config)
    if json_path is not None:
        write_results(str(json_path), result.to_dict())
    say(json.dumps({"accuracy": result.accuracy, **result.per_class_accuracy}))
    say(
        f"done: {result.path} ({result.iterations} iterations, {result.seconds:.0f} s); "
        f"val accuracy {100 * result.accuracy:.1f}% on {result.val_windows} windows",
        err=True,
    )
    return 0


def pretrain_main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_pretrain, argv, pretrain_parser())
