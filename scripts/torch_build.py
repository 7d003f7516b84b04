"""Does the installed torch fit this machine? Used by scripts/setup.sh; no fcn-deploy import.

    python scripts/torch_build.py cuda|cpu   → exit 0 if it fits, else 1 with one line on stdout

``cuda``: a CUDA build is needed (the gpu extra: onnxruntime-gpu and TensorRT beside a CPU torch
would run nothing on the GPU). ``cpu``: a machine without an NVIDIA GPU, where a CUDA build is
several GB of NVIDIA packages for nothing. The import alone cannot tell these apart.
"""

from __future__ import annotations

import shutil
import sys


def torch_build_problem(
    want: str, version: str | None, cuda: str | None, gpu_usable: bool | None = None
) -> str | None:
    """Why torch ``version`` (CUDA ``cuda``; None: a CPU build) does not fit ``want``, or None.

    ``gpu_usable``: whether that torch can use the NVIDIA GPU present
    (``torch.cuda.is_available()``; None: no GPU to ask about). A CUDA build the driver cannot run
    fits no better than a CPU one.
    """
    if want not in ("cuda", "cpu"):
        raise ValueError(f"want must be 'cuda' or 'cpu', got {want!r}")
    if version is None:
        return "torch is not installed"
    if want == "cuda" and cuda is None:
        return f"torch {version} is a CPU build; the GPU set-up needs a CUDA build"
    if want == "cuda" and gpu_usable is False:
        return (
            f"torch {version} is a CUDA {cuda} build that cannot use the GPU here "
            f"(torch.cuda.is_available() is False): the driver may be older than CUDA {cuda} "
            "needs (nvidia-smi shows the CUDA version it supports)"
        )
    if want == "cpu" and cuda is not None:
        return (
            f"torch {version} is a CUDA {cuda} build on a machine without an NVIDIA GPU "
            "(several GB of NVIDIA packages it cannot use)"
        )
    return None


def installed_torch() -> tuple[str | None, str | None, bool | None]:
    """(version, CUDA version or None, whether it can use the NVIDIA GPU present or None when
    there is none) of the torch this interpreter imports; (None, None, None) without torch."""
    try:
        import torch
    except ImportError:
        return None, None, None
    gpu_present = shutil.which("nvidia-smi") is not None
    usable = bool(torch.cuda.is_available()) if gpu_present and torch.version.cuda else None
    return str(torch.__version__), torch.version.cuda, usable


if __name__ == "__main__":
    problem = torch_build_problem(sys.argv[1], *installed_torch())
    if problem:
        print(problem)
    sys.exit(1 if problem else 0)
