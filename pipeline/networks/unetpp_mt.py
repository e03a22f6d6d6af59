"""Multi-task UNet++: nested dense skips, deep supervision and a classifier on the deep features.

Reference: C. Aumente-Maestro, J. Diez, B. Remeseiro, "A multi-task framework for breast cancer segmentation and
classification in ultrasound imaging", Computer Methods and Programs in Biomedicine (2025) 108540; code at
github.com/caumente/multi_task_breast_cancer (``MTUNetPlusPlus``). UNet++: Zhou et al., DLMIA 2018.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import BasicUNetPlusPlus
from monai.networks.nets.basic_unet import Down, TwoConv
from torch import nn

from pipeline.keys import Head
from pipeline.networks.heads import ClassificationHead
from pipeline.networks.utils import check_common_args, check_input
from pipeline.registry import register_network

__all__ = ["UNetPlusPlusMT", "UNetPlusPlusClassifier"]


class UNetPlusPlusClassifier(nn.Module):
    """Classification branch of the multi-task UNet++ (the paper's code: ``process_level_3`` + ``classifier``).

    The level-3 encoder node ``X_{3,0}`` and the level-3 nested decoder node ``X_{3,1}`` are brought to the bottleneck
    resolution by one shared MONAI ``Down`` block (max-pool + two convolutions), concatenated with the bottleneck
    ``X_{4,0}``, fused by a ``TwoConv`` block, globally average-pooled and classified by a 2-layer MLP.

    Args:
        level3_channels: channels of ``X_{3,0}`` and ``X_{3,1}``.
        bottleneck_channels: channels of ``X_{4,0}``.
        num_classes: number of logits.
        fuse_channels: output channels of the fusing ``TwoConv`` block (paper: 512).
        hidden: hidden width of the MLP (paper: 256).
        dropout: dropout before each linear layer (paper: 0).
        act: activation of the convolution blocks.
        norm: normalisation of the convolution blocks.
    """

    def __init__(
        self,
        level3_channels: int,
        bottleneck_channels: int,
        num_classes: int,
        fuse_channels: int,
        hidden: int,
        dropout: float = 0.0,
        act: str | tuple = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
        norm: str | tuple = ("instance", {"affine": True}),
    ) -> None:
        super().__init__()
        self.down = Down(2, level3_channels, bottleneck_channels, act, norm, True, 0.0)
        self.fuse = TwoConv(2, 3 * bottleneck_channels, fuse_channels, act, norm, True, 0.0)
        self.head = ClassificationHead(fuse_channels, num_classes, dropout=dropout, hidden=hidden)

    def forward(self, x_3_0: torch.Tensor, x_4_0: torch.Tensor, x_3_1: torch.Tensor) -> torch.Tensor:
        features = torch.cat([self.down(x_3_0), x_4_0, self.down(x_3_1)], dim=1)
        return self.head(self.fuse(features))


@register_network("unetpp_mt", paper="CMPB 2025 (004)")
class UNetPlusPlusMT(BasicUNetPlusPlus):
    """Multi-task UNet++ for joint lesion segmentation and classification (paper 004).

    A subclass of MONAI's :class:`~monai.networks.nets.BasicUNetPlusPlus` (2D): the same nodes, parameter names and
    blocks (``TwoConv``, ``Down``, ``UpCat``; instance norm, LeakyReLU 0.1, transposed-convolution upsampling), so
    MONAI UNet++ weights of the same width load into it, plus a classification branch. Four max-pool downsamplings:
    H and W must be divisible by 16; the zoo asks for 32 (checked on input).

    Outputs (a dict, the same keys in train and eval mode):

    - ``"seg"``: ``(B, S, H, W)`` logits of the finest nested node ``X_{0,4}`` (the paper's code scores and infers
      with the last deep-supervision output).
    - ``"cls"``: ``(B, K)`` logits.
    - ``"deep_supervision"`` (only when ``deep_supervision=True``, then always): the list
      ``[X_{0,1}, X_{0,2}, X_{0,3}, X_{0,4}]`` of ``(B, S, H, W)`` logits, all at full size, ordered from the
      shallowest sub-network to the full one; the last item *is* the ``"seg"`` tensor. The paper sums the Dice loss
      over the four with weights ``1, 1/2, 1/3, 1/4`` from ``X_{0,4}`` down to ``X_{0,1}``
      (``deep_supervision_weights`` lists them in list order).

    Follows the paper's code exactly: the UNet++ graph and blocks, the widths ``(f, 2f, 4f, 8f, 16f, f)`` (the paper
    runs ``f = 24``), the classifier inputs (``X_{3,0}`` and ``X_{3,1}`` through one shared ``Down`` block,
    concatenated with the bottleneck ``X_{4,0}``) and its shape (``TwoConv`` -> global average pool -> linear ->
    ReLU -> linear), deep-supervision heads on ``X_{0,1..4}``, ``"seg"`` = ``X_{0,4}``.

    Our choices: the classifier widths scale with ``init_filters`` (``16f`` and ``8f``; the paper fixes 512 and 256:
    pass ``cls_channels=512, cls_hidden=256``) to keep the default CPU-friendly; ``K`` logits for softmax/CE for two
    classes too (the paper's code uses one logit with BCE when there are two classes); ``dropout`` acts only before
    the classifier's linear layers (the paper uses none); the deep-supervision heads of ``X_{0,1..3}`` are not built
    when ``deep_supervision=False``.

    Args:
        in_channels: input channels (1-3).
        seg_channels: segmentation logit channels (1: one lesion channel read with a sigmoid).
        num_classes: classification logits (2 or 3).
        init_filters: width ``f`` of the first level; the five levels have ``f, 2f, 4f, 8f, 16f`` channels.
            Default 16 (the paper: 24).
        dropout: dropout probability in the classification head.
        deep_supervision: return the four ``X_{0,j}`` logit maps under ``"deep_supervision"``.
        cls_channels: channels of the classifier's fusing block; ``None``: ``16 * init_filters``.
        cls_hidden: hidden width of the classifier's MLP; ``None``: ``8 * init_filters``.
        act: activation of every block (MONAI default of ``BasicUNetPlusPlus``, as in the paper's code).
        norm: normalisation of every block (instance norm with affine, as in the paper's code).
        upsample: ``"deconv"``, ``"pixelshuffle"`` or ``"nontrainable"``.

    Raises:
        ValueError: an argument out of range (the message names it).
    """

    #: Paper's Dice weights of the ``deep_supervision`` list items ``X_{0,1}..X_{0,4}`` (their sum is multiplied by
    #: the segmentation weight alpha = 0.35 in the paper's joint loss).
    deep_supervision_weights: tuple[float, ...] = (1 / 4, 1 / 3, 1 / 2, 1.0)

    def __init__(
        self,
        in_channels: int = 1,
        seg_channels: int = 1,
        num_classes: int = 2,
        init_filters: int = 16,
        dropout: float = 0.0,
        deep_supervision: bool = True,
        cls_channels: int | None = None,
        cls_hidden: int | None = None,
        act: str | tuple = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
        norm: str | tuple = ("instance", {"affine": True}),
        upsample: str = "deconv",
    ) -> None:
        check_common_args(in_channels, seg_channels, num_classes, dropout)
        if not isinstance(init_filters, int) or isinstance(init_filters, bool) or init_filters < 1:
            raise ValueError(f"init_filters must be a positive integer, got {init_filters!r}")
        for name, value in (("cls_channels", cls_channels), ("cls_hidden", cls_hidden)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if upsample not in ("deconv", "pixelshuffle", "nontrainable"):
            raise ValueError(f"upsample must be 'deconv', 'pixelshuffle' or 'nontrainable', got {upsample!r}")
        f = init_filters
        features: Sequence[int] = (f, 2 * f, 4 * f, 8 * f, 16 * f, f)
        super().__init__(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=seg_channels,
            features=features,
            deep_supervision=bool(deep_supervision),
            act=act,
            norm=norm,
            bias=True,
            dropout=0.0,
            upsample=upsample,
        )
        self.in_channels = in_channels
        self.features = tuple(features)
        if not self.deep_supervision:  # unused heads would be parameters without gradient
            del self.final_conv_0_1, self.final_conv_0_2, self.final_conv_0_3
        self.classifier = UNetPlusPlusClassifier(
            level3_channels=features[3],
            bottleneck_channels=features[4],
            num_classes=num_classes,
            fuse_channels=cls_channels if cls_channels is not None else 16 * f,
            hidden=cls_hidden if cls_hidden is not None else 8 * f,
            dropout=dropout,
            act=act,
            norm=norm,
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:  # type: ignore[override]
        """Segment and classify ``x``.

        Args:
            x: ``(B, in_channels, H, W)``, H and W divisible by 32.

        Returns:
            ``{"seg": (B, S, H, W), "cls": (B, K)}`` logits, plus ``"deep_supervision"``: a list of four
            ``(B, S, H, W)`` logits when ``deep_supervision=True``.

        Raises:
            ValueError: wrong channel count or a size not divisible by 32.
        """
        check_input(x, self.in_channels)
        x_0_0 = self.conv_0_0(x)
        x_1_0 = self.conv_1_0(x_0_0)
        x_0_1 = self.upcat_0_1(x_1_0, x_0_0)

        x_2_0 = self.conv_2_0(x_1_0)
        x_1_1 = self.upcat_1_1(x_2_0, x_1_0)
        x_0_2 = self.upcat_0_2(x_1_1, torch.cat([x_0_0, x_0_1], dim=1))

        x_3_0 = self.conv_3_0(x_2_0)
        x_2_1 = self.upcat_2_1(x_3_0, x_2_0)
        x_1_2 = self.upcat_1_2(x_2_1, torch.cat([x_1_0, x_1_1], dim=1))
        x_0_3 = self.upcat_0_3(x_1_2, torch.cat([x_0_0, x_0_1, x_0_2], dim=1))

        x_4_0 = self.conv_4_0(x_3_0)
        x_3_1 = self.upcat_3_1(x_4_0, x_3_0)
        x_2_2 = self.upcat_2_2(x_3_1, torch.cat([x_2_0, x_2_1], dim=1))
        x_1_3 = self.upcat_1_3(x_2_2, torch.cat([x_1_0, x_1_1, x_1_2], dim=1))
        x_0_4 = self.upcat_0_4(x_1_3, torch.cat([x_0_0, x_0_1, x_0_2, x_0_3], dim=1))

        seg = self.final_conv_0_4(x_0_4)
        out: dict[str, torch.Tensor | list[torch.Tensor]] = {
            Head.SEG.value: seg,
            Head.CLS.value: self.classifier(x_3_0, x_4_0, x_3_1),
        }
        if self.deep_supervision:
            out[Head.DEEP_SUPERVISION.value] = [
                self.final_conv_0_1(x_0_1),
                self.final_conv_0_2(x_0_2),
                self.final_conv_0_3(x_0_3),
                seg,
            ]
        return out
