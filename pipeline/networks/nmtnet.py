"""NMTNet: ResNet18 U-shaped network with MFCR, LRE skip modules and a segmentation-guided fine-grained classifier.

Reference: X. Yang, Y. Wang, L. Sui, "NMTNet: A Multi-task Deep Learning Network for Joint Segmentation and
Classification of Breast Tumors", Journal of Imaging Informatics in Medicine (2025), doi:10.1007/s10278-025-01440-7.
Only the abstract was available to us: the module internals below are our reading of it (see :class:`NMTNet`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import ChannelSELayer, Convolution, SimpleASPP, UpSample
from torch import nn

from pipeline.keys import Head
from pipeline.networks.heads import FineGrainedClassifier
from pipeline.networks.resnet_encoder import ResNet18Encoder, norm_spec
from pipeline.networks.utils import check_common_args, check_input, lesion_probability
from pipeline.registry import register_network

__all__ = [
    "NMTNet",
    "MultiScaleFusionChannelRefinement",
    "LesionRegionEnhancement",
    "NMTNetDecoder",
]

_RELU = ("RELU", {"inplace": True})


class MultiScaleFusionChannelRefinement(nn.Module):
    """MFCR at the bottleneck: parallel convolutions of several receptive fields, fused, re-weighted per channel.

    ``y = x + SE(P(ASPP(x)))``: MONAI ``SimpleASPP`` (a 1x1 convolution and 3x3 convolutions with the given dilations,
    concatenated and fused by a 1x1 convolution + BN + ReLU), a 1x1 projection back to ``channels`` when the branch
    widths do not add up to it, then squeeze-and-excitation channel attention (MONAI ``ChannelSELayer``), added to the
    input.

    Args:
        channels: input and output channels.
        dilations: dilations of the 3x3 branches (a 1x1 branch is always added). The bottleneck of a 128x128 input
            is 4x4, so small dilations are the useful ones.
        reduction: squeeze ratio of the channel attention.
        norm: ``"batch"``, ``"group"`` or ``"instance"``.

    Raises:
        ValueError: empty ``dilations`` or a non-positive entry.
    """

    def __init__(self, channels: int, dilations: Sequence[int] = (1, 2, 3), reduction: int = 4,
                 norm: str = "batch") -> None:
        super().__init__()
        dilations = tuple(int(d) for d in dilations)
        if not dilations or min(dilations) < 1:
            raise ValueError(f"mfcr_dilations must be a non-empty sequence of positive integers, got {dilations!r}")
        branches = len(dilations) + 1
        branch_channels = math.ceil(channels / branches)
        self.aspp = SimpleASPP(
            2,
            channels,
            branch_channels,
            kernel_sizes=(1,) + (3,) * len(dilations),
            dilations=(1,) + dilations,
            norm_type=norm_spec(norm),
            acti_type=_RELU,
        )
        fused = branch_channels * branches
        self.project: nn.Module = (
            nn.Identity()
            if fused == channels
            else Convolution(2, fused, channels, kernel_size=1, norm=norm_spec(norm), act=None, bias=False)
        )
        self.refine = ChannelSELayer(2, channels, r=max(1, min(reduction, channels // 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.refine(self.project(self.aspp(x)))


def _edge_kernels() -> torch.Tensor:
    """Sobel-x, Sobel-y and Laplacian 3x3 kernels, ``(3, 3, 3)``, scaled to unit L1 norm."""
    sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    laplacian = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    kernels = torch.stack([sobel_x, sobel_x.t(), laplacian])
    return kernels / kernels.abs().sum(dim=(1, 2), keepdim=True)


class LesionRegionEnhancement(nn.Module):
    """LRE on a skip connection: spatial attention on the lesion region plus an edge/texture branch.

    ``y = x + BN(Conv1x1([x * A(x), E(x)]))`` where

    - ``A``: CBAM-style spatial attention, a 7x7 convolution of the channel-wise mean and max, then a sigmoid
      (one ``(B, 1, h, w)`` map that highlights the lesion region);
    - ``E``: depthwise Sobel-x, Sobel-y and Laplacian filters on every channel (replicate padding), absolute responses,
      then a 1x1 convolution + BN + ReLU back to ``channels`` (edge and texture cues of irregular margins).
      The filters are fixed (a non-persistent buffer) or, with ``learnable_edges=True``, a parameter initialised
      from them.

    Args:
        channels: input and output channels.
        learnable_edges: learn the depthwise edge filters (initialised as Sobel/Laplacian).
        attention_kernel: kernel size of the spatial-attention convolution.
    """

    def __init__(self, channels: int, learnable_edges: bool = False, attention_kernel: int = 7,
                 norm: str = "batch") -> None:
        super().__init__()
        self.channels = channels
        self.attention = Convolution(2, 2, 1, kernel_size=attention_kernel, conv_only=True)
        weight = _edge_kernels().repeat(channels, 1, 1).unsqueeze(1)  # (3C, 1, 3, 3), groups=C
        if learnable_edges:
            self.edge_filters = nn.Parameter(weight)
        else:
            self.register_buffer("edge_filters", weight, persistent=False)
        self.edge_project = Convolution(2, 3 * channels, channels, kernel_size=1, norm=norm_spec(norm), act=_RELU,
                                        bias=False)
        self.fuse = Convolution(2, 2 * channels, channels, kernel_size=1, norm=norm_spec(norm), act=None, bias=False)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(B, 1, h, w)`` spatial attention in [0, 1]."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.attention(pooled))

    def edges(self, x: torch.Tensor) -> torch.Tensor:
        """Absolute Sobel-x, Sobel-y and Laplacian responses of every channel, ``(B, 3C, h, w)``."""
        padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
        return F.conv2d(padded, self.edge_filters, groups=self.channels).abs()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        enhanced = x * self.attention_map(x)
        edges = self.edge_project(self.edges(x))
        return x + self.fuse(torch.cat([enhanced, edges], dim=1))


class _UpBlock(nn.Module):
    """2x transposed-convolution upsampling (MONAI ``UpSample``), concatenation with a skip, two conv-BN-ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, norm: str = "batch") -> None:
        super().__init__()
        self.up = UpSample(2, in_channels, out_channels, scale_factor=2, mode="deconv")
        cat_channels = out_channels + skip_channels
        self.conv = nn.Sequential(
            Convolution(2, cat_channels, out_channels, kernel_size=3, norm=norm_spec(norm), act=_RELU, bias=False),
            Convolution(2, out_channels, out_channels, kernel_size=3, norm=norm_spec(norm), act=_RELU, bias=False),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = self.up(x)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv(x)


class NMTNetDecoder(nn.Module):
    """U-shaped decoder from the 1/32 bottleneck to full resolution.

    Four stages concatenate the (LRE-enhanced) skips at 1/16, 1/8, 1/4 and 1/2; a fifth upsamples to full resolution
    without a skip (ResNet18 has no full-resolution feature).

    Args:
        bottleneck_channels: channels of the bottleneck.
        skip_channels: channels of the skips, fine to coarse (1/2, 1/4, 1/8, 1/16).
        channels: output channels of the five stages, coarse to fine (1/16, 1/8, 1/4, 1/2, 1/1).
        norm: ``"batch"``, ``"group"`` or ``"instance"``.
    """

    def __init__(self, bottleneck_channels: int, skip_channels: Sequence[int], channels: Sequence[int],
                 norm: str = "batch") -> None:
        super().__init__()
        skips = list(reversed(list(skip_channels))) + [0]
        ins = [bottleneck_channels] + list(channels[:-1])
        self.channels = tuple(channels)
        self.blocks = nn.ModuleList(_UpBlock(i, s, o, norm) for i, s, o in zip(ins, skips, channels))

    def forward(self, bottleneck: torch.Tensor, skips: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Return the output of every stage, coarse to fine (the last one is at full resolution)."""
        outputs = []
        x = bottleneck
        coarse_to_fine = list(reversed(list(skips)))
        for i, block in enumerate(self.blocks):
            x = block(x, coarse_to_fine[i] if i < len(coarse_to_fine) else None)
            outputs.append(x)
        return outputs


@register_network("nmtnet", paper="J. Imaging Inform. Med. 2025 (000)")
class NMTNet(nn.Module):
    """NMTNet (paper 000): ResNet18 encoder, MFCR bottleneck, LRE skips, U-shaped decoder, fine-grained classifier.

    Outputs ``{"seg": (B, S, H, W), "cls": (B, K)}`` logits, the same in train and eval mode; five downsamplings,
    so H and W must be divisible by 32.

    Follows the paper (its abstract; the full text was not available to us): a ResNet18 backbone as the shared
    encoder of a U-shaped network; an MFCR module that enriches the depth and diversity of the bottleneck features;
    LRE modules between encoder and decoder for texture and edge detail of irregular tumours; a segmentation branch
    and a classification branch whose fine-grained classifier reuses segmentation information.

    Our reading (under-specified in the text we had):

    - encoder: MONAI ``resnet18`` (2D, 7x7 stride-2 stem, max pool), widths ``f, f, 2f, 4f, 8f`` with
      ``f = init_filters`` (64 is ResNet18; default 32 for CPU); ``pretrained`` is a local torchvision-layout weight
      file (needs ``init_filters=64``), off by default, never downloaded;
    - MFCR: ``x + SE(ASPP(x))`` (parallel 1x1 and dilated 3x3 convolutions, fused, squeeze-and-excitation channel
      refinement) — see :class:`MultiScaleFusionChannelRefinement`;
    - LRE on the four skips (1/2 .. 1/16): CBAM-style spatial attention plus fixed (or learnable) Sobel/Laplacian
      edge responses, fused residually — see :class:`LesionRegionEnhancement`;
    - decoder: transposed-convolution upsampling, concatenation, two conv-BN-ReLU per stage, widths
      ``4f, 2f, f, f, f/2`` down to full resolution, then a 1x1 segmentation head;
    - classifier: every decoder stage pooled under the predicted lesion probability (sigmoid of the seg logit;
      ``1 - softmax`` background when ``seg_channels > 1``), concatenated with the globally pooled MFCR bottleneck and
      the mean lesion probability, then a 2-layer MLP; the classification gradient does not flow into the mask by
      default (``detach_mask``). ``classifier_features`` pools less: the bottleneck under the mask and globally, or
      globally only (see :class:`FineGrainedClassifier`).

    Args:
        in_channels: input channels (1-3).
        seg_channels: segmentation logit channels (1: one lesion channel read with a sigmoid; more: channel 0 is
            the background of a softmax).
        num_classes: classification logits (2 or 3).
        init_filters: encoder width ``f`` (ResNet18: 64). Default 32.
        dropout: dropout probability in the classifier MLP.
        pretrained: ``None`` or the path of a local torchvision ResNet18 state dict (needs ``init_filters=64``).
        learnable_edges: learn the LRE edge filters (initialised as Sobel/Laplacian) instead of fixing them.
        mfcr_dilations: dilations of the MFCR 3x3 branches.
        cls_hidden: hidden width of the classifier MLP; ``None``: ``8 * init_filters``.
        detach_mask: stop the classification gradient at the lesion probability.
        classifier_features: what the classifier pools: ``"decoder"`` (the paper's reading), ``"bottleneck"`` or
            ``"global"``.
        norm: ``"batch"`` (ResNet's), ``"group"`` (8 groups, as MONAI's SegResNet) or ``"instance"``: per-image
            normalisation keeps no running statistics of the training scanners.

    Raises:
        ValueError: an argument out of range (the message names it).
    """

    def __init__(
        self,
        in_channels: int = 1,
        seg_channels: int = 1,
        num_classes: int = 2,
        init_filters: int = 32,
        dropout: float = 0.0,
        pretrained: str | None = None,
        learnable_edges: bool = False,
        mfcr_dilations: Sequence[int] = (1, 2, 3),
        cls_hidden: int | None = None,
        detach_mask: bool = True,
        classifier_features: str = "decoder",
        norm: str = "batch",
    ) -> None:
        super().__init__()
        norm_spec(norm)   # checked before anything is built
        if norm == "group" and isinstance(init_filters, int) and init_filters % 16:
            raise ValueError(f"norm='group' (8 groups) needs init_filters divisible by 16 (the last decoder stage has "
                             f"init_filters / 2 channels), got init_filters={init_filters}")
        check_common_args(in_channels, seg_channels, num_classes, dropout)
        if not isinstance(init_filters, int) or isinstance(init_filters, bool) or init_filters < 4:
            raise ValueError(f"init_filters must be an integer >= 4, got {init_filters!r}")
        if cls_hidden is not None and (
            not isinstance(cls_hidden, int) or isinstance(cls_hidden, bool) or cls_hidden < 1
        ):
            raise ValueError(f"cls_hidden must be a positive integer or None, got {cls_hidden!r}")
        self.in_channels = in_channels
        self.seg_channels = seg_channels
        f = init_filters
        self.encoder = ResNet18Encoder(in_channels, f, pretrained, norm)
        enc = self.encoder.channels
        self.mfcr = MultiScaleFusionChannelRefinement(enc[-1], dilations=mfcr_dilations, norm=norm)
        self.lre = nn.ModuleList(LesionRegionEnhancement(c, learnable_edges=learnable_edges, norm=norm)
                                 for c in enc[:-1])
        self.decoder = NMTNetDecoder(enc[-1], enc[:-1], (4 * f, 2 * f, f, f, f // 2), norm)
        self.seg_head = Convolution(2, f // 2, seg_channels, kernel_size=1, conv_only=True)
        self.classifier = FineGrainedClassifier(
            self.decoder.channels,
            enc[-1],
            num_classes,
            hidden=cls_hidden if cls_hidden is not None else 8 * f,
            dropout=dropout,
            detach_mask=detach_mask,
            features=classifier_features,
        )

    def lesion_probability(self, seg: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` lesion probability from the segmentation logits."""
        return lesion_probability(seg, self.seg_channels)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Segment and classify ``x``.

        Args:
            x: ``(B, in_channels, H, W)``, H and W divisible by 32.

        Returns:
            ``{"seg": (B, S, H, W), "cls": (B, K)}`` logits.

        Raises:
            ValueError: wrong channel count or a size not divisible by 32.
        """
        check_input(x, self.in_channels)
        features = self.encoder(x)
        bottleneck = self.mfcr(features[-1])
        skips = [lre(skip) for lre, skip in zip(self.lre, features[:-1])]
        decoded = self.decoder(bottleneck, skips)
        seg = self.seg_head(decoded[-1])
        cls = self.classifier(decoded, self.lesion_probability(seg), bottleneck)
        return {Head.SEG.value: seg, Head.CLS.value: cls}
