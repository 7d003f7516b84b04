"""Does the installed torch fit this machine? Used by scripts/setup.sh; no fcn-deploy import.

    python scripts/torch_build.py cuda|cpu   → exit 0 if it fits, else 1 with one line on stdout

``cuda``: a CUDA build is needed (the gpu extra: onnxruntime-gpu and TensorRT beside a CPU torch
would run nothing on the GPU). ``cpu``: a machine without an NVIDIA GPU, where a CUDA build is
several GB of NVIDIA packages for nothing. The import alone cannot tell these apart.
"""

from __future__ import annotations

import sys


def torch_build_problem(want: str, version: str | None, cuda: str | None) -> str | None:
    """Why torch ``version`` (CUDA ``cuda``; None: a CPU build) does not fit ``want``, or None."""
    if want not in ("cuda", "cpu"):
        raise ValueError(f"want must be 'cuda' or 'cpu', got {want!r}")
    if version is None:
        return "torch is not installed"
    if want == "cuda" and cuda is None:
        return f"torch {version} is a CPU build; the GPU set-up needs a CUDA build"
    if want == "cpu" and cuda is not None:
        return (
            f"torch {version} is a CUDA {cuda} build on a machine without an NVIDIA GPU "
            "(several GB of NVIDIA packages it cannot use)"
        )
    return None


def installed_torch() -> tuple[str | None, str | None]:
    """(version, CUDA version or None) of the torch this interpreter imports, or (None, None)."""
    try:
        import torch
    except ImportError:
        return None, None
    return str(torch.__version__), torch.version.cuda


if __name__ == "__main__":
    problem = torch_build_problem(sys.argv[1], *installed_torch())
    if problem:
        print(problem)
    sys.exit(1 if problem else 0)
