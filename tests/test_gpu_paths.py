"""The CUDA paths that need no TensorRT: eager PyTorch FP16 and the default device, on a real GPU.

Skipped with the reason where torch sees no CUDA GPU; `scripts/gpu-check.sh` runs them (with
every other ``gpu`` test) on any machine that has one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fcn_deploy.export import synthetic_images
from fcn_deploy.runtime import resolve_device, same_device
from fcn_deploy.runtime.torch_runner import TorchRunner

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU: torch sees none here"),
]


def test_default_device_is_indexed_and_accepts_torch_cuda_tensors():
    dev = resolve_device(None)
    assert dev.type == "cuda" and dev.index == torch.cuda.current_device()
    assert same_device(torch.zeros(1, device="cuda").device, dev)
    assert resolve_device("cuda") == dev


def test_fp16_eager_torch_agrees_with_fp32(make_model):
    model = make_model("fcn8s", width=0.125)
    x = torch.from_numpy(
        model.info.preprocessing.apply(synthetic_images(2, 97, 131, np.random.default_rng(0)))
    )
    with torch.inference_mode():
        ref = model(x).argmax(1)
    runner = TorchRunner(model, precision="fp16")  # default device: the current GPU
    assert runner.device.type == "cuda" and runner.device.index is not None
    out = runner.infer(x.cuda())  # a tensor already on cuda:N is taken as it is
    assert out.is_cuda and out.dtype == torch.float32 and out.shape == (2, 21, 97, 131)
    assert torch.isfinite(out).all()
    assert (out.argmax(1).cpu() == ref).float().mean() >= 0.99
