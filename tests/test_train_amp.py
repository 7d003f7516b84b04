"""Mixed-precision training keeps the layers near FP16's range in FP32 (the export's decision)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from fcn_deploy.export.graph import probe_fp16_plan
from fcn_train.loop import keep_in_fp32


def _half_autocast(device: str) -> Any:
    # CPU autocast computes in bfloat16; CUDA in float16 (what the trainer uses)
    return torch.autocast(device, dtype=torch.bfloat16 if device == "cpu" else torch.float16)


def _run(model: torch.nn.Module, device: str) -> dict[str, torch.dtype]:
    seen: dict[str, torch.dtype] = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, out, n=n: seen.__setitem__(n, out.dtype))
        for n, m in model.named_modules()
        if n in ("fc6", "fc7", "score_fr")
    ]
    x = torch.randn(1, 3, 64, 64, device=device)
    with _half_autocast(device):
        out = model(x)
    out.float().sum().backward()  # gradients flow through the FP32 layer
    for h in hooks:
        h.remove()
    return seen


def test_kept_layers_run_in_fp32_under_autocast(make_model: Any) -> None:
    model = make_model("fcn32s", width=0.0625).train()
    keys = list(model.state_dict())
    assert keep_in_fp32(model, ["fc7"]) == ["fc7"]
    assert list(model.state_dict()) == keys  # checkpoints keep the models' format
    seen = _run(model, "cpu")
    assert seen["fc7"] == torch.float32 and seen["fc6"] == torch.bfloat16
    assert model.fc7.weight.grad is not None
    twin = copy.deepcopy(model)  # DDP and the trainer's copies keep the behaviour
    assert _run(twin, "cpu")["fc7"] == torch.float32


def test_the_decision_is_the_exporters(make_model: Any) -> None:
    model = make_model("fcn8s", width=0.125)
    with torch.no_grad():
        model.fc7.weight.mul_(1000.0)
    plan = probe_fp16_plan(model)
    # past FP16's range from fc7 to the logits: every layer on the way stays FP32, so autocast
    # never casts fc7's FP32 output back to FP16 for the next convolution
    assert {"fc7", "score_fr", "upscore2", "upscore_pool4", "upscore8"} <= set(plan.fp32_layers)
    keep_in_fp32(model, list(plan.fp32_layers))
    seen: dict[str, torch.dtype] = {}
    hooks = [
        model.get_submodule(n).register_forward_hook(
            lambda _m, args, _o, n=n: seen.__setitem__(n, args[0].dtype)
        )
        for n in plan.fp32_layers
    ]
    with _half_autocast("cpu"), torch.no_grad():
        out = model.eval()(torch.randn(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    assert torch.isfinite(out).all() and out.dtype == torch.float32
    # every kept layer after fc7 is handed FP32, not an autocast copy in half precision
    assert {n: seen[n] for n in plan.fp32_layers if n != "fc7"} == {
        n: torch.float32 for n in plan.fp32_layers if n != "fc7"
    }


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (FP16 autocast)")
def test_kept_layers_under_cuda_autocast(make_model: Any) -> None:
    model = make_model("fcn32s", width=0.0625).cuda().train()
    keep_in_fp32(model, ["fc7"])
    seen = _run(model, "cuda")
    assert seen["fc7"] == torch.float32 and seen["fc6"] == torch.float16


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (AMP training)")
def test_amp_training_runs_and_resumes_on_the_gpu(tmp_path: Any) -> None:
    from fcn_train.config import TrainConfig
    from fcn_train.loop import train

    tiny: dict[str, Any] = dict(
        data="synthetic", variant="fcn8s", width=0.0625, batch_size=2, val_images=4,
        device="cuda", val_every=3,
    )  # fmt: skip
    first = train(TrainConfig(out=str(tmp_path), iterations=3, **tiny))
    assert first.iteration == 3 and first.stopped is None and first.scores
    again = train(TrainConfig(out=str(tmp_path), iterations=4, **tiny), resume=first.last)
    assert again.iteration == 4
