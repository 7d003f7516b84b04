"""``torch-compile``: what a PyTorch user would try instead of exporting.

The eager net (FP32; ``torch-compile-fp16``: the FP16 one of ``torch-fp16``) through
``torch.compile`` with the inductor backend and dynamic shapes. Compiling is
the cost a user pays before the first answer and again whenever a new input shape makes dynamo
recompile, so both are recorded: every graph compilation is timed through a counting backend
around inductor, and the totals go to the benchmark's notes.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from ..runtime.torch_runner import TorchRunner

__all__ = ["CompiledTorchRunner"]


class CompiledTorchRunner(TorchRunner):
    """The eager net (FP32, or FP16 as `TorchRunner` runs it) compiled by inductor
    (``dynamic=True``); ``stats`` records compiles."""

    backend = "torch-compile"

    def __init__(
        self,
        model: nn.Module,
        device: str | None = None,
        stats: dict[str, Any] | None = None,
        precision: str = "fp32",
    ) -> None:
        super().__init__(model, device=device, precision=precision)
        self.stats: dict[str, Any] = stats if stats is not None else {}
        self.stats.update(compilations=0, compile_s=0.0, shapes=[])
        from torch._inductor.compile_fx import compile_fx

        def counting_inductor(gm: torch.fx.GraphModule, inputs: list[Any]) -> Any:
            t0 = time.perf_counter()
            compiled = compile_fx(gm, inputs)
            self.stats["compilations"] += 1
            self.stats["compile_s"] += time.perf_counter() - t0
            return compiled

        assert self.model is not None
        self.model = torch.compile(self.model, backend=counting_inductor, dynamic=True)  # type: ignore[assignment]

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        shape = f"{x.shape[0]}x{x.shape[2]}x{x.shape[3]}"
        if shape not in self.stats["shapes"]:
            self.stats["shapes"].append(shape)
        return super()._infer(x)
