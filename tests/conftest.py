"""Fixtures shared by every test module: small random FCNs and their checkpoints.

Score layers start at zero by design, which makes every output zero and every label comparison
trivially equal, so the fixtures here give them random weights.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import fcn_deploy
from fcn_deploy.bulk.batch import LOCAL_RAY_ENV
from fcn_deploy.models import create_model

# one thread per worker when pytest-xdist runs the suite on several (scripts/test.sh: two)
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))

# Modules whose tests run fcn-deploy's CLIs, servers, Ray or a browser as processes of their
# own: the full suite's work, left out of the quick tier (scripts/test.sh --quick, `-m "not
# slow"`) with the tests marked slow one by one.
PROCESS_MODULES = frozenset({
    "test_batch", "test_bench", "test_caffemodel", "test_cli_common", "test_cli_errors",
    "test_demo", "test_export", "test_gpu_machine_env", "test_input_gate", "test_manifest",
    "test_predict_cli", "test_progress", "test_serve", "test_train", "test_triton_repo",
    "test_ui", "test_ui_serve", "test_video", "test_video_seek",
})  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.module is not None and item.module.__name__ in PROCESS_MODULES:
            item.add_marker(pytest.mark.slow)


def _hypothesis_profiles() -> None:
    """Property-based tests of the readers of outside input (tests/test_fuzz_*.py): a fixed budget
    in the suite, and a long campaign (benchmarks/fuzz_campaign.py) with the same properties. No
    deadline: a slow example is a finding of its own only when it passes the reader's time bound.

    Hypothesis is a development tool: the GPU machine's package set
    (scripts/gpu-machine-requirements.txt) lacks it, and gpu-check collects only the gpu-marked
    files there, none of which use it. A fuzz module still fails to import without it.
    """
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:
        return
    fuzz = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow], "database": None}
    settings.register_profile("ci", max_examples=150, derandomize=True, **fuzz)  # same every run
    settings.register_profile("campaign", max_examples=100_000, **fuzz)
    settings.load_profile(os.environ.get("FCN_HYPOTHESIS_PROFILE", "ci"))


_hypothesis_profiles()
# a Ray the tests start (in-process or through fcn-predict --ray) listens on 127.0.0.1 only
os.environ.update(LOCAL_RAY_ENV)


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random score layers (the rest keeps its He init), so outputs and labels are non-trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("score") or name.startswith("fc8"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def with_external_data(model: Path, dest: Path, location: str, write: bool = True) -> Path:
    """``model`` saved as ``dest`` with its largest initializer in external data at ``location``
    (written there, relative to ``dest``'s folder, unless ``write`` is False)."""
    import onnx

    proto = onnx.load(str(model))
    tensor = max(proto.graph.initializer, key=lambda t: len(t.raw_data))
    data = tensor.raw_data
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    tensor.external_data.add(key="location", value=location)
    if write:
        (dest.parent / location).parent.mkdir(parents=True, exist_ok=True)
        (dest.parent / location).write_bytes(data)
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(dest))
    return dest


@pytest.fixture
def make_model() -> Callable[..., nn.Module]:
    """``make_model("fcn8s", width=0.125, num_classes=21, seed=0)`` → an eval-mode random net."""

    def make(
        variant: str = "fcn8s", width: float = 0.125, num_classes: int = 21, seed: int = 0
    ) -> nn.Module:
        torch.manual_seed(seed)
        return randomize(create_model(variant, num_classes=num_classes, width=width), seed)

    return make


@pytest.fixture
def make_checkpoint(tmp_path: Path, make_model: Callable[..., nn.Module]) -> Callable[..., Path]:
    """``make_checkpoint("fcn8s", width=0.125)`` → path of an fcn-deploy checkpoint of a random
    net."""

    def make(
        variant: str = "fcn8s",
        width: float = 0.125,
        num_classes: int = 21,
        seed: int = 0,
        **kw: object,
    ) -> Path:
        path = tmp_path / f"{variant}-w{width}-s{seed}.pt"
        fcn_deploy.save_checkpoint(make_model(variant, width, num_classes, seed), path, **kw)  # type: ignore[arg-type]
        return path

    return make
