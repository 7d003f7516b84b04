"""Eager PyTorch: the reference every other backend is compared with."""

from __future__ import annotations

import copy
import logging
import os

import torch
from torch import nn

from ..checkpoint import load_model
from ..errors import FCNError
from ..export.graph import DeployModule, Fp16Plan, probe_fp16_plan
from .base import Runner, resolve_device

__all__ = ["TorchRunner"]

log = logging.getLogger(__name__)


class TorchRunner(Runner):
    """Eager PyTorch in FP32, or FP16 with channels_last (GPU). Tensor I/O, no size bounds.

    A module passed in is copied, never changed: the runner owns its device copy (freed by
    ``close``). It runs the net the exports run (`DeployModule`): upsampling whose kernels are
    diagonal runs depthwise, and FP16 keeps the layers whose activations come near FP16's range
    in FP32, the same layers, by the same measurement, as the FP16 ONNX export (``fp32_layers``).
    Like the FP16 exports and engines, FP16 takes FP32 input and returns FP32 logits, casting
    inside the call; its input is made channels_last (tensor cores want NHWC) in `check_input`,
    so a benchmark times the same work for every backend.
    """

    backend = "torch"

    def __init__(
        self,
        model: nn.Module | str | os.PathLike[str],
        device: str | None = None,
        precision: str = "fp32",
        variant: str | None = None,
    ) -> None:
        if precision not in ("fp32", "fp16"):
            raise FCNError(f"torch backend precision must be fp32 or fp16, got {precision!r}")
        dev = resolve_device(device)
        if isinstance(model, nn.Module):
            module = copy.deepcopy(model).to(dev)  # Module.to moves in place: copy first
        else:
            module = load_model(model, variant=variant).to(dev)
        module = module.eval().float()
        super().__init__(module.info, "tensor", precision, device=dev)  # type: ignore[arg-type]
        self.fp32_layers: list[str] = []
        plan = Fp16Plan()
        if precision == "fp16":
            plan = probe_fp16_plan(module)  # on the CPU, as the FP16 export measures it
            self.fp32_layers = list(plan.fp32_layers)
            if self.fp32_layers:
                log.info(
                    "FP16: keeping %s in FP32 (near or past FP16's range)",
                    ", ".join(self.fp32_layers),
                )
            self.memory_format = torch.channels_last
        deploy = DeployModule(module, precision, plan=plan)
        del module  # the FP32 copy: only the one that runs stays on the device
        # Module.to takes memory_format (its type stubs don't say so)
        self.model: nn.Module | None = deploy.to(memory_format=self.memory_format)  # type: ignore[call-overload]

    @torch.inference_mode()
    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        if self.model is None:
            raise FCNError("this runner was closed")
        return self.model(x)  # FP32 logits: DeployModule casts FP16 ones back

    def close(self) -> None:
        self.model = None
