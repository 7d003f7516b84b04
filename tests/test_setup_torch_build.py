"""scripts/torch_build.py: set-up checks the torch *build*, not just that ``import torch`` works."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "torch_build.py"
spec = importlib.util.spec_from_file_location("torch_build", SCRIPT)
assert spec is not None and spec.loader is not None
torch_build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(torch_build)


def test_a_cpu_build_does_not_fit_the_gpu_setup() -> None:
    problem = torch_build.torch_build_problem("cuda", "2.13.0+cpu", None)
    assert problem == "torch 2.13.0+cpu is a CPU build; the GPU set-up needs a CUDA build"
    assert torch_build.torch_build_problem("cuda", "2.13.0", "13.0") is None


def test_a_cuda_build_does_not_fit_a_machine_without_a_gpu() -> None:
    problem = torch_build.torch_build_problem("cpu", "2.13.0", "13.0")
    assert problem is not None and problem.startswith("torch 2.13.0 is a CUDA 13.0 build")
    assert torch_build.torch_build_problem("cpu", "2.13.0+cpu", None) is None


def test_a_cuda_build_the_driver_cannot_run_does_not_fit() -> None:
    problem = torch_build.torch_build_problem("cuda", "2.11.0+cu130", "13.0", gpu_usable=False)
    assert problem is not None and "cannot use the GPU here" in problem and "driver" in problem
    assert torch_build.torch_build_problem("cuda", "2.11.0+cu130", "13.0", True) is None


def test_missing_torch_and_bad_arguments() -> None:
    assert torch_build.torch_build_problem("cpu", None, None) == "torch is not installed"
    with pytest.raises(ValueError, match="want must be"):
        torch_build.torch_build_problem("rocm", "2.13.0", None)


def test_the_script_reads_the_installed_torch() -> None:
    version, cuda, _ = torch_build.installed_torch()
    assert version == torch.__version__ and cuda == torch.version.cuda
    fits = "cuda" if torch.version.cuda else "cpu"
    other = "cpu" if fits == "cuda" else "cuda"
    ok = subprocess.run([sys.executable, str(SCRIPT), fits], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout == ""
    bad = subprocess.run([sys.executable, str(SCRIPT), other], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stdout.startswith(f"torch {torch.__version__} is a")
