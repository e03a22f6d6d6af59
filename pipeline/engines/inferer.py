"""``MultiTaskInferer``: sliding-window segmentation at native resolution plus whole-image classification."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import Inferer, SlidingWindowInferer
from torch.nn import functional as F

from pipeline.keys import Head

__all__ = ["MultiTaskInferer"]


class MultiTaskInferer(Inferer):
    """Run a two-head network on images that may be larger than the training size.

    An image no larger than ``roi_size`` takes one forward pass (padded to ``roi_size`` when smaller, so the
    size contract holds, and cropped back). A larger image is segmented with MONAI's ``SlidingWindowInferer`` over
    ``roi_size`` tiles — which only blends spatial outputs, so it sees the segmentation head alone — and classified
    in a second pass on the whole image resized (area interpolation) to ``roi_size``, the size the classifier was
    trained at.

    Args:
        roi_size: the training size ``(H, W)``.
        sw_batch_size: tiles per forward pass.
        overlap: tile overlap fraction.
        mode: blending of overlapping tiles, ``"gaussian"`` or ``"constant"``.
        flip_tta: test-time augmentation: also run on the left-right flipped image and average both heads' logits
            (the flipped segmentation flipped back). Left-right is the flip the training augmentation uses.

    Raises:
        ValueError: ``roi_size`` is not two positive integers.
    """

    def __init__(
        self,
        roi_size: Sequence[int],
        sw_batch_size: int = 4,
        overlap: float = 0.25,
        mode: str = "gaussian",
        flip_tta: bool = False,
    ) -> None:
        super().__init__()
        roi = tuple(int(s) for s in roi_size)
        if len(roi) != 2 or min(roi) < 1:
            raise ValueError(f"roi_size must be two positive integers (H, W), got {roi_size!r}")
        self.roi_size = roi
        self.sliding = SlidingWindowInferer(roi_size=roi, sw_batch_size=sw_batch_size, overlap=overlap, mode=mode)
        self.flip_tta = bool(flip_tta)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> dict:
        out = self._infer(inputs, network, *args, **kwargs)
        if not self.flip_tta:
            return out
        flipped = self._infer(torch.flip(inputs, dims=(-1,)), network, *args, **kwargs)
        seg, cls = Head.SEG.value, Head.CLS.value
        out[seg] = (out[seg] + torch.flip(flipped[seg], dims=(-1,))) / 2
        out[cls] = (out[cls] + flipped[cls]) / 2
        return out

    def _infer(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> dict:
        h, w = inputs.shape[-2:]
        roi_h, roi_w = self.roi_size
        if h <= roi_h and w <= roi_w:
            padded = F.pad(inputs, (0, roi_w - w, 0, roi_h - h)) if (h, w) != self.roi_size else inputs
            out = dict(network(padded, *args, **kwargs))
            out[Head.SEG.value] = out[Head.SEG.value][..., :h, :w]
            return out
        seg = self.sliding(inputs, lambda x: network(x, *args, **kwargs)[Head.SEG.value])
        whole = F.interpolate(torch.as_tensor(inputs), size=self.roi_size, mode="area")
        cls = network(whole, *args, **kwargs)[Head.CLS.value]
        return {Head.SEG.value: seg, Head.CLS.value: cls}
