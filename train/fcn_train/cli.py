"""``fcn-train`` and ``fcn-eval``: thin shells over `fcn_train.train` and `fcn_train.evaluate`."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fcn_deploy._io import (
    check_output_dir,
    check_output_file,
    missing_folders,
    remove_empty_folders,
)
from fcn_deploy.cli._common import (
    OneLineParser,
    add_allow_unverified,
    add_model_argument,
    add_verbosity,
    non_negative_int,
    parse_args,
    positive_int,
    refuse_overwrites,
    run_cli,
    say,
)
from fcn_deploy.cli.predict import add_max_megapixels
from fcn_deploy.errors import FCNError

from .checkpointing import BEST, LAST, load_training_state, resolve_resume_path
from .config import RESUMABLE_CHANGES, TrainConfig
from .datasets import DATASETS, open_dataset
from .evaluate import evaluate, scores_table, write_results
from .initialize import FCN_CLASSES
from .loop import CSV_NAME, PLOT_NAME, train
from .recipe import RECIPES

__all__ = ["eval_main", "eval_parser", "train_main", "train_parser"]

TRAIN_EPILOG = """\
recipes (--recipe):
  reference  the FCN release: SGD momentum 0.99, weight decay 5e-4 (weights), biases 2x lr, summed
             per-pixel loss, one native-size image per step, lr 1e-10/1e-12/1e-14 for
             fcn32s/16s/8s, 1e-10 at-once. For VGG16-initialized nets. Default for voc and sbd.
  paper      the paper's text: minibatch 20 (padded), momentum 0.9, lr 1e-4 (100x lower per later
             stage), mean per-pixel loss (the paper does not say; lr 1e-4 implies it).
  synthetic  NOT from the paper: Adam lr 1e-3, mean loss, 4 native-size images per step (padded),
             no weight decay. Nets from scratch on the synthetic scenes converge in minutes with it;
             the SGD
             recipes' tiny rates assume pretrained VGG16 features. Default for --data synthetic.

staged training (the paper's FCN-8s):
  fcn-train --data sbd --root SBD --val-root VOC2011 --variant fcn32s --init
  vgg16:vgg16-397923af.pth --out r32
  fcn-train ... --variant fcn16s --init checkpoint:r32/best.pt --out r16
  fcn-train ... --variant fcn8s  --init checkpoint:r16/best.pt --out r8

outputs in --out: last.pt (every --checkpoint-every iterations, at the end and on Ctrl-C/SIGTERM;
resume with --resume DIR), best.pt (best validation mean IU), log.csv, curves.png.
multi-GPU / multi-node: torchrun --nproc_per_node N $(which fcn-train) ... (--batch-size is per
process).
"""


def train_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = OneLineParser(
        prog="fcn-train",
        description="Train an FCN (Long, Shelhamer, Darrell).",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # every default is None here so that --resume can tell what was given; TrainConfig has the
    # defaults
    p.add_argument("--data", choices=DATASETS, help=f"dataset (default {d.data})")
    p.add_argument("--root", help="VOCdevkit (voc) or benchmark_RELEASE (sbd)")
    p.add_argument(
        "--val-root",
        help="with --data sbd: VOCdevkit/VOC2011, to validate on seg11valid (else SBD val)",
    )
    p.add_argument("--variant", choices=tuple(FCN_CLASSES), help=f"net (default {d.variant})")
    p.add_argument(
        "--width", type=float, help=f"channel multiplier for --init scratch (default {d.width:g})"
    )
    p.add_argument(
        "--init",
        help="vgg16:PATH (torchvision .pth or Caffe VGG_ILSVRC_16_layers.caffemodel) | "
        "checkpoint:PATH (previous stage; also an FCN .caffemodel) | scratch (default)",
    )
    p.add_argument(
        "--train",
        choices=("all", "last-layer"),
        help="all layers (default) or only the score layers (FCN-32s-fixed)",
    )
    p.add_argument(
        "--recipe",
        choices=tuple(RECIPES),
        help="see below (default: synthetic for synthetic data, else reference)",
    )
    p.add_argument("--lr", type=float, help="override the recipe's learning rate")
    p.add_argument(
        "--batch-size", type=int, help="override the recipe's images per step (per process)"
    )
    p.add_argument("--momentum", type=float, help="override the recipe's momentum (Adam: beta1)")
    p.add_argument(
        "--crop",
        type=int,
        metavar="PX",
        help="train on random PX x PX crops (default: the recipe's)",
    )
    p.add_argument("--iterations", type=int, help=f"optimizer steps (default {d.iterations})")
    p.add_argument(
        "--time-limit",
        type=float,
        metavar="SECONDS",
        help="stop cleanly (checkpoint, validation) after this much training",
    )
    p.add_argument(
        "--seed", type=int, help=f"seeds init, data order, crops, dropout (default {d.seed})"
    )
    p.add_argument(
        "--out",
        help=f"output folder (default {d.out}); one that already holds files is refused "
        "unless --resume or --overwrite",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in a --out that holds an earlier run, replacing its "
        f"{LAST}, {BEST}, {CSV_NAME} and {PLOT_NAME}",
    )
    p.add_argument(
        "--resume",
        metavar="DIR_OR_PT",
        help="continue a run exactly from DIR/last.pt (its settings are reused)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="N",
        help=f"write last.pt every N iterations (default {d.checkpoint_every})",
    )
    p.add_argument(
        "--val-every",
        type=int,
        metavar="N",
        help=f"validate every N iterations (default {d.val_every})",
    )
    p.add_argument(
        "--log-every",
        type=int,
        metavar="N",
        help=f"log the mean loss every N iterations (default {d.log_every})",
    )
    p.add_argument(
        "--val-images", type=int, metavar="N", help="validate on the first N images only"
    )
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when present)")
    p.add_argument(
        "--workers", type=int, help="DataLoader processes building batches ahead (default 0)"
    )
    p.add_argument(
        "--no-amp", dest="amp", action="store_const", const=False, help="train in FP32 on GPUs too"
    )
    add_verbosity(p)
    return p


def _config(args: argparse.Namespace) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The run's settings, and with ``--resume`` the training state (the file is read once)."""
    run_settings = (k for k in vars(args) if k not in ("resume", "overwrite", "verbose", "quiet"))
    given = {k: getattr(args, k) for k in run_settings if getattr(args, k) is not None}
    if args.resume is None:
        return TrainConfig(**given), None
    path = resolve_resume_path(args.resume)
    saved = load_training_state(path)
    stored = TrainConfig.from_dict(saved["config"])
    changed = sorted(
        k for k, v in given.items() if k not in RESUMABLE_CHANGES and v != getattr(stored, k)
    )
    if changed:
        flag = "--" + changed[0].replace("_", "-")
        raise FCNError(
            f"{flag} cannot change on --resume (the run was started with "
            f"{getattr(stored, changed[0])!r}); only "
            f"{', '.join('--' + c.replace('_', '-') for c in sorted(RESUMABLE_CHANGES))} may"
        )
    return dataclasses.replace(stored, **{"out": str(path.parent), **given}), saved


def _check_out(out: Path, resuming: bool, overwrite: bool) -> None:
    """Refuse an --out that would lose an earlier run; with --overwrite, remove that run's files."""
    check_output_dir(out)
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not held or resuming:
        return
    if not overwrite:
        shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        raise FCNError(
            f"--out {out} is not empty ({shown}); continue that run with --resume {out}, "
            "replace it with --overwrite, or choose another --out"
        )
    for name in (LAST, BEST, CSV_NAME, PLOT_NAME):  # only the run's own files, nothing else
        (out / name).unlink(missing_ok=True)


def _train(argv: Sequence[str] | None) -> int:
    args = parse_args(train_parser(), argv)
    config, resume = _config(args)
    out = Path(config.out)
    source = config.init.partition(":")[2]
    for name in (LAST, BEST, CSV_NAME, PLOT_NAME):  # --overwrite would delete the weights it reads
        refuse_overwrites({"--out": out / name}, {"--init": source or None})
    _check_out(out, resume is not None, args.overwrite)
    created = missing_folders(out)
    try:
        result = train(config, resume)
    except BaseException:
        remove_empty_folders(created)  # a start that failed leaves no empty run folder behind
        raise
    where = f"{result.last}" + (
        f", best: {result.best} (mean IU {result.best_mean_iu:.4f})" if result.best else ""
    )
    if result.stopped in ("SIGINT", "SIGTERM"):
        say(
            f"stopped by {result.stopped} at iteration {result.iteration}; saved {where}; "
            f"continue with: fcn-train --resume {result.last.parent}",
            err=True,
        )
        return 130 if result.stopped == "SIGINT" else 143
    note = f" (time limit reached at iteration {result.iteration})" if result.stopped else ""
    say(
        f"done{note}: {where}; final mean IU {result.scores.get('mean_iu', float('nan')):.4f}",
        err=True,
    )
    return 0


def train_main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_train, argv, train_parser())


def eval_parser() -> argparse.ArgumentParser:
    from fcn_deploy.runtime import BACKENDS

    p = OneLineParser(
        prog="fcn-eval",
        description="Score a model (.pt, .caffemodel, .onnx, .engine) on a dataset: "
        "pixel accuracy, mean accuracy, mean IU, frequency weighted IU, per-class IU.",
    )
    add_model_argument(p, "checkpoint, Caffe .caffemodel, ONNX export or TensorRT engine")
    p.add_argument(
        "--data", choices=DATASETS, default="synthetic", help="dataset (default synthetic)"
    )
    p.add_argument("--root", help="VOCdevkit (voc) or benchmark_RELEASE (sbd)")
    p.add_argument("--sbd-root", help="with --split seg11valid: benchmark_RELEASE")
    p.add_argument(
        "--split",
        default="val",
        help="val (default), train, trainval, or seg11valid (voc + --sbd-root)",
    )
    p.add_argument(
        "--num-images",
        type=positive_int,
        metavar="N",
        help="score the first N images only (synthetic: how many to draw)",
    )
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    p.add_argument(
        "--trimap",
        type=non_negative_int,
        metavar="PX",
        help="also score only the pixels within PX of object boundaries (trimap band)",
    )
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when present)")
    p.add_argument(
        "--backend", choices=BACKENDS, help="override the backend the model file's suffix implies"
    )
    p.add_argument(
        "--tile",
        action="store_true",
        help="run images larger than the model accepts in overlapping tiles",
    )
    add_allow_unverified(p)
    add_verbosity(p)
    add_max_megapixels(p)
    return p


def _eval(argv: Sequence[str] | None) -> int:
    from fcn_deploy.api import Segmenter

    args = parse_args(eval_parser(), argv)
    if args.model is None:
        raise FCNError("no model: fcn-eval MODEL [options]")
    refuse_overwrites({"--json": args.json}, {"--model": args.model})
    if args.json is not None:
        check_output_file(args.json)  # before the scoring, not after it
    dataset = open_dataset(args.data, args.split, args.root, args.sbd_root, args.num_images)
    dataset.max_megapixels = args.max_megapixels
    with Segmenter.load(
        args.model,
        device=args.device,
        backend=args.backend,
        tile=args.tile,
        max_megapixels=args.max_megapixels,
        allow_unverified=args.allow_unverified,
    ) as seg:
        info = seg.info
        if info.num_classes != dataset.num_classes:  # more would be scored as the next class
            raise FCNError(
                f"{args.model} predicts {info.num_classes} classes but {dataset.name} has "
                f"{dataset.num_classes}; was it trained on another dataset?"
            )
        results: dict[str, Any] = evaluate(
            seg.predict, dataset, dataset.num_classes, dataset.class_names, trimap=args.trimap
        )
        backend = seg.runner.backend
    results = {
        "model": str(args.model),
        "backend": backend,
        "variant": info.variant,
        "data": dataset.name,
        **results,
    }
    say(
        f"{args.model} ({info.variant}, {backend}) on {dataset.name}, {results['num_images']} "
        "images",
        "",
        *scores_table(results).splitlines(),
    )
    if args.json is not None:
        write_results(str(args.json), results)
    return 0


def eval_main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_eval, argv, eval_parser())
