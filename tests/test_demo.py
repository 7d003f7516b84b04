"""scripts/demo.sh runs again: its own earlier output is started over, a stranger's is refused.

The steps after set-up need a fresh virtual environment (network), so these runs stop at set-up
on purpose (``PYTHON=false``); what they check happens before it, and the summary after it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

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
    assert "=== summary" in second.stdout and "stopped early" in second.stdout
    assert f"source {tmp_path / 'no-venv'}/bin/activate" in second.stdout


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
