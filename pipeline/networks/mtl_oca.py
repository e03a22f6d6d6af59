"""MTL-OCA: multi-task Res-UNet with an object contextual attention segmentation head (paper 003).

Lu, Sun, Wang, Yu, "Automatic joint segmentation and classification of breast ultrasound images via multi-task
learning with object contextual attention", Frontiers in Oncology 15 (2025), doi:10.3389/fonc.2025.1567577.
The object contextual attention (OCA) follows the object-contextual representations of Yuan et al. (OCR, ECCV 2020,
the paper's reference 55), which the paper's equations 1-3 restate.
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.blocks import Convolution, ResidualUnit, UpSample
from torch import nn

from pipeline.keys import Head
from pipeline.networks.heads import ClassificationHead
from pipeline.networks.utils import check_common_args, check_input
from pipeline.registry import register_network

__all__ = ["ResUNetBackbone", "ObjectContextualAttention", "MTLOCA"]

CLS_FEATURES = ("full", "decoder", "bottleneck")


def _group_norm(num_groups: int) -> tuple:
    return ("group", {"num_groups": num_groups})


class ResUNetBackbone(nn.Module):
    """A 3-level residual U-Net with GroupNorm: three encoder stages, a bottleneck, three decoder stages.

    Encoder stage ``i`` is a MONAI ``ResidualUnit`` (two conv-GroupNorm-ReLU sub-units and a residual connection)
    followed by 2x2 max pooling; a decoder stage upsamples (MONAI ``UpSample``: 1x1 conv then bilinear x2),
    concatenates the skip connection and applies a ``ResidualUnit``. Widths are ``init_filters * (1, 2, 4)`` for the
    stages and ``8 * init_filters`` for the bottleneck; the output has ``init_filters`` channels at full resolution.

    Args:
        in_channels: input channels.
        init_filters: width of the first stage.
        norm_groups: number of GroupNorm groups; must divide ``init_filters``.
        dropout: dropout inside the residual units.

    Returns (forward):
        list of feature maps ``[bottleneck (1/8), decoder 1/4, decoder 1/2, decoder 1/1]``; the last one is "the
        feature maps extracted from the backbone" that the OCA head and the classifier read.
    """

    def __init__(self, in_channels: int, init_filters: int, norm_groups: int, dropout: float = 0.0) -> None:
        super().__init__()
        norm = _group_norm(norm_groups)
        widths = [init_filters * m for m in (1, 2, 4)]
        self.encoders = nn.ModuleList()
        channels = in_channels
        for width in widths:
            self.encoders.append(
                ResidualUnit(2, channels, width, subunits=2, act="relu", norm=norm, dropout=dropout or None)
            )
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = ResidualUnit(
            2, channels, 2 * channels, subunits=2, act="relu", norm=norm, dropout=dropout or None
        )
        channels *= 2
        self.upsamples = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for width in reversed(widths):
            self.upsamples.append(
                UpSample(2, channels, width, scale_factor=2, mode="nontrainable", interp_mode="bilinear",
                         align_corners=False)
            )
            self.decoders.append(
                ResidualUnit(2, 2 * width, width, subunits=2, act="relu", norm=norm, dropout=dropout or None)
            )
            channels = width
        self.out_channels = init_filters
        self.feature_channels = [8 * init_filters, 4 * init_filters, 2 * init_filters, init_filters]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        features = [x]
        for upsample, decoder, skip in zip(self.upsamples, self.decoders, reversed(skips)):
            x = decoder(torch.cat([upsample(x), skip], dim=1))
            features.append(x)
        return features


class ObjectContextualAttention(nn.Module):
    """Object contextual attention head (paper 003, Eq. 1-3; OCR of Yuan et al.).

    1. soft object regions: ``K`` region logits per pixel predicted from the backbone features (conv3x3-GN-ReLU,
       conv1x1); returned so that the loss can supervise them as a coarse segmentation (the paper's aux term).
    2. object region representations (Eq. 1): ``f_k = sum_i m_ki x_i`` with ``m_k`` the region logits softmax-
       normalised over the pixels, ``x_i`` the pixel representation (conv3x3-GN-ReLU of the backbone features).
    3. pixel-region relation (Eq. 2): ``w_ik = softmax_k(phi(x_i) . psi(f_k) / sqrt(d))``.
    4. object contextual representation (Eq. 3): ``y_i = rho(sum_k w_ik delta(f_k))``.
    5. augmented representation ``z_i = g([y_i, x_i])`` (conv1x1-GN-ReLU) -> dropout -> conv1x1 -> segmentation logits.

    ``phi``, ``rho`` and ``g`` act on pixel maps (conv1x1-GroupNorm-ReLU); ``psi`` and ``delta`` act on the K region
    vectors and use conv1x1-ReLU without normalisation (statistics over K=2 vectors are meaningless).

    Args:
        in_channels: channels of the backbone features.
        mid_channels: channels of the pixel and region representations.
        key_channels: channels of the query/key/value space of the relation.
        num_regions: ``K``, the number of soft object regions (2: background and lesion).
        out_channels: segmentation logit channels.
        norm_groups: GroupNorm groups; must divide ``mid_channels`` and ``key_channels``.
        dropout: dropout before the last 1x1 convolution.
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        key_channels: int,
        num_regions: int,
        out_channels: int,
        norm_groups: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        norm = _group_norm(norm_groups)

        def conv(cin: int, cout: int, k: int, n: tuple | None = norm) -> Convolution:
            return Convolution(2, cin, cout, kernel_size=k, act="relu", norm=n, bias=n is None)

        self.key_channels = key_channels
        self.region_head = nn.Sequential(
            conv(in_channels, in_channels, 3),
            Convolution(2, in_channels, num_regions, kernel_size=1, conv_only=True),
        )
        self.pixel = conv(in_channels, mid_channels, 3)
        self.phi = nn.Sequential(conv(mid_channels, key_channels, 1), conv(key_channels, key_channels, 1))
        self.psi = nn.Sequential(conv(mid_channels, key_channels, 1, None), conv(key_channels, key_channels, 1, None))
        self.delta = conv(mid_channels, key_channels, 1, None)
        self.rho = conv(key_channels, mid_channels, 1)
        self.fuse = conv(2 * mid_channels, mid_channels, 1)
        self.dropout = nn.Dropout2d(dropout)
        self.seg = Convolution(2, mid_channels, out_channels, kernel_size=1, conv_only=True)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(seg_logits (B, S, H, W), region_logits (B, K, H, W))``."""
        regions = self.region_head(features)  # (B, K, H, W)
        pixels = self.pixel(features)  # (B, M, H, W)
        # Eq. 1: region representation = pixel features pooled with the spatially normalised soft region
        weights = torch.softmax(regions.flatten(2), dim=2)  # (B, K, N), sums to 1 over pixels
        region_repr = torch.bmm(weights, pixels.flatten(2).transpose(1, 2))  # (B, K, M)
        region_repr = region_repr.transpose(1, 2).unsqueeze(-1)  # (B, M, K, 1)
        # Eq. 2: relation of every pixel to the K regions
        query = self.phi(pixels).flatten(2).transpose(1, 2)  # (B, N, D)
        key = self.psi(region_repr).flatten(2)  # (B, D, K)
        relation = torch.softmax(torch.bmm(query, key) * self.key_channels**-0.5, dim=-1)  # (B, N, K)
        # Eq. 3: object contextual representation
        value = self.delta(region_repr).flatten(2).transpose(1, 2)  # (B, K, D)
        context = torch.bmm(relation, value).transpose(1, 2)  # (B, D, N)
        context = self.rho(context.reshape(context.shape[0], context.shape[1], pixels.shape[2], pixels.shape[3]))
        augmented = self.fuse(torch.cat([context, pixels], dim=1))
        return self.seg(self.dropout(augmented)), regions


@register_network("mtl_oca", paper="MTL-OCA, Front. Oncol. 2025 (003)")
class MTLOCA(nn.Module):
    """MTL-OCA: a GroupNorm Res-UNet backbone, an object contextual attention segmentation head and an MLP classifier.

    Follows paper 003 exactly:
        - backbone: a three-level residual U-Net whose encoder blocks are conv + GroupNorm + max pooling and whose
          decoder blocks are upsample + conv + GroupNorm (MONAI ``ResidualUnit`` / ``UpSample``), so the input is
          downsampled 8x;
        - the OCA head of Eq. 1-3 with K=2 soft object regions predicted from the backbone features, supervised as a
          coarse segmentation (output ``Head.OBJECT_REGIONS``; the paper's loss weight alpha = 0.4 and plain
          cross-entropy live in the training loss / preset, with the lesion mask as region index 0=background,
          1=lesion); the augmented representation concat(context, pixel) gives the segmentation logits;
        - the classifier is a two-layer MLP that reads the backbone's feature maps (not only the encoder's) and not
          the OCA-enhanced ones.

    Our reading of an under-specified text:
        - residual units have two conv-GN-ReLU sub-units; upsampling is 1x1 conv + bilinear; GroupNorm uses
          ``norm_groups`` (default 8) groups; widths ``init_filters * (1, 2, 4, 8)``;
        - "the complete feature maps from the backbone": by default (``cls_features="full"``) the classifier pools
          the bottleneck and every decoder stage and concatenates them (global average pooling); ``"decoder"`` pools
          only the last decoder map (the one the OCA reads), ``"bottleneck"`` only the bottleneck;
        - the MLP hidden width (default ``8 * init_filters``) and the OCA widths (``2 * init_filters`` pixel/region
          channels, ``init_filters`` key channels) are not given; OCR's BatchNorm is replaced by GroupNorm;
        - the backbone ends at full resolution, so the "coarse" region logits have the input's size ``(B, 2, H, W)``
          (coarse in quality, not in resolution);
        - ``seg_channels`` logit channels come out of the OCA head (zoo convention: 1 lesion channel, sigmoid),
          whereas the paper's regions and final masks are K-class softmax maps.

    Input size: the network itself only needs H and W divisible by 8, but the zoo contract asks for multiples of
    32 and ``check_input`` enforces it, so any multiple of 32 is accepted.

    Args:
        in_channels: input channels (2 for the paper's grey image + Gaussian gradient magnitude, see
            ``pipeline.transforms.GaussianGradientMagnitude``).
        seg_channels: segmentation logit channels.
        num_classes: classification logits (2 or 3; the paper uses 3: normal, benign, malignant).
        init_filters: width of the first backbone stage.
        dropout: dropout in the classifier MLP and before the last OCA convolution.
        norm_groups: GroupNorm groups; must divide ``init_filters``.
        num_regions: number of soft object regions K (paper: 2).
        cls_features: which backbone features the classifier pools: ``"full"``, ``"decoder"`` or ``"bottleneck"``.
        cls_hidden: hidden width of the 2-layer MLP classifier; ``None`` means ``8 * init_filters``.

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
        norm_groups: int = 8,
        num_regions: int = 2,
        cls_features: str = "full",
        cls_hidden: int | None = None,
    ) -> None:
        super().__init__()
        check_common_args(in_channels, seg_channels, num_classes, dropout)
        if int(init_filters) != init_filters or init_filters < 1:
            raise ValueError(f"init_filters must be a positive integer, got {init_filters!r}")
        if int(norm_groups) != norm_groups or norm_groups < 1 or init_filters % norm_groups:
            raise ValueError(f"norm_groups must be a positive integer dividing init_filters, got {norm_groups!r}")
        if int(num_regions) != num_regions or num_regions < 2:
            raise ValueError(f"num_regions must be an integer >= 2, got {num_regions!r}")
        if cls_features not in CLS_FEATURES:
            raise ValueError(f"cls_features must be one of {CLS_FEATURES}, got {cls_features!r}")
        if cls_hidden is not None and (int(cls_hidden) != cls_hidden or cls_hidden < 1):
            raise ValueError(f"cls_hidden must be a positive integer or None, got {cls_hidden!r}")
        self.in_channels = int(in_channels)
        self.cls_features = cls_features
        self.backbone = ResUNetBackbone(in_channels, init_filters, norm_groups)
        self.oca = ObjectContextualAttention(
            in_channels=init_filters,
            mid_channels=2 * init_filters,
            key_channels=init_filters,
            num_regions=num_regions,
            out_channels=seg_channels,
            norm_groups=norm_groups,
            dropout=dropout,
        )
        self._cls_index: Sequence[int] = {"full": (0, 1, 2, 3), "decoder": (3,), "bottleneck": (0,)}[cls_features]
        cls_in = sum(self.backbone.feature_channels[i] for i in self._cls_index)
        self.classifier = ClassificationHead(
            cls_in, num_classes, dropout=dropout, hidden=cls_hidden or 8 * init_filters
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return ``{"seg": (B, S, H, W), "cls": (B, num_classes), "object_regions": (B, K, H, W)}`` logits."""
        check_input(x, self.in_channels)
        features = self.backbone(x)
        seg, regions = self.oca(features[-1])
        pooled = torch.cat([torch.mean(features[i], dim=(2, 3), keepdim=True) for i in self._cls_index], dim=1)
        return {Head.SEG.value: seg, Head.CLS.value: self.classifier(pooled), Head.OBJECT_REGIONS.value: regions}
