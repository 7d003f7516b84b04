"""Eager PyTorch: the reference every other backend is compared with."""

from __future__ import annotations

import copy
import logging
import os

import torch
from torch import nn

from ..checkpoint import load_model
from ..errors import FCNError
from ..export.graph import DeployModule, probe_fp16_plan
from .base import Runner, resolve_device

__all__ = ["TorchRunner"]

log = logging.getLogger(__name__)


class TorchRunner(Runner):
    """Eager PyTorch in FP32, or FP16 with channels_last (GPU). Tensor I/O, no size bounds.

    A module passed in is copied, never changed: the runner owns its device copy (freed by
    ``close``). FP16 keeps the layers whose activations come near FP16's range in FP32, the same
    layers, by the same measurement, as the FP16 ONNX export (``fp32_layers``).
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
        dtype = torch.float16 if precision == "fp16" else torch.float32
        super().__init__(module.info, "tensor", precision, device=dev, input_dtype=dtype)  # type: ignore[arg-type]
        self.fp32_layers: list[str] = []
        if precision == "fp16":
            plan = probe_fp16_plan(module, dev)
            self.fp32_layers = list(plan.fp32_layers)
            if self.fp32_layers:
                log.info(
                    "FP16: keeping %s in FP32 (near or past FP16's range)",
                    ", ".join(self.fp32_layers),
                )
            half = DeployModule(module, "fp16", fp16_io=True, plan=plan)
            del module  # the FP32 copy: only the half one stays on the device
            # tensor cores want NHWC (Module.to takes memory_format; its type stubs don't say so)
            module = half.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model: nn.Module | None = module

    @torch.inference_mode()
    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        if self.model is None:
            raise FCNError("this runner was closed")
        if self.precision == "fp16":
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x).float()

    def close(self) -> None:
        self.model = None
