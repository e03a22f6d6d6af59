"""A second look at the lesion: a classifier on a crop of the input around the predicted lesion, at full resolution.

The multi-task networks segment and classify at one input size (128² on a CPU budget), where a breast lesion spans
30-60 pixels and the irregular margin that separates malignant from benign lesions (BENCHMARKS.md: the annotated
outline's solidity alone gives AUC 0.90 on unseen scanners) is a pixel or two wide. ``LesionCropNet`` takes a larger
input (e.g. 256²), runs the multi-task network on it downsampled (the same cost as before), and adds the logits of a
small classifier that reads a square crop of the full-size input (and of the predicted lesion probability) around
the predicted lesion: the two-stage "segment, then classify the region of interest" design of many breast ultrasound
classifiers, trained end to end in one network. Measured on BUS-BRA at the 20-minute CPU budget (BENCHMARKS.md,
"Levers for the outline's fidelity and the lesion's margin"): worse than the default on other scanners and no
better in-domain, so not the bundle's default.

The crop is cut with ``torch.nn.functional.affine_grid``/``grid_sample`` (a per-image box as an affine map), so the
network stays one traceable graph (TorchScript, ONNX); torchvision's ``roi_align`` would do the same with one more
dependency.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.networks.nets import ResNet
from torch import nn

from pipeline.keys import Head
from pipeline.networks.segresnet_mt import PAPER, SegResNetShared
from pipeline.networks.utils import SIZE_MULTIPLE, check_input, lesion_probability
from pipeline.registry import register_network

__all__ = ["LesionCropNet", "lesion_boxes", "crop_boxes", "CROP_ARGUMENTS"]


def lesion_boxes(prob: torch.Tensor, context: float, min_side: float) -> torch.Tensor:
    """Square boxes around the predicted lesions, ``(B, 4)``: centre x, centre y, half-width, half-height in the
    normalised coordinates of ``affine_grid`` ([-1, 1] across the image, ``align_corners=False``).

    The box is the bounding box of ``prob > 0.5``, made square in pixels (the lesion's own aspect ratio survives in
    the crop) and widened by ``context`` on each side (the margin and the tissue around it); an image without a
    predicted lesion gets the whole image. Tensor operations only, so that tracing keeps the data dependence.

    Args:
        prob: ``(B, 1, H, W)`` lesion probability.
        context: the fraction of the lesion's longer side added on each side.
        min_side: the smallest box side in pixels.
    """
    height, width = prob.shape[-2:]
    mask = prob[:, 0] > 0.5
    boxes = []
    for axis, size in ((-2, width), (-1, height)):   # columns (x), then rows (y)
        present = mask.any(dim=axis)   # (B, size)
        index = torch.arange(size, device=prob.device, dtype=prob.dtype)
        low = torch.where(present, index, torch.full_like(index, float(size))).amin(dim=-1)
        high = torch.where(present, index, torch.full_like(index, -1.0)).amax(dim=-1)
        boxes.append((low, high + 1.0))   # pixel edges of the extent
    (x0, x1), (y0, y1) = boxes
    found = mask.flatten(1).any(dim=1)
    side = torch.maximum(x1 - x0, y1 - y0) * (1.0 + 2.0 * context)
    side = side.clamp(min=min_side)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    whole = torch.ones_like(cx)
    # pixel edges [0, size] -> [-1, 1]
    return torch.stack([
        torch.where(found, cx / width * 2 - 1, torch.zeros_like(cx)),
        torch.where(found, cy / height * 2 - 1, torch.zeros_like(cy)),
        torch.where(found, side / width, whole),
        torch.where(found, side / height, whole),
    ], dim=1)


def crop_boxes(source: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, C, size, size)`` bilinear crops of ``source`` ``(B, C, H, W)`` at ``boxes`` (``lesion_boxes``); outside
    the image reads 0."""
    cx, cy, hx, hy = boxes.unbind(dim=1)
    zeros = torch.zeros_like(cx)
    theta = torch.stack([torch.stack([hx, zeros, cx], dim=1), torch.stack([zeros, hy, cy], dim=1)], dim=1)
    grid = F.affine_grid(theta.float(), [source.shape[0], source.shape[1], size, size], align_corners=False)
    return F.grid_sample(source.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class LesionCropNet(nn.Module):
    """A multi-task network run at ``seg_scale`` of the input, plus a classifier on the lesion crop at full size.

    ``seg`` is the network's lesion logits resized (bilinear) to the input size; ``cls`` is the sum of the network's
    class logits and those of a MONAI ``ResNet`` (basic blocks, one per level) that reads the input and the predicted
    lesion probability cropped around the lesion (``lesion_boxes``, resampled to ``crop_size``²). The crop follows
    the detached probability: the classification gradient reaches the segmentation through the network's own
    classifier only.

    Auxiliary classification heads (``pipeline.networks.auxiliary``) read the features of the crop classifier, the
    last linear layer with ``num_classes`` outputs.

    Args:
        network: a multi-task network returning ``{seg, cls}`` logits for an input of ``in_channels``.
        in_channels: image channels.
        num_classes: class logits.
        seg_channels: lesion logit channels of ``network``.
        seg_scale: the network's input size as a fraction of this one's (rounded up to a multiple of 32).
        crop_size: side of the crop the crop classifier reads.
        context: tissue around the lesion in the crop, a fraction of the lesion's longer side on each side.
        crop_filters: channels of the crop classifier's first level (doubled at each of its 4 levels).
        crop_image: the crop classifier reads the image and the lesion probability; ``False``: the probability only
            (the predicted outline's shape, none of the scanner's grey levels).

    Raises:
        ValueError: an argument out of range (the message names it).
    """

    def __init__(
        self,
        network: nn.Module,
        in_channels: int,
        num_classes: int,
        seg_channels: int = 1,
        seg_scale: float = 0.5,
        crop_size: int = 96,
        context: float = 0.25,
        crop_filters: int = 16,
        crop_image: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 < float(seg_scale) <= 1.0:
            raise ValueError(f"seg_scale must be in (0, 1], got {seg_scale!r}")
        if int(crop_size) != crop_size or crop_size < 32:
            raise ValueError(f"crop_size must be an integer >= 32, got {crop_size!r}")
        if not 0.0 <= float(context) <= 1.0:
            raise ValueError(f"context must be in [0, 1], got {context!r}")
        if int(crop_filters) != crop_filters or crop_filters < 4:
            raise ValueError(f"crop_filters must be an integer >= 4, got {crop_filters!r}")
        self.network = network
        self.in_channels, self.num_classes, self.seg_channels = int(in_channels), int(num_classes), int(seg_channels)
        self.seg_scale, self.crop_size, self.context = float(seg_scale), int(crop_size), float(context)
        self.crop_image = bool(crop_image)
        self.crop_classifier = ResNet(
            "basic", [1, 1, 1, 1], [crop_filters * 2**i for i in range(4)], spatial_dims=2,
            n_input_channels=self.in_channels + 1 if self.crop_image else 1, conv1_t_size=7, conv1_t_stride=2,
            num_classes=self.num_classes,
        )

    @property
    def unaligned_modules(self) -> tuple[nn.Module, ...]:
        """Modules whose feature maps are in the crop's coordinates, not the image's (Grad-CAM leaves them out)."""
        return (self.crop_classifier,)

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """The multi-task network's input size for an input of ``height`` x ``width``."""
        return tuple(max(SIZE_MULTIPLE, math.ceil(s * self.seg_scale / SIZE_MULTIPLE) * SIZE_MULTIPLE)
                     for s in (height, width))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_input(x, self.in_channels)
        size = tuple(x.shape[-2:])
        small = F.interpolate(x, size=self.network_size(*size), mode="bilinear", antialias=True, align_corners=False)
        out = self.network(small)
        seg = F.interpolate(out[Head.SEG.value].float(), size=size, mode="bilinear", align_corners=False)
        prob = lesion_probability(seg, self.seg_channels).detach()
        source = torch.cat([x, prob.to(x.dtype)], dim=1) if self.crop_image else prob
        crop = crop_boxes(source, lesion_boxes(prob, self.context, 8.0), self.crop_size)
        cls = out[Head.CLS.value].float() + self.crop_classifier(crop.to(x.dtype)).float()
        return {**out, Head.SEG.value: seg, Head.CLS.value: cls}


# LesionCropNet's own arguments; every other keyword of the builder goes to segresnet_shared
CROP_ARGUMENTS = ("seg_scale", "crop_size", "context", "crop_filters", "crop_image")


@register_network("segresnet_shared_crop", paper=f"{PAPER}, with a lesion-crop classifier (ours)")
def segresnet_shared_crop(in_channels: int = 1, seg_channels: int = 1, num_classes: int = 2, **kwargs) -> LesionCropNet:
    """``segresnet_shared`` (its keyword arguments, e.g. ``classifier_features="decoder"``) inside a
    :class:`LesionCropNet` (``CROP_ARGUMENTS``, its defaults where not given)."""
    crop = {name: kwargs.pop(name) for name in CROP_ARGUMENTS if name in kwargs}
    network = SegResNetShared(in_channels=in_channels, seg_channels=seg_channels, num_classes=num_classes, **kwargs)
    return LesionCropNet(network, in_channels, num_classes, seg_channels, **crop)
