"""scripts/demo.sh: its own earlier output is started over, a stranger's is refused, and a demo
stopped by a signal says so in its summary (and exits 128 + the signal's number).

The first two runs stop at set-up on purpose (``PYTHON=false``: no virtual environment can be
made); what they check happens before it, and the summary after it. The signal test runs the real
demo in this test run's own environment until training prints a progress line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "scripts" / "demo.sh"


def _demo(out: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FCN_DEMO_OUT": str(out), "FCN_VENV": str(tmp_path / "no-venv")}
    env["PYTHON"] = "false"  # set-up fails at once: no virtual environment, no network
    return subprocess.run(["bash", str(DEMO)], env=env, capture_output=True, text=True, timeout=120)


def test_demo_starts_its_own_folder_over_and_summarizes(tmp_path: Path) -> None:
    out = tmp_path / "demo-out"
    first = _demo(out, tmp_path)
    assert first.returncode != 0 and (out / ".fcn-demo").is_file()
    (out / "train").mkdir()
    (out / "train" / "last.pt").write_bytes(b"from the first run")
    second = _demo(out, tmp_path)
    assert "starting over" in second.stdout
    assert not (out / "train").exists() and (out / ".fcn-demo").is_file()
    assert "=== summary" in second.stdout and "FAILED       set up" in second.stdout
    assert "stopped early" in second.stdout and "next:" not in second.stdout


def test_demo_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    run = _demo(out, tmp_path)
    assert run.returncode == 2 and (out / "notes.txt").read_text() == "keep me"
    assert run.stderr.strip().splitlines() == [
        f"demo: error: {out}/ holds files the demo did not write; set FCN_DEMO_OUT to another "
        "folder"
    ]


@pytest.mark.slow
def test_a_demo_stopped_by_sigterm_says_so(tmp_path: Path) -> None:
    """Output to pipes, as in a log file: training prints progress lines at a steady interval,
    and SIGTERM during training is summarized as such, with exit 143 and no "next:"."""
    out = tmp_path / "demo-out"
    env = {
        **os.environ,
        "FCN_DEMO_OUT": str(out),
        "FCN_VENV": sys.prefix,  # this run's own environment: set-up has nothing to install
        "FCN_PROGRESS_INTERVAL": "1",
    }
    proc = subprocess.Popen(
        ["bash", str(DEMO)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    deadline = time.monotonic() + 300
    while not any(line.startswith("training fcn8s: ") for line in err):
        assert proc.poll() is None and time.monotonic() < deadline, "".join(err)[-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout = proc.stdout.read()  # type: ignore[union-attr]
    assert proc.wait(timeout=120) == 143, stdout
    reader.join(timeout=10)
    line = next(line for line in err if line.startswith("training fcn8s: "))
    assert "/600 it (" in line and " it/s, " in line and " left; " in line and "loss " in line
    summary = stdout.split("=== summary", 1)[1]
    assert "ok           set up" in summary
    assert f"INTERRUPTED  train ({out}/train) (SIGTERM)" in summary, summary
    assert "stopped by SIGTERM" in summary and "next:" not in summary
    assert "=== export" not in stdout  # nothing ran after the stop
