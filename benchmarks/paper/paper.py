"""The paper's experiments in miniature, on the built-in synthetic scenes, through the public CLIs.

    python benchmarks/paper/paper.py [--out DIR] [--seeds 0,1] [--iterations N] ...
    bash benchmarks/paper/run.sh          # the committed run (same thing, default settings)

Steps (each skipped when its output exists, so an interrupted run continues where it stopped):

1. ``fcn-pretrain``: a width-W VGG16 classifier (torchvision layout) on windows of the scenes.
2. convolutionalization: ``convolutionalize(read_state_dict(path))`` turns that file into a conv
   net; one pass over a whole (padded) val scene against the FC classifier on every 224×224
   window at stride 32.
3. ``fcn-train`` + ``fcn-eval --trimap PX`` for every row and seed: FCN-32s-fixed
   (``--train last-layer``), FCN-32s, FCN-32s from scratch, FCN-32s for a second budget (the
   control for the staged rows), FCN-16s from FCN-32s, FCN-8s from FCN-16s, FCN-8s at-once.
4. ``results.json``, ``table.md`` (mean and spread over seeds, the claims checked) and
   ``figure4.png`` (image | FCN-32s | FCN-16s | FCN-8s | ground truth).

The CLIs run in this process (their ``main(argv)``), which saves a Python start-up per step; the
log shows each as the shell command it equals.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fcn_deploy.api import Segmenter
from fcn_deploy.bench.sliding_window import STRIDE, WINDOW, dense_vs_windows
from fcn_deploy.checkpoint import read_state_dict
from fcn_deploy.cli._common import OneLineParser, non_negative_int, positive_float, positive_int
from fcn_deploy.data import SyntheticSegmentation
from fcn_deploy.meta import ModelInfo, Preprocessing
from fcn_deploy.metrics import IGNORE_LABEL
from fcn_deploy.models import FCVGG16, convolutionalize
from fcn_train.cli import eval_main, train_main
from fcn_train.evaluate import write_results
from fcn_train.pretrain_cli import pretrain_main

CLIS: dict[str, Callable[[Sequence[str] | None], int]] = {
    "fcn-pretrain": pretrain_main,
    "fcn-train": train_main,
    "fcn-eval": eval_main,
}
METRICS = ("pixel_accuracy", "mean_accuracy", "mean_iu", "frequency_weighted_iu")


@dataclass(frozen=True)
class Row:
    key: str
    name: str
    variant: str
    init: str  # "vgg16", "scratch" or the key of the row whose last.pt starts this one
    train: str = "all"


ROWS = (
    Row("fcn32s-fixed", "FCN-32s-fixed", "fcn32s", "vgg16", "last-layer"),
    Row("fcn32s", "FCN-32s", "fcn32s", "vgg16"),
    Row("fcn32s-scratch", "FCN-32s from scratch", "fcn32s", "scratch"),
    Row("fcn32s-2x", "FCN-32s, 2nd budget", "fcn32s", "fcn32s"),
    Row("fcn16s", "FCN-16s from FCN-32s", "fcn16s", "fcn32s"),
    Row("fcn8s", "FCN-8s from FCN-16s", "fcn8s", "fcn16s"),
    Row("fcn8s-atonce", "FCN-8s at-once", "fcn8s-atonce", "vgg16"),
)
BUDGETS = {"fcn32s-2x": 2, "fcn16s": 2, "fcn8s": 3}  # budgets behind a row (staged: cumulative)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = OneLineParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--out", type=Path, default=Path("benchmarks/paper/run"), help="work folder (checkpoints)"
    )
    p.add_argument("--seeds", default="0,1", help="fine-tuning seeds (default 0,1)")
    p.add_argument(
        "--width", type=positive_float, default=0.125, help="channel multiplier (default 0.125)"
    )
    p.add_argument("--iterations", type=positive_int, default=200, help="fcn-train steps per row")
    p.add_argument(
        "--pretrain-iterations", type=positive_int, default=250, help="fcn-pretrain steps"
    )
    p.add_argument(
        "--pretrain-batch", type=positive_int, default=16, help="fcn-pretrain windows per step"
    )
    p.add_argument(
        "--pretrain-val-images",
        type=positive_int,
        default=100,
        help="val scenes scoring the classifier",
    )
    p.add_argument(
        "--val-images", type=positive_int, default=200, help="synthetic val scenes scored"
    )
    p.add_argument(
        "--trimap", type=non_negative_int, default=4, metavar="PX", help="boundary band (default 4)"
    )
    p.add_argument(
        "--figure-scenes", type=positive_int, default=4, help="val scenes in figure4.png"
    )
    p.add_argument("--results", type=Path, help="where results/table/figure go (default --out)")
    return p.parse_args(argv)


class Pipeline:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.results_dir: Path = args.results or args.out
        self.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        self.vgg16 = self.out / "vgg16" / "vgg16-synthetic.pth"
        self.start = time.perf_counter()
        self.steps = 2 + len(ROWS) * len(self.seeds) + 1
        self.done = 0
        self.timings: dict[str, float] = self._read_json(self.out / "timings.json") or {}

    # -- bookkeeping -----------------------------------------------------------------------------

    @staticmethod
    def _read_json(path: Path) -> Any:
        return json.loads(path.read_text()) if path.exists() else None

    def step(self, what: str, skipped: bool) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        state = "done already, skipped" if skipped else "running"
        print(
            f"[paper {self.done}/{self.steps} {elapsed / 60:4.1f} min] {what}: {state}",
            file=sys.stderr,
            flush=True,
        )

    def cli(self, name: str, argv: list[str]) -> None:
        print(f"$ {name} {shlex.join(argv)}", file=sys.stderr, flush=True)
        code = CLIS[name](argv)
        if code != 0:
            raise SystemExit(f"paper: {name} failed with exit code {code}; rerun to continue")

    def timed(self, key: str, work: Callable[[], None]) -> None:
        t = time.perf_counter()
        work()
        # a resumed step adds to the time its interrupted attempt took
        self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t
        write_results(str(self.out / "timings.json"), self.timings)

    # -- the steps -------------------------------------------------------------------------------

    def run(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.pretrain()
        self.convolutionalization()
        for row in ROWS:  # row by row, so a run stopped early still has whole rows
            for seed in self.seeds:
                self.finetune(row, seed)
        self.step("results, table, figure", skipped=False)
        results = self.collect()
        write_results(str(self.results_dir / "results.json"), results)
        (self.results_dir / "table.md").write_text(table_markdown(results))
        self.figure(self.results_dir / "figure4.png")
        total = time.perf_counter() - self.start
        print(f"[paper] finished in {total / 60:.1f} min: {self.results_dir}", file=sys.stderr)

    def pretrain(self) -> None:
        summary = self.vgg16.with_suffix(".json")
        self.step("pretraining the classifier", skipped=summary.exists())
        if summary.exists():
            return
        self.vgg16.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            "--width",
            f"{self.args.width:g}",
            "--iterations",
            str(self.args.pretrain_iterations),
        ]
        argv += ["--batch-size", str(self.args.pretrain_batch), "--out", str(self.vgg16)]
        argv += ["--val-images", str(self.args.pretrain_val_images), "--json", str(summary)]
        self.timed("pretrain", lambda: self.cli("fcn-pretrain", argv))

    def convolutionalization(self) -> None:
        path = self.out / "convolutionalization.json"
        self.step("convolutionalization: one pass vs every window", skipped=path.exists())
        if path.exists():
            return
        fc_net = FCVGG16(num_classes=7, width=self.args.width).eval()
        fc_net.load_state_dict(read_state_dict(self.vgg16))
        # torchvision layout → convolutionalized ConvVGG16, as a user's vgg16-397923af.pth
        conv_net = convolutionalize(read_state_dict(self.vgg16))
        pre = Preprocessing.torchvision()
        image, labels = SyntheticSegmentation("val", 1)[0]
        x = torch.from_numpy(pre.apply(image))
        rows: list[dict[str, Any]] = []
        # one 224×224 window: the two nets compute the same function and must agree
        one = dense_vs_windows(fc_net, conv_net, _canvas(x, WINDOW, WINDOW)[None])
        rows.append(dataclasses.asdict(one))
        # the whole scene, padded with the mean colour (zero) so windows centre on its pixels
        canvas = _canvas(x, *_tiled(labels.shape))[None]
        scene = dense_vs_windows(fc_net, conv_net, canvas, iters=3)
        centres = _centre_accuracy(conv_net, canvas, labels)
        rows.append({**dataclasses.asdict(scene), "dense_accuracy_at_window_centres": centres})
        write_results(
            str(path), {"scene": "synthetic val 0", "shape": list(labels.shape), "rows": rows}
        )

    def run_dir(self, key: str, seed: int) -> Path:
        return self.out / "runs" / f"{key}-seed{seed}"

    def finetune(self, row: Row, seed: int) -> None:
        run, evaluation = (
            self.run_dir(row.key, seed),
            self.out / "evals" / f"{row.key}-seed{seed}.json",
        )
        self.step(f"{row.name}, seed {seed}", skipped=evaluation.exists())
        if evaluation.exists():
            return
        n = self.args.iterations
        if (run / "last.pt").exists():  # interrupted: continue exactly where it stopped
            argv = ["--resume", str(run)]
        else:
            if row.init == "vgg16":
                init = f"vgg16:{self.vgg16}"
            elif row.init == "scratch":
                init = "scratch"
            else:
                init = f"checkpoint:{self.run_dir(row.init, seed) / 'last.pt'}"
            argv = ["--data", "synthetic", "--variant", row.variant, "--init", init]
            argv += ["--train", row.train, "--width", f"{self.args.width:g}", "--seed", str(seed)]
            argv += ["--iterations", str(n), "--out", str(run)]
            argv += ["--val-every", str(n), "--checkpoint-every", str(max(1, n // 4))]
            argv += ["--log-every", str(max(1, n // 10))]
            argv += ["--val-images", str(min(20, self.args.val_images))]
        self.timed(f"train {row.key} seed {seed}", lambda: self.cli("fcn-train", argv))
        evaluation.parent.mkdir(parents=True, exist_ok=True)
        argv = ["--model", str(run / "last.pt"), "--data", "synthetic"]
        argv += ["--num-images", str(self.args.val_images), "--trimap", str(self.args.trimap)]
        argv += ["--json", str(evaluation), "--device", "cpu"]
        self.timed(f"eval {row.key} seed {seed}", lambda: self.cli("fcn-eval", argv))

    # -- results ---------------------------------------------------------------------------------

    def collect(self) -> dict[str, Any]:
        rows = []
        for row in ROWS:
            per_seed = {}
            for seed in self.seeds:
                e = self._read_json(self.out / "evals" / f"{row.key}-seed{seed}.json")
                per_seed[seed] = {
                    **e["scores"],
                    "boundary_mean_iu": e["trimap"]["scores"]["mean_iu"],
                }
            summary = {}
            for metric in (*METRICS, "boundary_mean_iu"):
                values = [per_seed[s][metric] for s in self.seeds]
                summary[metric] = {
                    "mean": float(np.mean(values)),
                    "spread": float(np.max(values) - np.min(values)),
                }
            rows.append(
                {
                    "key": row.key,
                    "name": row.name,
                    "iterations": self.args.iterations * BUDGETS.get(row.key, 1),
                    "train_seconds": [
                        self.timings.get(f"train {row.key} seed {s}") for s in self.seeds
                    ],
                    "seeds": per_seed,
                    **summary,
                }
            )
        return {
            "settings": {
                k: str(v) if isinstance(v, Path) else v for k, v in vars(self.args).items()
            },
            "pretrain": self._read_json(self.vgg16.with_suffix(".json")),
            "convolutionalization": self._read_json(self.out / "convolutionalization.json"),
            "rows": rows,
            "claims": claims([r for r in rows]),
            "timings": self.timings,
        }

    def figure(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        seed = self.seeds[0]
        keys = ("fcn32s", "fcn16s", "fcn8s")
        stack = contextlib.ExitStack()
        segmenters = [
            stack.enter_context(Segmenter.load(self.run_dir(k, seed) / "last.pt", device="cpu"))
            for k in keys
        ]
        colours = ModelInfo.palette_array(segmenters[0].palette)
        colours[IGNORE_LABEL] = (224, 224, 192)
        scenes = SyntheticSegmentation("val", self.args.figure_scenes)
        titles = ("image", "FCN-32s", "FCN-16s", "FCN-8s", "ground truth")
        fig, axes = plt.subplots(len(scenes), 5, figsize=(10, 2.1 * len(scenes)), squeeze=False)
        for i in range(len(scenes)):
            image, labels = scenes[i]
            panels = [
                image[..., ::-1],
                *(colours[s.predict(image)] for s in segmenters),
                colours[labels],
            ]
            for j, panel in enumerate(panels):
                axes[i, j].imshow(panel, interpolation="nearest")
                axes[i, j].set_axis_off()
                if i == 0:
                    axes[i, j].set_title(titles[j])
        stack.close()
        fig.suptitle(f"synthetic val scenes, width {self.args.width:g}, seed {seed}")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


def _tiled(shape: tuple[int, ...]) -> tuple[int, int]:
    """Canvas size for a scene padded by 112 on each side, rounded up to 224 + 32·k."""
    return tuple(WINDOW + STRIDE * math.ceil(side / STRIDE) for side in shape[:2])  # type: ignore[return-value]


def _canvas(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``x`` (3×H×W, normalized) placed at (112, 112) on an h×w canvas of zeros (the mean colour),
    cut to the canvas; window (r, c) of the canvas is then centred on scene pixel (32r, 32c)."""
    canvas = torch.zeros(3, h, w)
    half = WINDOW // 2
    part = x[:, : h - half, : w - half]
    canvas[:, half : half + part.shape[1], half : half + part.shape[2]] = part
    return canvas


@torch.no_grad()
def _centre_accuracy(conv_net: torch.nn.Module, canvas: torch.Tensor, labels: np.ndarray) -> float:
    """How often the dense map's class at window (r, c) is the scene's label at pixel (32r, 32c)."""
    predicted = conv_net(canvas).argmax(1)[0].numpy()
    truth = labels[: predicted.shape[0] * STRIDE : STRIDE, : predicted.shape[1] * STRIDE : STRIDE]
    predicted = predicted[: truth.shape[0], : truth.shape[1]]
    keep = truth != IGNORE_LABEL
    return float((predicted[keep] == truth[keep]).mean())


CLAIMS = (
    ("full fine-tuning > FCN-32s-fixed", "fcn32s", "fcn32s-fixed", "mean_iu"),
    ("pretrained FCN-32s > from scratch", "fcn32s", "fcn32s-scratch", "mean_iu"),
    ("FCN-16s ≥ FCN-32s", "fcn16s", "fcn32s", "mean_iu"),
    ("FCN-8s ≥ FCN-16s", "fcn8s", "fcn16s", "mean_iu"),
    ("FCN-16s > FCN-32s (boundary)", "fcn16s", "fcn32s", "boundary_mean_iu"),
    ("FCN-8s > FCN-16s (boundary)", "fcn8s", "fcn16s", "boundary_mean_iu"),
    ("FCN-16s ≥ FCN-32s at equal iterations", "fcn16s", "fcn32s-2x", "mean_iu"),
    ("FCN-16s > FCN-32s at equal iterations (boundary)", "fcn16s", "fcn32s-2x", "boundary_mean_iu"),
    ("FCN-8s at-once ≥ FCN-32s (same budget)", "fcn8s-atonce", "fcn32s", "mean_iu"),
)


def claims(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each claim: difference of means, and whether it beats both rows' seed spreads."""
    by_key = {r["key"]: r for r in rows}
    out = []
    for text, a, b, metric in CLAIMS:
        ra, rb = by_key[a][metric], by_key[b][metric]
        diff = ra["mean"] - rb["mean"]
        spread = max(ra["spread"], rb["spread"])
        out.append(
            {
                "claim": text,
                "metric": metric,
                "difference": diff,
                "largest_spread": spread,
                "holds": bool(diff > spread),
            }
        )
    return out


def table_markdown(results: dict[str, Any]) -> str:
    seeds = len(next(iter(results["rows"]))["seeds"])
    s = results["settings"]

    def cell(v: dict[str, float]) -> str:
        return f"{100 * v['mean']:.1f} ± {50 * v['spread']:.1f}"

    head = "| model | iterations | pixel acc | mean acc | mean IU | f.w. IU | boundary mean IU |"
    lines = [
        f"Synthetic val ({s['val_images']} scenes), width {s['width']:g}, {seeds} seeds: "
        f"mean ± half the range over seeds, in percent; boundary = within {s['trimap']} px of "
        "an object outline.",
        "",
        head,
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["rows"]:
        metrics = " | ".join(cell(r[m]) for m in (*METRICS, "boundary_mean_iu"))
        lines.append(f"| {r['name']} | {r['iterations']} | {metrics} |")
    lines += [
        "",
        "| claim | metric | difference | largest seed range | holds |",
        "|---|---|---:|---:|---|",
    ]
    for c in results["claims"]:
        lines.append(
            f"| {c['claim']} | {c['metric'].replace('_', ' ')} | {100 * c['difference']:+.1f} | "
            f"{100 * c['largest_spread']:.1f} | {'yes' if c['holds'] else 'NO'} |"
        )
    p = results["pretrain"]
    lines += [
        "",
        f"Classifier (fcn-pretrain, {p['iterations']} iterations, {p['seconds']:.0f} s): "
        f"val accuracy {100 * p['accuracy']:.1f}% on {p['val_windows']} windows.",
    ]
    for r in results["convolutionalization"]["rows"]:
        lines.append(
            f"Convolutionalized, {r['height']}×{r['width']} ({r['windows']} windows): one pass "
            f"{r['conv_ms']:.1f} ms vs every window {r['fc_windows_ms']:.1f} ms "
            f"({r['speedup']:.1f}×); max |Δscore| {r['max_abs_diff']:.2g} "
            f"of {r['max_abs_score']:.2g}, "
            f"top-1 agreement {100 * r['top1_agreement']:.0f}%."
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    Pipeline(parse_args(argv)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
