"""fcn-train: exact resume, NaN stop, signals, two-process gloo, learning, and the CLI as a
subprocess."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from fcn_deploy.checkpoint import load_model, read_checkpoint
from fcn_deploy.errors import FCNError
from fcn_train.checkpointing import LAST
from fcn_train.config import TrainConfig
from fcn_train.loop import train

BIN = Path(sys.executable).parent
TINY: dict[str, Any] = dict(
    data="synthetic",
    variant="fcn8s",
    width=0.0625,
    batch_size=2,
    val_images=4,
    log_every=1,
    device="cpu",
)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _trainer_state(path: Path) -> dict[str, Any]:
    return read_checkpoint(path)["extra"]["trainer"]


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "log.csv").open() as f:
        return list(csv.DictReader(f))


def test_resume_continues_exactly(tmp_path: Path) -> None:
    whole = train(TrainConfig(out=str(tmp_path / "whole"), iterations=6, val_every=100, **TINY))
    first = train(TrainConfig(out=str(tmp_path / "split"), iterations=3, val_every=100, **TINY))
    assert first.iteration == 3 and first.stopped is None
    resumed = train(
        TrainConfig(out=str(tmp_path / "split"), iterations=6, val_every=100, **TINY),
        resume=first.last,
    )
    assert resumed.iteration == 6
    a, b = read_checkpoint(whole.last), read_checkpoint(resumed.last)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    opt_a, opt_b = (
        _trainer_state(whole.last)["optimizer"],
        _trainer_state(resumed.last)["optimizer"],
    )
    for k, state in opt_a["state"].items():
        assert all(torch.equal(v, opt_b["state"][k][name]) for name, v in state.items())
    assert torch.equal(
        _trainer_state(whole.last)["rng"][0]["torch"],
        _trainer_state(resumed.last)["rng"][0]["torch"],
    )
    # the resumed log reads like the uninterrupted one: same iterations and losses (the elapsed time
    # differs, and the first part's final validation stays in the log)
    losses = [
        [(r["iteration"], r["loss"]) for r in _rows(tmp_path / run) if r["loss"]]
        for run in ("whole", "split")
    ]
    assert losses[0] == losses[1] and len(losses[0]) == 6


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = TrainConfig(
        out=str(out),
        iterations=50,
        checkpoint_every=1,
        val_every=100,
        recipe="reference",
        lr=1e30,
        **{k: v for k, v in TINY.items() if k != "batch_size"},
    )
    with pytest.raises(
        FCNError, match=r"training loss became (nan|inf) at iteration \d+; stopped.*untouched"
    ):
        train(config)
    state = _trainer_state(out / LAST)
    model = load_model(out / LAST)
    assert 1 <= state["iteration"] < 50
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_checkpoint_is_a_deployable_model_with_the_datasets_classes(tmp_path: Path) -> None:
    result = train(TrainConfig(out=str(tmp_path), iterations=2, val_every=2, **TINY))
    model = load_model(result.last)
    assert model.info.variant == "fcn8s" and model.info.class_names[1] == "disc"
    assert result.best is not None and load_model(result.best).info.num_classes == 7
    assert torch.load(result.last, weights_only=True)["extra"]["trainer"]["iteration"] == 2
    assert (tmp_path / "curves.png").stat().st_size > 0
    rows = _rows(tmp_path)
    assert [r["iteration"] for r in rows if r["val_mean_iu"]] == ["2"]


def test_last_layer_trains_only_the_score_layers(tmp_path: Path) -> None:
    start = train(TrainConfig(out=str(tmp_path / "a"), iterations=1, **TINY))
    tuned = train(
        TrainConfig(
            out=str(tmp_path / "b"),
            iterations=3,
            train="last-layer",
            init=f"checkpoint:{start.last}",
            **TINY,
        )
    )
    before, after = (
        read_checkpoint(start.last)["state_dict"],
        read_checkpoint(tuned.last)["state_dict"],
    )
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("score") for k in changed)


def _run(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=_env())


def test_cli_resume_reads_the_checkpoint_once(tmp_path: Path, monkeypatch) -> None:
    """fcn-train --resume reads last.pt once: for the run's settings and the state together."""
    from fcn_train.cli import train_main

    out = tmp_path / "run"
    train(TrainConfig(out=str(out), iterations=1, val_every=100, **TINY))
    real_load, reads = torch.load, []
    last = (out / LAST).stat().st_ino  # the file is opened by the gate: known by its inode

    def counting_load(f, *args, **kwargs):
        reads.append(os.fstat(f.fileno()).st_ino if hasattr(f, "fileno") else Path(f).stat().st_ino)
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    assert train_main(["--resume", str(out), "--iterations", "2", "-q"]) == 0
    assert reads.count(last) == 1 and _trainer_state(out / LAST)["iteration"] == 2


@pytest.mark.slow
def test_cli_sigterm_saves_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [
        str(BIN / "fcn-train"),
        "--data",
        "synthetic",
        "--variant",
        "fcn8s",
        "--width",
        "0.0625",
        "--batch-size",
        "1",
        "--iterations",
        "100000",
        "--log-every",
        "1",
        "--val-images",
        "2",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    )
    deadline = time.time() + 120
    while not (out / "log.csv").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in err and "--resume" in err
    done = _trainer_state(out / LAST)["iteration"]
    assert 1 <= done < 100000
    result = _run([str(BIN / "fcn-train"), "--resume", str(out), "--iterations", str(done + 1)])
    assert result.returncode == 0, result.stderr
    assert _trainer_state(out / LAST)["iteration"] == done + 1
    bad = _run([str(BIN / "fcn-train"), "--resume", str(out), "--lr", "0.5"])
    assert bad.returncode == 2 and "--lr cannot change on --resume" in bad.stderr


@pytest.mark.slow
def test_two_processes_on_gloo(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    result = _run(
        [
            str(BIN / "torchrun"),
            "--standalone",
            "--nproc_per_node",
            "2",
            str(BIN / "fcn-train"),
            "--data",
            "synthetic",
            "--variant",
            "fcn8s",
            "--width",
            "0.0625",
            "--batch-size",
            "1",
            "--iterations",
            "3",
            "--val-every",
            "3",
            "--val-images",
            "4",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    state = _trainer_state(out / LAST)
    assert (
        state["iteration"] == 3 and len(state["rng"]) == 2
    )  # both ranks' RNG states, written once by rank 0
    assert not torch.equal(
        state["rng"][0]["torch"], state["rng"][1]["torch"]
    )  # ranks draw different dropout
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "curves.png", "last.pt", "log.csv"]
    assert [r["val_mean_iu"] != "" for r in _rows(out)].count(True) == 1
    # both ranks trained: the resumed single-process run accepts the two-rank state
    again = _run([str(BIN / "fcn-train"), "--resume", str(out), "--iterations", "4"])
    assert again.returncode == 0, again.stderr[-2000:]


@pytest.mark.slow
def test_cli_train_then_eval(tmp_path: Path) -> None:
    out, report = tmp_path / "run", tmp_path / "eval.json"
    trained = _run(
        [
            str(BIN / "fcn-train"),
            "--data",
            "synthetic",
            "--variant",
            "fcn32s",
            "--width",
            "0.0625",
            "--iterations",
            "4",
            "--batch-size",
            "1",
            "--val-images",
            "3",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert trained.returncode == 0, trained.stderr
    assert "done: " in trained.stderr
    shutil.copy(out / LAST, tmp_path / "model.pt")
    evaluated = _run(
        [
            str(BIN / "fcn-eval"),
            "--model",
            str(tmp_path / "model.pt"),
            "--data",
            "synthetic",
            "--num-images",
            "3",
            "--json",
            str(report),
        ]
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert "mean iu" in evaluated.stdout and "disc" in evaluated.stdout
    import json

    results = json.loads(report.read_text())
    assert results["num_images"] == 3 and results["data"] == "synthetic val"
    assert set(results["scores"]) == {
        "pixel_accuracy",
        "mean_accuracy",
        "mean_iu",
        "frequency_weighted_iu",
    }
    assert set(results["per_class_iu"]) == {
        "background",
        "disc",
        "box",
        "triangle",
        "ring",
        "cross",
        "star",
    }


@pytest.mark.slow
def test_training_on_synthetic_scenes_beats_predicting_background(tmp_path: Path) -> None:
    # ~200 steps is where a from-scratch net leaves the all-background plateau
    # (benchmarks/training.md
    # has the full curve); a higher lr than the recipe's gets there sooner
    import numpy as np

    from fcn_deploy.data import SyntheticSegmentation
    from fcn_train.evaluate import evaluate

    config = TrainConfig(
        out=str(tmp_path),
        data="synthetic",
        variant="fcn8s",
        width=0.0625,
        lr=3e-3,
        iterations=200,
        val_every=1000,
        val_images=30,
        log_every=50,
        device="cpu",
    )
    result = train(config)
    background = evaluate(
        lambda im: np.zeros(im.shape[:2], np.uint8),
        SyntheticSegmentation("val", 30),
        7,
        progress=False,
    )["scores"]
    assert result.scores["mean_accuracy"] > 2 * background["mean_accuracy"]
    assert result.scores["mean_iu"] > 1.6 * background["mean_iu"]
    assert result.scores["pixel_accuracy"] > background["pixel_accuracy"] + 0.02


def test_staged_inits_vgg16_then_previous_stage(tmp_path: Path) -> None:
    from reference_fcn import TorchvisionVGG16

    from fcn_deploy.data import SyntheticSegmentation
    from fcn_train.initialize import initial_model

    torch.manual_seed(0)
    vgg_path = tmp_path / "vgg16.pth"
    vgg = TorchvisionVGG16(width=0.0625)
    torch.save(vgg.state_dict(), vgg_path)
    data = SyntheticSegmentation("train", 4)
    fcn32 = initial_model(
        "fcn32s", f"vgg16:{vgg_path}", 1.0, data, seed=0
    )  # width comes from the file
    assert fcn32.width == 0.0625 and fcn32.info.preprocessing.color == "rgb"
    assert torch.equal(fcn32.conv1_1.weight, vgg.state_dict()["features.0.weight"])
    assert fcn32.info.class_names == list(data.class_names)

    stage1 = train(
        TrainConfig(
            out=str(tmp_path / "s32"),
            variant="fcn32s",
            init=f"vgg16:{vgg_path}",
            iterations=2,
            **{k: v for k, v in TINY.items() if k != "variant"},
        )
    )
    trained32 = load_model(stage1.last)
    fcn16 = initial_model("fcn16s", f"checkpoint:{stage1.last}", 1.0, data, seed=0).eval()
    x = torch.randn(1, 3, 70, 90)
    for key, value in trained32.state_dict().items():
        if not key.startswith("upscore"):
            assert torch.equal(fcn16.state_dict()[key], value), key
    assert not fcn16.score_pool4.weight.any() and not fcn16.score_pool4.bias.any()
    with (
        torch.no_grad()
    ):  # the new skip adds nothing yet: the previous stage's scores, up to 2×+16× vs 32× bilinear
        a, b = fcn16(x), trained32(x)
        assert (a - b).abs().mean() < 0.05 * b.abs().mean()  # the edges differ most
    with pytest.raises(FCNError, match="expected vgg16:PATH, checkpoint:PATH or scratch"):
        initial_model("fcn8s", "imagenet", 1.0, data, seed=0)


def test_time_limit_stops_cleanly_and_workers_do_not_change_the_run(tmp_path: Path) -> None:
    timed = train(TrainConfig(out=str(tmp_path / "t"), iterations=10_000, time_limit=0.5, **TINY))
    assert timed.stopped == "time limit" and 1 <= timed.iteration < 10_000
    assert _trainer_state(timed.last)["iteration"] == timed.iteration and timed.scores
    # batches are a function of the step alone, so building them in worker processes changes nothing
    a = train(TrainConfig(out=str(tmp_path / "w0"), iterations=3, val_every=100, **TINY))
    b = train(TrainConfig(out=str(tmp_path / "w2"), iterations=3, val_every=100, workers=2, **TINY))
    sd_a, sd_b = read_checkpoint(a.last)["state_dict"], read_checkpoint(b.last)["state_dict"]
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
