"""TorchRunner: the caller's module is never changed, and FP16 keeps the exporter's FP32 islands."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from fcn_deploy.export import export_onnx, synthetic_images
from fcn_deploy.runtime.torch_runner import TorchRunner

CUDA = torch.cuda.is_available()


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _boost(model: torch.nn.Module, layer: str = "fc7", scale: float = 300.0) -> torch.nn.Module:
    """Real weights push some activations towards FP16's range; here one layer does."""
    with torch.no_grad():
        model.get_submodule(layer).weight.mul_(scale)
    return model


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_the_callers_module_is_not_changed(make_model: Any, precision: str) -> None:
    model = make_model("fcn8s", width=0.0625)
    before = _state(model)
    runner = TorchRunner(model, device="cpu", precision=precision)
    for name, p in model.state_dict().items():
        assert p.dtype == torch.float32 and p.is_contiguous(), name
        assert torch.equal(p, before[name]), name
    assert runner.model is not None
    ours = {p.data_ptr() for p in runner.model.parameters()}
    assert ours.isdisjoint(p.data_ptr() for p in model.parameters())  # no storage shared
    runner.close()
    assert runner.model is None


@pytest.mark.slow
def test_fp16_keeps_the_same_layers_in_fp32_as_the_export(make_model: Any, tmp_path: Any) -> None:
    model = _boost(make_model("fcn32s", width=0.0625))
    report = export_onnx(
        model, tmp_path / "m.onnx", precision="fp16", max_size=(256, 256), verify=False,
        progress=False,
    )  # fmt: skip
    runner = TorchRunner(model, device="cpu", precision="fp16")
    assert runner.fp32_layers == report.fp32_layers and "fc7" in runner.fp32_layers
    assert runner.model is not None
    fc7 = runner.model.get_submodule("net.fc7")
    assert next(fc7.parameters()).dtype == torch.float32  # the island
    assert next(runner.model.get_submodule("net.fc6").parameters()).dtype == torch.float16


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (eager FP16)")
def test_fp16_on_the_gpu_agrees_and_frees_its_memory(make_model: Any) -> None:
    model = _boost(make_model("fcn8s", width=0.125))
    x = torch.from_numpy(
        model.info.preprocessing.apply(synthetic_images(2, 160, 192, np.random.default_rng(0)))
    )
    with torch.inference_mode():
        ref = model(x)
    warm = TorchRunner(model, device="cuda", precision="fp16")  # cuBLAS/cuDNN workspaces: once
    warm.infer(x.cuda())
    warm.close()
    del warm
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    runner = TorchRunner(model, device="cuda", precision="fp16")
    out = runner.infer(x.cuda())
    assert out.is_cuda and bool(torch.isfinite(out).all())
    assert (out.cpu().argmax(1) == ref.argmax(1)).float().mean() >= 0.98
    assert next(model.parameters()).device.type == "cpu"  # the caller's net stayed where it was
    held = sum(p.numel() * p.element_size() for p in runner.model.parameters())
    runner.close()
    del out
    # freed, give or take a workspace the library allocates on its own: far less than the net
    tolerance = 1 << 20
    assert held > 2 * tolerance
    assert torch.cuda.memory_allocated() - baseline <= tolerance
