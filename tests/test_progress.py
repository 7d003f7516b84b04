"""Progress off a terminal: a line at a steady interval through the log, never a bar's carriage
returns; none under -q. Run for real (fcn-train as a subprocess writing to a pipe)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fcn_deploy._progress import Progress, heartbeat

BIN = Path(sys.executable).parent


@pytest.fixture
def every_tenth_second(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FCN_PROGRESS_INTERVAL", "0.1")
    logging.getLogger("fcn_deploy").setLevel(logging.INFO)


def test_lines_off_a_terminal(every_tenth_second: None, caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.INFO, logger="fcn_deploy.progress"),
        Progress(6, "calibrating", unit="image") as progress,  # pytest's stderr: no terminal
    ):
        for _ in range(6):
            time.sleep(0.06)
            progress.update(1, size="64x64")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) >= 3, lines
    assert re.fullmatch(r"calibrating: \d/6 image \(\d+%\), [\d.]+ image/s, \d+ s left; size 64x64",
                        lines[0]), lines  # fmt: skip
    assert re.fullmatch(r"calibrating: 6/6 image \(100%\), [\d.]+ image/s, in \d+ s; size 64x64",
                        lines[-1]), lines  # fmt: skip
    assert not any("\r" in line for line in lines)


def test_a_short_step_says_nothing_and_quiet_says_nothing(
    every_tenth_second: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="fcn_deploy.progress"):
        with Progress(3, "fast") as progress:
            progress.update(3)
        assert not caplog.records  # done before the first interval: no line at all
        logging.getLogger("fcn_deploy").setLevel(logging.WARNING)  # -q
        with Progress(3, "quiet") as progress, heartbeat("quiet"):
            time.sleep(0.25)
            progress.update(3)
    assert not caplog.records


def test_heartbeat_of_one_long_call(
    every_tenth_second: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="fcn_deploy.progress"), heartbeat("tracing fcn8s"):
        time.sleep(0.35)
    lines = [r.getMessage() for r in caplog.records]
    assert 2 <= len(lines) <= 4 and all(
        re.fullmatch(r"tracing fcn8s: still running \(\d+ s\)", line) for line in lines
    ), lines


@pytest.mark.slow
def test_fcn_train_prints_progress_lines_into_a_log(tmp_path: Path) -> None:
    env = {**os.environ, "FCN_PROGRESS_INTERVAL": "0.5", "OMP_NUM_THREADS": "1"}
    cmd = [
        str(BIN / "fcn-train"), "--data", "synthetic", "--variant", "fcn8s", "--width", "0.0625",
        "--batch-size", "1", "--iterations", "40", "--val-images", "2", "--device", "cpu",
        "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("training fcn8s: ")]
    assert lines, result.stderr
    assert re.fullmatch(
        r"training fcn8s: \d+/40 it \(\d+%\), [\d.]+ it/s, .+ left; it \d+, loss [\d.e+-]+",
        lines[0],
    ), lines[0]
    assert "\r" not in result.stderr


@pytest.mark.slow
def test_fcn_export_says_it_is_still_running(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    env = {**os.environ, "FCN_PROGRESS_INTERVAL": "0.2", "OMP_NUM_THREADS": "1"}
    cmd = [str(BIN / "fcn-export"), str(make_checkpoint("fcn8s")), "-o", str(tmp_path / "m.onnx"),
           "--no-verify"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^exporting fcn8s: still running \(\d+ s\)$", result.stderr, re.M), (
        result.stderr
    )
