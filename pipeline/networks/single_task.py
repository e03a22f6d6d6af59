"""Single-task baselines for the benchmark: a segmentation-only SegResNet and a classification-only EfficientNet.

They are the two halves of ``segresnet_effnet_parallel`` trained alone, so "does multi-task learning help?" is
answered with the same building blocks: the SegResNet of every ``segresnet_*`` network and the EfficientNet-B0 of
:class:`~pipeline.networks.efficientnet.EfficientNetClassifier`.

Both return the zoo's dict with both heads, so the stock bundle trains, evaluates and exports them unchanged; the
head they do not learn is a constant with no parameters (uniform class logits; lesion logits of -10, an empty mask).
Their presets give that head a loss weight of 0 and ``pipeline.registry.network_info(name).tasks`` names the task
they learn, so reports leave the other task's metrics blank instead of printing chance-level numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pipeline.keys import Head
from pipeline.networks.efficientnet import build_efficientnet_classifier
from pipeline.networks.segresnet_mt import _SegResNetMultiTask
from pipeline.networks.utils import check_common_args, check_input
from pipeline.registry import register_network

__all__ = ["SegResNetSegOnly", "EfficientNetClsOnly", "EMPTY_MASK_LOGIT"]

EMPTY_MASK_LOGIT = -10.0  # sigmoid(-10) = 4.5e-5: below any sensible threshold, finite for the losses


@register_network("segresnet_seg_only", paper="baseline: MONAI SegResNet, segmentation only", tasks=("seg",))
class SegResNetSegOnly(_SegResNetMultiTask):
    """MONAI SegResNet trained for segmentation alone; ``cls`` is constant zero logits (no prediction).

    Args:
        in_channels: image channels (1-3).
        seg_channels: segmentation logit channels (1: lesion, sigmoid; 2: background + lesion, softmax).
        num_classes: width of the constant ``cls`` output (2 or 3).
        init_filters: SegResNet width, a multiple of 8.
        dropout: checked like every network's; unused (no classifier).
        blocks_down: residual blocks per encoder level (MONAI default ``(1, 2, 2, 4)``).
        blocks_up: residual blocks per decoder level; ``None``: one each.
        seg_dropout: SegResNet's own ``dropout_prob``; ``None``: off.

    Raises:
        ValueError: an argument out of range (the message names it).
    """

    def __init__(
        self,
        in_channels: int = 1,
        seg_channels: int = 1,
        num_classes: int = 2,
        init_filters: int = 16,
        dropout: float = 0.0,
        blocks_down: Sequence[int] = (1, 2, 2, 4),
        blocks_up: Sequence[int] | None = None,
        seg_dropout: float | None = None,
    ) -> None:
        super().__init__(
            in_channels, seg_channels, num_classes, init_filters, dropout, blocks_down, blocks_up, seg_dropout
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_input(x, self.in_channels)
        return {Head.SEG.value: self.segresnet(x), Head.CLS.value: x.new_zeros(x.shape[0], self.num_classes)}


@register_network("efficientnet_cls_only", paper="baseline: EfficientNet-B0, classification only", tasks=("cls",))
class EfficientNetClsOnly(nn.Module):
    """EfficientNet-B0 (MONAI MBConv blocks) trained for classification alone; ``seg`` is a constant empty mask.

    Args:
        in_channels: image channels (1-3).
        seg_channels: channels of the constant ``seg`` output.
        num_classes: classification logits (2 or 3).
        init_filters: width as in the other networks: EfficientNet width coefficient ``init_filters / 16`` (16: B0).
        dropout: dropout before the linear layer (B0: 0.2).
        effnet_width: EfficientNet width coefficient; ``None``: ``init_filters / 16``.
        effnet_depth: EfficientNet depth coefficient.
        drop_connect_rate: EfficientNet stochastic-depth rate.

    Raises:
        ValueError: an argument out of range (the message names it).
    """

    def __init__(
        self,
        in_channels: int = 1,
        seg_channels: int = 1,
        num_classes: int = 2,
        init_filters: int = 16,
        dropout: float = 0.2,
        effnet_width: float | None = None,
        effnet_depth: float = 1.0,
        drop_connect_rate: float = 0.2,
    ) -> None:
        super().__init__()
        check_common_args(in_channels, seg_channels, num_classes, dropout)
        if int(init_filters) != init_filters or init_filters < 8 or init_filters % 8:
            raise ValueError(f"init_filters must be a positive multiple of 8, got {init_filters!r}")
        self.in_channels, self.seg_channels, self.num_classes = int(in_channels), int(seg_channels), int(num_classes)
        self.classifier = build_efficientnet_classifier(
            self.in_channels, self.num_classes, 1, int(init_filters), dropout, effnet_width, effnet_depth,
            drop_connect_rate,
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_input(x, self.in_channels)
        seg = x.new_full((x.shape[0], self.seg_channels, x.shape[2], x.shape[3]), EMPTY_MASK_LOGIT)
        return {Head.SEG.value: seg, Head.CLS.value: self.classifier(x)}
