"""EfficientNet-B0-style classifier from MONAI ``MBConvBlock``s (Tan & Le, ICML 2019), reading an image or a feature
map: the classification half of the ``segresnet_effnet*`` networks (paper 002) and of ``efficientnet_cls_only``."""

from __future__ import annotations

import math

import torch
from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from monai.networks.nets.efficientnet import MBConvBlock
from torch import nn

from pipeline.networks.heads import ClassificationHead
from pipeline.networks.utils import EFFNET_BN_MOMENTUM

__all__ = ["EFFICIENTNET_B0_STAGES", "EfficientNetClassifier", "build_efficientnet_classifier"]

# EfficientNet-B0 after its stride-2 stem (Tan & Le 2019, table 1; the same table as MONAI's ``EfficientNetBN``):
# (repeats, kernel size, stride of the first block, expansion ratio, output channels). All blocks use SE ratio 0.25.
EFFICIENTNET_B0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
_B0_STEM_CHANNELS = 32
_B0_HEAD_CHANNELS = 1280
_B0_SE_RATIO = 0.25
# EfficientNet's batch-norm eps (TF); the momentum is PyTorch's, not TF's (see EFFNET_BN_MOMENTUM)
_EFFNET_NORM = ("batch", {"eps": 1e-3, "momentum": EFFNET_BN_MOMENTUM})
# static "same" padding of MBConvBlock is computed for this reference size; for stride 1 it does not depend on the
# size, for stride 2 only on its parity, so it is right for every input whose sides are multiples of 32
_REFERENCE_SIZE = 128


def _scale_width(channels: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's channel scaling: ``channels * width`` rounded to a multiple of ``divisor``, at most 10% lower."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def _scale_depth(repeats: int, depth: float) -> int:
    """EfficientNet's depth scaling: ``ceil(repeats * depth)``, at least 1."""
    return max(1, math.ceil(repeats * depth))


def _init_efficientnet_weights(module: nn.Module) -> None:
    """EfficientNet's initialisation (TF reference): He-normal convolutions on fan-out, unit batch norms.

    The fan-out is ``kernel area * out_channels / groups`` (for a depthwise conv the kernel area, as in TF). PyTorch's
    default init shrinks the signal by about 10x per MBConv block, which leaves an untrained network in eval mode
    (batch norm with its initial running statistics) with an input-independent output.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class EfficientNetClassifier(nn.Module):
    """EfficientNet-B0-style classifier built from MONAI ``MBConvBlock``s, reading an image or a feature map.

    With ``input_stride=1`` it is a complete EfficientNet: stride-2 stem (3x3 conv, BN, swish), the seven MBConv
    stages of B0, 1x1 head conv to 1280 channels, global average pooling, dropout, linear. With ``input_stride`` 2,
    4, 8, 16 or 32 it reads a feature map that is already that many times smaller than the image (for instance a
    SegResNet encoder level): the stem and the stages that B0 runs above that stride are left out, and the first kept
    stage takes the feature map's channels directly (its expansion conv adapts them). Either way the deepest feature
    is at stride 32, as in EfficientNet.

    Args:
        in_channels: channels of the input (image or feature map).
        num_classes: number of logits.
        input_stride: how many times smaller than the image the input is: 1 (an image), 2, 4, 8, 16 or 32.
        width: EfficientNet width coefficient (1.0 = B0 channels).
        depth: EfficientNet depth coefficient (1.0 = B0 repeats).
        dropout: dropout before the final linear layer (EfficientNet-B0 uses 0.2).
        drop_connect_rate: stochastic-depth rate of the last block, linearly smaller for earlier blocks (B0: 0.2).

    Raises:
        ValueError: ``input_stride`` not a power of two in 1..32, or ``width``/``depth`` not positive.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        input_stride: int = 1,
        width: float = 1.0,
        depth: float = 1.0,
        dropout: float = 0.2,
        drop_connect_rate: float = 0.2,
    ) -> None:
        super().__init__()
        if input_stride not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"input_stride must be one of 1, 2, 4, 8, 16, 32, got {input_stride!r}")
        if not width > 0:
            raise ValueError(f"width must be positive, got {width!r}")
        if not depth > 0:
            raise ValueError(f"depth must be positive, got {depth!r}")
        if not 0.0 <= float(drop_connect_rate) < 1.0:
            raise ValueError(f"drop_connect_rate must be in [0, 1), got {drop_connect_rate!r}")
        self.in_channels = in_channels
        self.input_stride = input_stride
        size = _REFERENCE_SIZE // input_stride  # spatial size of the input at the reference image size

        self.stem: nn.Module = nn.Identity()
        channels = in_channels
        if input_stride == 1:
            channels = _scale_width(_B0_STEM_CHANNELS, width)
            conv = Conv[Conv.CONV, 2](in_channels, channels, kernel_size=3, stride=2, padding=1, bias=False)
            self.stem = nn.Sequential(
                conv, get_norm_layer(_EFFNET_NORM, spatial_dims=2, channels=channels), get_act_layer("swish")
            )
            size //= 2
        stride = max(2, input_stride)  # stride of the tensor entering the stages

        # keep the B0 stages whose input stride is at least ``stride``
        stages: list[tuple[int, int, int, int, int]] = []
        stage_stride = 2
        for stage in EFFICIENTNET_B0_STAGES:
            if stage_stride >= stride:
                stages.append(stage)
            stage_stride *= stage[2]
        n_blocks = sum(_scale_depth(stage[0], depth) for stage in stages)

        blocks: list[nn.Module] = []
        index = 0
        for repeats, kernel, first_stride, expand, out_channels in stages:
            out_channels = _scale_width(out_channels, width)
            for r in range(_scale_depth(repeats, depth)):
                block_stride = first_stride if r == 0 else 1
                blocks.append(
                    MBConvBlock(
                        spatial_dims=2,
                        in_channels=channels,
                        out_channels=out_channels,
                        kernel_size=kernel,
                        stride=block_stride,
                        image_size=[size, size],
                        expand_ratio=expand,
                        se_ratio=_B0_SE_RATIO,
                        norm=_EFFNET_NORM,
                        drop_connect_rate=drop_connect_rate * index / n_blocks,
                    )
                )
                channels = out_channels
                size //= block_stride
                index += 1
        self.blocks = nn.Sequential(*blocks)

        head_channels = _scale_width(_B0_HEAD_CHANNELS, width)
        self.conv_head = nn.Sequential(
            Conv[Conv.CONV, 2](channels, head_channels, kernel_size=1, bias=False),
            get_norm_layer(_EFFNET_NORM, spatial_dims=2, channels=head_channels),
            get_act_layer("swish"),
        )
        self.head = ClassificationHead(head_channels, num_classes, dropout=dropout)
        _init_efficientnet_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv_head(self.blocks(self.stem(x))))


def build_efficientnet_classifier(
    in_channels: int, num_classes: int, input_stride: int, init_filters: int, dropout: float,
    width: float | None, depth: float, drop_connect_rate: float,
) -> EfficientNetClassifier:
    """Check the EfficientNet arguments the three EfficientNet variants share and build their classifier
    (width ``None``: ``init_filters / 16``, so the default width 16 gives B0)."""
    if width is not None and not float(width) > 0:
        raise ValueError(f"effnet_width must be positive or None, got {width!r}")
    if not float(depth) > 0:
        raise ValueError(f"effnet_depth must be positive, got {depth!r}")
    if not 0.0 <= float(drop_connect_rate) < 1.0:
        raise ValueError(f"drop_connect_rate must be in [0, 1), got {drop_connect_rate!r}")
    return EfficientNetClassifier(
        in_channels=in_channels,
        num_classes=num_classes,
        input_stride=input_stride,
        width=init_filters / 16 if width is None else float(width),
        depth=float(depth),
        dropout=dropout,
        drop_connect_rate=drop_connect_rate,
    )
