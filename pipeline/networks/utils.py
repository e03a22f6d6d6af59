"""Argument and input checks, and settings, shared by the registered networks."""

from __future__ import annotations

import torch

__all__ = ["check_common_args", "check_input", "lesion_probability", "SIZE_MULTIPLE", "EFFNET_BN_MOMENTUM"]

# Every network downsamples at most 5 times (32x): inputs must have H and W divisible by it.
SIZE_MULTIPLE = 32

# EfficientNet batch norms use PyTorch's default momentum (as timm does), not TF's 0.01 (MONAI's EfficientNet):
# at 0.01 the running statistics lag the weights by ~100 steps, and after 1-3 epochs on BUS-BRA's 1,500 images the
# eval-mode classifiers gave one output for every image (AUC 0.49-0.57); re-estimating the statistics of the same
# weights gave AUC 0.60-0.74 (BENCHMARKS.md, "Batch-norm momentum").
EFFNET_BN_MOMENTUM = 0.1


def check_common_args(in_channels: int, seg_channels: int, num_classes: int, dropout: float) -> None:
    """Validate the constructor arguments every network shares.

    Raises:
        ValueError: naming the argument that is out of range.
    """
    if not 1 <= int(in_channels) <= 3 or int(in_channels) != in_channels:
        raise ValueError(f"in_channels must be an integer in 1..3, got {in_channels!r}")
    if int(seg_channels) < 1 or int(seg_channels) != seg_channels:
        raise ValueError(f"seg_channels must be a positive integer, got {seg_channels!r}")
    if int(num_classes) not in (2, 3) or int(num_classes) != num_classes:
        raise ValueError(f"num_classes must be 2 or 3, got {num_classes!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")


def check_input(x: torch.Tensor, in_channels: int, multiple: int = SIZE_MULTIPLE) -> None:
    """Check that ``x`` is ``(B, in_channels, H, W)`` with H and W divisible by ``multiple``.

    Raises:
        ValueError: describing the expected and the received shape.
    """
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(f"expected input of shape (B, {in_channels}, H, W), got {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        raise ValueError(
            f"input height and width must be divisible by {multiple}, got {h}x{w}; pad the image "
            f"(e.g. monai.transforms.DivisiblePad(k={multiple})) or resize it"
        )


def lesion_probability(seg_logits: torch.Tensor, seg_channels: int | None = None) -> torch.Tensor:
    """Lesion probability ``(B, 1, H, W)`` from segmentation logits ``(B, S, H, W)``: the sigmoid of the one channel
    when ``S == 1``; else ``1 - softmax(.)[background]`` with the background first (any non-background class is
    lesion). The one definition every network, the engines and ``bmtl predict`` use.

    Args:
        seg_logits: ``(B, S, H, W)`` logits.
        seg_channels: ``S`` as a Python int (networks pass it so that a traced graph has no shape-dependent branch);
            ``None``: read from ``seg_logits``.
    """
    channels = seg_logits.shape[1] if seg_channels is None else seg_channels
    if channels == 1:
        return torch.sigmoid(seg_logits)
    return 1.0 - torch.softmax(seg_logits, dim=1)[:, :1]
