"""MTIL: multi-task interaction learning with self-task and cross-task attention and circle training (paper 001).

Zheng, Li, Qiao, Gao, "Multi-task interaction learning for accurate segmentation and classification of breast
tumors in ultrasound images", Phys. Med. Biol. 70 (2025), doi:10.1088/1361-6560/adae4d. Only the abstract is
available to us: the three ideas it names are implemented, their exact layout is our reading (see ``MTIL``).

Circle training (how a trainer runs it)::

    first, second = circle_forward(net, image)   # pass 1 without a map, pass 2 with sigmoid(pass-1 seg).detach()
    loss = 0.5 * (criterion(first, target) + criterion(second, target))
    # inference: use ``second`` (or ``first`` alone, which is what ``net(image)`` and the export wrapper return)

The bundles do the same through ``pipeline.engines.circle.CircleTraining`` (second pass as the prediction, first
pass's segmentation logits as an auxiliary output scored by ``MultiTaskLoss``).
"""

from __future__ import annotations

import torch
from monai.networks.blocks import ChannelSELayer, Convolution, ResidualUnit, UpSample
from torch import nn

from pipeline.keys import Head
from pipeline.networks.heads import ClassificationHead
from pipeline.networks.utils import check_common_args, check_input, lesion_probability
from pipeline.registry import register_network

__all__ = [
    "SpatialAttention",
    "ChannelGate",
    "TaskInteractionBlock",
    "FeatureAggregationBlock",
    "MTIL",
    "circle_forward",
]

_NORM = "batch"
_ACT = "relu"


class SpatialAttention(nn.Module):
    """Location attention map ``sigmoid(conv7x7([mean_c(x), max_c(x)]))`` of shape ``(B, 1, H, W)`` (CBAM style).

    Args:
        kernel_size: size of the convolution over the two pooled maps.
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = Convolution(2, 2, 1, kernel_size=kernel_size, conv_only=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))


class ChannelGate(nn.Module):
    """Semantic (channel) attention vector ``sigmoid(W2 relu(W1 avgpool(x)))`` of shape ``(B, C, 1, 1)``.

    The squeeze-and-excitation weights of MONAI's ``ChannelSELayer``, returned instead of applied, so that one branch
    can reweight the channels of the other.

    Args:
        channels: channels of ``x``.
        reduction: bottleneck reduction of the two 1x1 convolutions.
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.fc = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.mean(x, dim=(2, 3), keepdim=True))


class TaskInteractionBlock(nn.Module):
    """Self-task and cross-task attention between a segmentation and a classification feature map.

    With ``a_t`` the location (spatial) attention and ``g_t`` the semantic (channel) attention of task ``t``:

    - self-task: ``s_self = s * a_s * g_s`` and ``c_self = c * a_c * g_c``;
    - cross-task location: ``c_cross = c * a_s`` (where the segmentation branch looks guides the classifier);
    - cross-task semantic: ``s_cross = s * g_c`` (the classifier's channel attention reweights the segmentation
      channels);
    - fusion with a residual connection: ``s' = s + conv1x1([s_self, s_cross])``, ``c' = c + conv1x1([c_self,
      c_cross])`` (conv-BN-ReLU).

    Args:
        channels: channels of both feature maps (they must have the same shape).
        reduction: channel-gate reduction.
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.seg_location = SpatialAttention()
        self.cls_location = SpatialAttention()
        self.seg_semantic = ChannelGate(channels, reduction)
        self.cls_semantic = ChannelGate(channels, reduction)
        self.seg_fuse = Convolution(2, 2 * channels, channels, kernel_size=1, act=_ACT, norm=_NORM)
        self.cls_fuse = Convolution(2, 2 * channels, channels, kernel_size=1, act=_ACT, norm=_NORM)

    def forward(self, seg: torch.Tensor, cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a_s, a_c = self.seg_location(seg), self.cls_location(cls)
        g_s, g_c = self.seg_semantic(seg), self.cls_semantic(cls)
        seg_out = seg + self.seg_fuse(torch.cat([seg * a_s * g_s, seg * g_c], dim=1))
        cls_out = cls + self.cls_fuse(torch.cat([cls * a_c * g_c, cls * a_s], dim=1))
        return seg_out, cls_out


class FeatureAggregationBlock(nn.Module):
    """Decoder stage joining an upsampled decoder map and an encoder skip through channel attention.

    ``up = UpSample(x)``; ``z = SE([up, skip])`` (MONAI ``ChannelSELayer``: channel weights computed from the
    statistics of both the decoder and the encoder features, so the semantic gap between them is bridged by
    reweighting); ``out = ResidualUnit(z)``.

    Args:
        in_channels: channels of the decoder map.
        skip_channels: channels of the encoder skip.
        out_channels: output channels.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.upsample = UpSample(
            2, in_channels, out_channels, scale_factor=2, mode="nontrainable", interp_mode="bilinear",
            align_corners=False,
        )
        self.attention = ChannelSELayer(2, out_channels + skip_channels, r=4)
        self.conv = ResidualUnit(2, out_channels + skip_channels, out_channels, act=_ACT, norm=_NORM)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(self.attention(torch.cat([self.upsample(x), skip], dim=1)))


class _Encoder(nn.Module):
    """Shared encoder: a full-resolution residual unit, then four stride-2 residual units (16x downsampling)."""

    def __init__(self, in_channels: int, widths: list[int]) -> None:
        super().__init__()
        self.stages = nn.ModuleList()
        channels = in_channels
        for i, width in enumerate(widths):
            self.stages.append(ResidualUnit(2, channels, width, strides=1 if i == 0 else 2, act=_ACT, norm=_NORM))
            channels = width

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


@register_network("mtil", paper="Multi-task interaction learning, Phys. Med. Biol. 2025 (001)")
class MTIL(nn.Module):
    """Multi-task interaction network: a shared encoder, a segmentation and a classification branch that exchange
    location and semantic information through self-task and cross-task attention, channel-attention feature
    aggregation between encoder and decoder, and an extra input channel for circle training.

    Layout: shared encoder (widths ``init_filters * (1, 2, 4, 8, 16)``, 16x downsampling) -> task-specific bottleneck
    units for segmentation and classification -> interaction at 1/16 -> the segmentation decoder's first
    feature-aggregation stage and a classification unit on the 1/8 encoder feature -> interaction at 1/8 -> the
    segmentation decoder continues (three more aggregation stages, 1x1 logits) while the classification branch
    downsamples its 1/8 map, adds it to its 1/16 map and ends in a pooled linear head.

    Follows paper 001 (abstract):
        - joint segmentation + classification with a shared encoder and two task branches;
        - self-task and cross-task attention exchanging location (spatial) and semantic (channel) information;
        - a channel-attention feature aggregation block between encoder and decoder;
        - circle training: a previous segmentation map refines the features (extra input channel ``prev_seg``).

    Our reading (the full text was not available):
        - the exact interaction formula (see ``TaskInteractionBlock``), the two interaction levels (1/16 and 1/8),
          the SE-over-concatenation feature aggregation, BatchNorm/ReLU residual units, and the widths;
        - circle training as two passes in one step (pass 2 sees ``sigmoid(pass-1 seg).detach()``) instead of maps
          stored from an earlier epoch; the map enters as an extra input channel of the first convolution, zeros
          when absent, so ``net(x)`` is the first pass and the zoo's one-argument call keeps working.

    Args:
        in_channels: image channels (the first convolution sees ``in_channels + 1`` with the ``prev_seg`` channel).
        seg_channels: segmentation logit channels.
        num_classes: classification logits (2 or 3).
        init_filters: width of the first encoder stage.
        dropout: dropout before the classifier's linear layer(s).
        reduction: reduction of the channel-attention gates.
        cls_hidden: hidden width of a 2-layer classifier MLP; ``None`` for a linear classifier.

    Raises:
        ValueError: when an argument is out of range (the message names it).
    """

    def __init__(
        self,
        in_channels: int = 1,
        seg_channels: int = 1,
        num_classes: int = 2,
        init_filters: int = 16,
        dropout: float = 0.0,
        reduction: int = 4,
        cls_hidden: int | None = None,
    ) -> None:
        super().__init__()
        check_common_args(in_channels, seg_channels, num_classes, dropout)
        if int(init_filters) != init_filters or init_filters < 1:
            raise ValueError(f"init_filters must be a positive integer, got {init_filters!r}")
        if int(reduction) != reduction or reduction < 1:
            raise ValueError(f"reduction must be a positive integer, got {reduction!r}")
        if cls_hidden is not None and (int(cls_hidden) != cls_hidden or cls_hidden < 1):
            raise ValueError(f"cls_hidden must be a positive integer or None, got {cls_hidden!r}")
        self.in_channels = int(in_channels)
        widths = [init_filters * m for m in (1, 2, 4, 8, 16)]
        self.encoder = _Encoder(in_channels + 1, widths)
        # task-specific bottlenecks and the interaction at 1/16
        self.seg_bottleneck = ResidualUnit(2, widths[4], widths[4], act=_ACT, norm=_NORM)
        self.cls_bottleneck = ResidualUnit(2, widths[4], widths[4], act=_ACT, norm=_NORM)
        self.interaction16 = TaskInteractionBlock(widths[4], reduction)
        # 1/8: first decoder stage (seg) and a classification unit on the encoder feature (cls), then interaction
        self.decoder8 = FeatureAggregationBlock(widths[4], widths[3], widths[3])
        self.cls_stage8 = ResidualUnit(2, widths[3], widths[3], act=_ACT, norm=_NORM)
        self.interaction8 = TaskInteractionBlock(widths[3], reduction)
        # the rest of the segmentation decoder
        self.decoders = nn.ModuleList(
            [FeatureAggregationBlock(widths[i + 1], widths[i], widths[i]) for i in (2, 1, 0)]
        )
        self.seg_head = Convolution(2, widths[0], seg_channels, kernel_size=1, conv_only=True)
        # classification branch: 1/8 -> 1/16, merged with the 1/16 interaction output, pooled head
        self.cls_down = ResidualUnit(2, widths[3], widths[4], strides=2, act=_ACT, norm=_NORM)
        self.cls_head = ClassificationHead(widths[4], num_classes, dropout=dropout, hidden=cls_hidden)

    def forward(self, x: torch.Tensor, prev_seg: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Run one pass.

        Args:
            x: image ``(B, in_channels, H, W)``, H and W multiples of 32.
            prev_seg: optional lesion probability map ``(B, 1, H, W)`` from a previous pass (circle training);
                zeros when ``None``.

        Returns:
            ``{"seg": (B, S, H, W), "cls": (B, num_classes)}`` logits.

        Raises:
            ValueError: wrong input or ``prev_seg`` shape.
        """
        check_input(x, self.in_channels)
        if prev_seg is None:
            prev_seg = torch.zeros_like(x[:, :1])
        elif not (torch.jit.is_tracing() or torch.jit.is_scripting()) and (
            prev_seg.ndim != 4 or prev_seg.shape[1] != 1 or prev_seg.shape[0] != x.shape[0]
            or prev_seg.shape[2:] != x.shape[2:]
        ):
            raise ValueError(
                f"prev_seg must have shape {(x.shape[0], 1, *x.shape[2:])}, got {tuple(prev_seg.shape)}"
            )
        e0, e1, e2, e3, e4 = self.encoder(torch.cat([x, prev_seg.to(x.dtype)], dim=1))
        seg, cls = self.interaction16(self.seg_bottleneck(e4), self.cls_bottleneck(e4))
        seg8, cls8 = self.interaction8(self.decoder8(seg, e3), self.cls_stage8(e3))
        cls = cls + self.cls_down(cls8)
        seg = seg8
        for decoder, skip in zip(self.decoders, (e2, e1, e0)):
            seg = decoder(seg, skip)
        return {Head.SEG.value: self.seg_head(seg), Head.CLS.value: self.cls_head(cls)}


def circle_forward(net: nn.Module, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The two passes of circle training: ``net(x)``, then ``net(x, prev_seg=p.detach())`` with ``p`` the lesion
    probability of the first pass.

    The first map is detached, so each pass gets its own gradient (no backpropagation through the map). A trainer
    sums or averages the loss of both outputs; at inference the second output is the refined prediction.

    Args:
        net: a network whose forward accepts ``prev_seg`` (e.g. ``MTIL``).
        x: image batch.

    Returns:
        ``(first, second)``: the output dicts of the two passes.
    """
    first = net(x)
    second = net(x, prev_seg=lesion_probability(first[Head.SEG.value]).detach())
    return first, second
