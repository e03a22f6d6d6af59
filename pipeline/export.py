"""Export of two-head networks: a wrapper returning ``(seg, cls)`` that TorchScript and ONNX can trace."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.keys import Head

__all__ = ["ExportWrapper"]


class ExportWrapper(nn.Module):
    """Wrap a registered network so that it returns the tuple ``(seg_logits, cls_logits)``.

    TorchScript tracing, ONNX export and MONAI's ``verify_net_in_out`` expect tensors, not a dict; auxiliary outputs
    (deep supervision, coarse regions) are training-only and are dropped.

    Args:
        network: a network following the zoo contract (returns a dict with ``"seg"`` and ``"cls"``).
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.network(x)
        return out[Head.SEG.value], out[Head.CLS.value]
