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


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (pinned host memory)")
def test_a_pinned_input_may_be_refilled_as_soon_as_infer_returns(make_model: Any) -> None:
    """A non-blocking copy from pinned memory would still be reading the buffer when infer
    returned; the runner copies pinned inputs blocking (`non_blocking_copy`)."""
    model = make_model("fcn8s", width=0.125)
    runner = TorchRunner(model, device="cuda")
    images = synthetic_images(4, 256, 320, np.random.default_rng(1))
    x = torch.from_numpy(model.info.preprocessing.apply(images))
    expected = runner.infer(x).cpu()
    pinned = x.pin_memory()
    outs = []
    for _ in range(5):
        pinned.copy_(x)
        outs.append(runner.infer(pinned))
        pinned.fill_(1e4)  # the next batch, written at once
    for out in outs:
        torch.testing.assert_close(out.cpu(), expected, rtol=0, atol=1e-3)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_every_precision_times_the_work_the_exports_do(make_model: Any, precision: str) -> None:
    """Like for like with the exports and engines: depthwise upsampling (dense FP32 deconvolutions
    did 21× the work), FP32 in and out with the casts inside the call (as an FP16 graph with FP32
    I/O), and the input's layout settled in `check_input`, outside any timed call (FP16 made a
    channels_last copy inside it)."""
    model = make_model("fcn8s", width=0.0625)
    runner = TorchRunner(model, device="cpu", precision=precision)
    assert runner.model is not None and runner.input_dtype == torch.float32
    assert runner.model.get_submodule("net.upscore8").groups == 21
    x = torch.from_numpy(
        model.info.preprocessing.apply(synthetic_images(1, 48, 64, np.random.default_rng(0)))
    )
    ready = runner.check_input(x)
    layout = torch.channels_last if precision == "fp16" else torch.contiguous_format
    assert ready.dtype == torch.float32 and ready.is_contiguous(memory_format=layout)
    assert runner.check_input(ready) is ready  # Runner.infer checks again: nothing left to do
    out = runner.infer(ready)
    assert out.dtype == torch.float32 and out.shape == (1, 21, 48, 64)
    with torch.inference_mode():
        ref = model(x)
    if precision == "fp32":
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)
    else:
        assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.98
