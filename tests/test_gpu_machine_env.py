"""gpu-check in the GPU machine's Python environment: what would fail there fails here.

That machine has exactly the packages of ``scripts/gpu-machine-requirements.txt`` and no network,
and a GPU session is short and rare. This builds a virtual environment from the same list
(``scripts/gpu-machine-env.sh``; ``scripts/test.sh`` builds it before the suite), then imports
every module of the library and the trainer in it and runs ``gpu-check.sh --rehearse``: the
collection of every gpu-marked test file, fcn-bench on a tiny net, the summary and the files it
hands back, all under the script's own PYTHONPATH.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("FCN_GPU_MACHINE_VENV", ROOT / ".venv-gpu-machine"))
# not on the GPU machine: a module-level import of any of these must fail the check
ABSENT = (
    "jsonschema",
    "openvino",
    "nvidia-pytriton",
    "tritonclient",
    "onnxruntime-gpu",
    "tensorrt",
)


@pytest.fixture(scope="module")
def gpu_python() -> Path:
    """The environment's python, built (or found up to date) from the package list."""
    done = subprocess.run(
        ["bash", str(ROOT / "scripts/gpu-machine-env.sh"), str(VENV)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        why = f"cannot build the GPU machine's environment in {VENV}: {done.stderr[-500:]}"
        if os.environ.get("CI"):
            pytest.fail(why)  # in CI this check must run, never quietly skip
        pytest.skip(why)
    return VENV / "bin" / "python"


def _run(python: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FCN_VENV")}
    return subprocess.run(
        [str(python), *args], capture_output=True, text=True, env={**clean, **env}, timeout=600
    )


def test_the_environment_holds_the_list_and_nothing_optional(gpu_python: Path) -> None:
    listed = [
        re.split(r"[\s<>=!~;#\[]", line.strip(), maxsplit=1)[0]
        for line in (ROOT / "scripts/gpu-machine-requirements.txt").read_text().splitlines()
    ]
    probe = (
        "import sys\nfrom importlib.metadata import distributions\n"
        "print(' '.join(sorted(d.metadata['Name'].lower() for d in distributions())))"
    )
    # -I: not the current folder, where an editable install leaves fcn_deploy.egg-info behind
    done = _run(gpu_python, "-I", "-c", probe)
    assert done.returncode == 0, done.stderr
    installed = set(done.stdout.split())
    assert {n.lower() for n in listed if n} <= installed
    assert not installed & set(ABSENT), "the GPU machine lacks these; the check would prove nothing"
    assert "fcn-deploy" not in installed  # the checkout runs through PYTHONPATH, as there
    numpy = _run(gpu_python, "-c", "import numpy; print(numpy.__version__)").stdout
    assert numpy.startswith("2."), numpy


def test_every_module_imports_there(gpu_python: Path) -> None:
    # a module that needs TensorRT refuses with FCNError's one line (its absence, said plainly)
    code = (
        "import importlib, pkgutil, sys\n"
        "import fcn_deploy, fcn_train\n"
        "from fcn_deploy.errors import FCNError\n"
        "bad = []\n"
        "for pkg in (fcn_deploy, fcn_train):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        try:\n"
        "            importlib.import_module(m.name)\n"
        "        except FCNError:\n"
        "            pass\n"
        "        except ImportError as e:\n"
        "            bad.append(f'{m.name}: {e}')\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    done = _run(gpu_python, "-c", code, PYTHONPATH=f"{ROOT}:{ROOT / 'train'}")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow  # every step of gpu-check in a fresh process: 1-2 minutes on 2 cores
def test_gpu_check_rehearsal_runs_every_step_and_hands_back_its_files(
    gpu_python: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FCN_VENV")}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts/gpu-check.sh"), "--rehearse", "--out", str(out)],
        capture_output=True,
        text=True,
        env={**env, "PYTHON": str(gpu_python)},
        timeout=600,
        cwd=tmp_path,  # the script finds the checkout itself
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    files = sorted(p.name.split("-", 4)[-1] for p in out.iterdir())
    # what the GPU machine can hand back: at most 8 files
    assert files == sorted(
        ["b1.json", "b1.md", "b1.png", "b8.json", "b8.md", "b8.png", "gpu-check.log", "summary.md"]
    )
    log = next(out.glob("*-gpu-check.log")).read_text()
    assert "error" not in log.lower(), log[-3000:]
    # every gpu test file was collected, the trainer's included (fcn_train on PYTHONPATH)
    for test in ("test_distributed.py::", "test_train_amp.py::", "test_bench_gpu_paths.py::"):
        assert test in log
    summary = next(out.glob("*-summary.md")).read_text()
    assert "| torch | 64x64 | 8 |" in summary
    # no GPU, no TensorRT, no jsonschema there: never "passed" alone, every skip with its reason
    skipped = re.search(r"\*\*Result: passed, with (\d+) item\(s\) skipped", summary)
    assert skipped and f"## Skipped ({skipped[1]})" in summary, summary[:2000]
    assert "- fcn-bench batch 1, tensorrt: TensorRT is not installed" in summary
    assert "- schema check of the fcn-bench results: jsonschema is not installed here" in summary
    assert f"gpu-check: passed, with {skipped[1]} item(s) skipped" in done.stdout.splitlines()[-1]
    assert re.search(r"fcn-train fcn8s .*: [0-9.]+ images/s with AMP, [0-9.]+ without", summary)
