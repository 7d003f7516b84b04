"""Eager PyTorch: the reference every other backend is compared with."""

from __future__ import annotations

import os

import torch
from torch import nn

from ..checkpoint import load_model
from ..errors import FCNError
from .base import Runner, resolve_device

__all__ = ["TorchRunner"]


class TorchRunner(Runner):
    """Eager PyTorch in FP32, or FP16 with channels_last (GPU). Tensor I/O, no size bounds."""

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
        module = model if isinstance(model, nn.Module) else load_model(model, variant=variant)
        dev = resolve_device(device)
        dtype = torch.float16 if precision == "fp16" else torch.float32
        super().__init__(module.info, "tensor", precision, device=dev, input_dtype=dtype)  # type: ignore[arg-type]
        module = module.eval().to(dev, dtype)
        if precision == "fp16":
            # tensor cores want NHWC (Module.to takes memory_format; its type stubs don't say so)
            module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
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
