"""SegResNet + EfficientNet multi-task configurations (de Araújo et al., Med. Biol. Eng. Comput. 2026, paper 002).

The paper combines MONAI's SegResNet (segmentation) and EfficientNet (classification) in several multi-task schemes
that differ in how much the two tasks share, and reports the best one to be "a segmentation network with an
EfficientNet classification network that utilized shared encoded features from the SegResNet" (810 breast US
images from two centres: Dice 81.19 %, AUC 97.27 %). Only the abstract is available to us, so the paper fixes the
building blocks and the sharing levels; everything finer (where exactly the classifier attaches, widths, depths,
whether the cascade is end-to-end) is our reading and is stated in each class docstring.

Four registered networks, from no sharing to full sharing:

* ``segresnet_effnet_parallel`` (:class:`SegResNetEffNetParallel`): independent SegResNet and EfficientNet under one
  joint loss, the baseline.
* ``segresnet_effnet_cascade`` (:class:`SegResNetEffNetCascade`): the EfficientNet reads the image and the predicted
  lesion probability.
* ``segresnet_effnet`` (:class:`SegResNetEffNet`): the EfficientNet's MBConv stages read the SegResNet encoder
  features (the paper's best configuration).
* ``segresnet_shared`` (:class:`SegResNetShared`): one SegResNet encoder, a linear head on its bottleneck.

Shared parts: the SegResNet is MONAI's :class:`monai.networks.nets.SegResNet` (2D; its ``encode``/``decode`` are
called separately, so its ``convInit``, ``down_layers``, ``up_samples``, ``up_layers`` and ``conv_final`` are reused
as they are); the EfficientNet is :class:`~pipeline.networks.efficientnet.EfficientNetClassifier`, a stack of MONAI
:class:`~monai.networks.nets.efficientnet.MBConvBlock` following the EfficientNet-B0 table (Tan & Le, ICML 2019).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import SegResNet
from torch import nn

from pipeline.keys import Head
from pipeline.networks.efficientnet import build_efficientnet_classifier
from pipeline.networks.heads import ClassificationHead, FineGrainedClassifier
from pipeline.networks.utils import SIZE_MULTIPLE, check_common_args, check_input, lesion_probability
from pipeline.registry import register_network

__all__ = [
    "SegResNetShared",
    "SegResNetEffNet",
    "SegResNetEffNetCascade",
    "SegResNetEffNetParallel",
]

PAPER = "Med. Biol. Eng. Comput. 2026 (002)"


def _check_segresnet_args(
    init_filters: int, blocks_down: Sequence[int], blocks_up: Sequence[int] | None, seg_dropout: float | None
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Validate the SegResNet arguments; return ``(blocks_down, blocks_up)`` as tuples (``blocks_up`` filled in)."""
    if int(init_filters) != init_filters or init_filters < 8 or init_filters % 8:
        raise ValueError(
            f"init_filters must be a positive multiple of 8 (SegResNet's GroupNorm has 8 groups), got {init_filters!r}"
        )
    blocks_down = tuple(blocks_down)
    max_levels = SIZE_MULTIPLE.bit_length()  # 6 levels = 5 downsamplings = 32x
    if not 2 <= len(blocks_down) <= max_levels or any(int(b) != b or b < 1 for b in blocks_down):
        raise ValueError(
            f"blocks_down must hold 2 to {max_levels} positive integers (at most {max_levels - 1} downsamplings keep "
            f"'divisible by {SIZE_MULTIPLE}' sufficient), got {blocks_down!r}"
        )
    blocks_up = (1,) * (len(blocks_down) - 1) if blocks_up is None else tuple(blocks_up)
    if len(blocks_up) != len(blocks_down) - 1 or any(int(b) != b or b < 1 for b in blocks_up):
        raise ValueError(
            f"blocks_up must hold len(blocks_down) - 1 = {len(blocks_down) - 1} positive integers (the decoder goes "
            f"back to full resolution), got {blocks_up!r}"
        )
    if seg_dropout is not None and not 0.0 <= float(seg_dropout) < 1.0:
        raise ValueError(f"seg_dropout must be None or in [0, 1), got {seg_dropout!r}")
    return blocks_down, blocks_up


class _SegResNetMultiTask(nn.Module):
    """Common part: argument checks and the MONAI SegResNet (encoder + decoder + final conv) in ``self.segresnet``.

    Args:
        in_channels: image channels (1-3).
        seg_channels: segmentation logit channels (1: lesion, sigmoid; 2: background + lesion, softmax).
        num_classes: classification logits (2 or 3).
        init_filters: SegResNet width (channels of the first level; level ``i`` has ``init_filters * 2**i``).
        dropout: dropout of the classification branch.
        blocks_down: residual blocks per SegResNet encoder level (MONAI default ``(1, 2, 2, 4)``: 3 downsamplings).
        blocks_up: residual blocks per decoder level; ``None``: one per level (MONAI default ``(1, 1, 1)``).
        seg_dropout: MONAI SegResNet's ``dropout_prob`` (dropout after its first conv); ``None``: none.
    """

    def __init__(
        self,
        in_channels: int,
        seg_channels: int,
        num_classes: int,
        init_filters: int,
        dropout: float,
        blocks_down: Sequence[int],
        blocks_up: Sequence[int] | None,
        seg_dropout: float | None,
    ) -> None:
        super().__init__()
        check_common_args(in_channels, seg_channels, num_classes, dropout)
        blocks_down, blocks_up = _check_segresnet_args(init_filters, blocks_down, blocks_up, seg_dropout)
        self.in_channels = int(in_channels)
        self.seg_channels = int(seg_channels)
        self.num_classes = int(num_classes)
        self.init_filters = int(init_filters)
        self.segresnet = SegResNet(
            spatial_dims=2,
            init_filters=self.init_filters,
            in_channels=self.in_channels,
            out_channels=self.seg_channels,
            dropout_prob=seg_dropout,
            blocks_down=blocks_down,
            blocks_up=blocks_up,
        )

    @property
    def encoder_channels(self) -> tuple[int, ...]:
        """Channels of each SegResNet encoder level, shallow to deep (level ``i`` is at stride ``2**i``)."""
        return tuple(self.init_filters * 2**i for i in range(len(self.segresnet.blocks_down)))

    def segment(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the SegResNet: ``(seg_logits, encoder_features)``, features shallow to deep (the last = bottleneck)."""
        bottleneck, features = self.segresnet.encode(x)
        seg = self.segresnet.decode(bottleneck, features[::-1])
        return seg, features


@register_network("segresnet_shared", paper=PAPER)
class SegResNetShared(_SegResNetMultiTask):
    """One SegResNet encoder shared by the SegResNet decoder and a linear classification head on its bottleneck.

    The hard-parameter-sharing end of the paper's range of configurations (and the design's reference network).
    ``cls`` = :class:`~pipeline.networks.heads.ClassificationHead` (global average pooling, dropout, linear; a 2-layer
    MLP with ``cls_hidden``) on the deepest encoder feature, ``init_filters * 2**(len(blocks_down) - 1)`` channels at
    stride ``2**(len(blocks_down) - 1)``. With ``classifier_features``, ``cls`` is NMTNet's lesion-focused
    :class:`~pipeline.networks.heads.FineGrainedClassifier` instead: the SegResNet decoder's stage outputs (or the
    bottleneck) pooled under the predicted lesion probability, with the globally pooled bottleneck, then a 2-layer MLP.

    From the paper: SegResNet as the segmentation network and an encoder shared by both tasks. Our reading: the head
    (the abstract does not describe it; a pooled linear head is the usual shared-encoder baseline), MONAI's default
    SegResNet depth ``blocks_down=(1, 2, 2, 4)``. That depth downsamples 3 times, so inputs divisible by 8 would do;
    the zoo-wide "divisible by 32" check is kept so every network accepts the same sizes.

    Args:
        in_channels: image channels (1-3).
        seg_channels: segmentation logit channels (1: lesion, sigmoid; 2: background + lesion, softmax).
        num_classes: classification logits (2 or 3).
        init_filters: SegResNet width, a multiple of 8 (GroupNorm with 8 groups).
        dropout: dropout before the linear layer(s) of the head.
        blocks_down: residual blocks per encoder level, 2 to 6 levels (MONAI default ``(1, 2, 2, 4)``).
        blocks_up: residual blocks per decoder level; ``None``: one each.
        seg_dropout: SegResNet's own ``dropout_prob`` (after its first conv); ``None``: off.
        cls_hidden: hidden width of a 2-layer MLP head; ``None``: linear head.
        cls_pool: ``"avg"`` or ``"avgmax"`` pooling of the head.
        classifier_features: ``None``: the pooled linear head; ``"decoder"``, ``"bottleneck"`` or ``"global"``: the
            fine-grained classifier pooling that (MLP width ``cls_hidden``, default ``8 * init_filters``; the
            classification gradient stops at the lesion probability). ``cls_pool`` applies to the linear head only.

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
        cls_hidden: int | None = None,
        cls_pool: str = "avg",
        classifier_features: str | None = None,
    ) -> None:
        super().__init__(
            in_channels, seg_channels, num_classes, init_filters, dropout, blocks_down, blocks_up, seg_dropout
        )
        if cls_hidden is not None and (int(cls_hidden) != cls_hidden or cls_hidden < 1):
            raise ValueError(f"cls_hidden must be a positive integer or None, got {cls_hidden!r}")
        if cls_pool not in ("avg", "avgmax"):
            raise ValueError(f"cls_pool must be 'avg' or 'avgmax', got {cls_pool!r}")
        self.classifier_features = classifier_features
        if classifier_features is None:
            self.cls_head = ClassificationHead(
                self.encoder_channels[-1], self.num_classes, dropout=dropout, hidden=cls_hidden, pool=cls_pool
            )
        else:
            self.cls_head = FineGrainedClassifier(
                self.encoder_channels[-2::-1],   # decoder stage widths, coarse to fine
                self.encoder_channels[-1],
                self.num_classes,
                hidden=cls_hidden if cls_hidden is not None else 8 * self.init_filters,
                dropout=dropout,
                features=classifier_features,
            )

    def _segment_with_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """``(seg_logits, decoder stage outputs coarse to fine, bottleneck)``: MONAI's ``SegResNet.decode`` step by
        step, because it returns the final logits only."""
        net = self.segresnet
        x, features = net.encode(x)
        bottleneck, skips, stages = x, features[::-1], []
        for i, (up, up_layer) in enumerate(zip(net.up_samples, net.up_layers)):
            x = up_layer(up(x) + skips[i + 1])
            stages.append(x)
        return net.conv_final(x), stages, bottleneck

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_input(x, self.in_channels)
        if self.classifier_features is None:
            seg, features = self.segment(x)
            return {Head.SEG.value: seg, Head.CLS.value: self.cls_head(features[-1])}
        seg, stages, bottleneck = self._segment_with_stages(x)
        cls = self.cls_head(stages, lesion_probability(seg, self.seg_channels), bottleneck)
        return {Head.SEG.value: seg, Head.CLS.value: cls}


@register_network("segresnet_effnet", paper=PAPER)
class SegResNetEffNet(_SegResNetMultiTask):
    """SegResNet for segmentation; an EfficientNet classifier reading the SegResNet encoder features (paper's best).

    The classifier is :class:`~pipeline.networks.efficientnet.EfficientNetClassifier` with its stem (and the B0
    stages above the attachment stride) replaced by the SegResNet encoder: it reads encoder level ``feature_level``
    (stride ``2**feature_level``) and runs the remaining EfficientNet-B0 MBConv stages down to stride 32, then the
    1280-channel head conv, pooling, dropout and a linear layer. The encoder is trained by both losses; the MBConv
    stages only by the classification loss.

    From the paper: SegResNet segmentation network; EfficientNet classification network; the classifier uses shared
    encoded features of the SegResNet; joint training. Our reading (the abstract does not say where the classifier
    attaches nor how wide it is):

    * attachment at the deepest encoder level by default (stride 8 with MONAI's default ``blocks_down``). That is the
      encoder's output, so the whole encoder is shared (most sharing, lowest cost), and stride 8 is where B0's stage 4
      begins, so the classifier is exactly B0's stages 4-7 (3+3+4+1 MBConv blocks, 80/112/192/320 channels at width
      1) and reaches EfficientNet's stride 32, which SegResNet's bottleneck does not. ``feature_level=1`` is the other
      natural reading: SegResNet's stride-2 level has ``2 * init_filters`` = 32 channels at the default width, exactly
      B0's stem output, so the classifier becomes a whole B0 minus its stem (costlier, less shared).
    * width coefficient ``init_filters / 16`` (B0 itself at the default width), depth coefficient 1, B0's
      drop-connect 0.2; ``dropout`` is B0's pre-classifier dropout (B0: 0.2; the zoo default is 0.0).
    * SegResNet defaults as in :class:`SegResNetShared`.

    Args:
        in_channels: image channels (1-3).
        seg_channels: segmentation logit channels (1: lesion, sigmoid; 2: background + lesion, softmax).
        num_classes: classification logits (2 or 3).
        init_filters: SegResNet width, a multiple of 8.
        dropout: dropout before the classifier's linear layer.
        blocks_down: residual blocks per SegResNet encoder level, 2 to 6 levels.
        blocks_up: residual blocks per decoder level; ``None``: one each.
        seg_dropout: SegResNet's own ``dropout_prob``; ``None``: off.
        feature_level: encoder level the classifier reads, ``1 .. len(blocks_down) - 1``; ``None``: the deepest.
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
        dropout: float = 0.0,
        blocks_down: Sequence[int] = (1, 2, 2, 4),
        blocks_up: Sequence[int] | None = None,
        seg_dropout: float | None = None,
        feature_level: int | None = None,
        effnet_width: float | None = None,
        effnet_depth: float = 1.0,
        drop_connect_rate: float = 0.2,
    ) -> None:
        super().__init__(
            in_channels, seg_channels, num_classes, init_filters, dropout, blocks_down, blocks_up, seg_dropout
        )
        deepest = len(self.encoder_channels) - 1
        if feature_level is None:
            feature_level = deepest
        if int(feature_level) != feature_level or not 1 <= feature_level <= deepest:
            raise ValueError(f"feature_level must be an integer in 1..{deepest} (or None), got {feature_level!r}")
        self.feature_level = int(feature_level)
        self.classifier = build_efficientnet_classifier(
            self.encoder_channels[self.feature_level], self.num_classes, 2**self.feature_level, self.init_filters,
            dropout, effnet_width, effnet_depth, drop_connect_rate,
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_input(x, self.in_channels)
        seg, features = self.segment(x)
        return {Head.SEG.value: seg, Head.CLS.value: self.classifier(features[self.feature_level])}


@register_network("segresnet_effnet_cascade", paper=PAPER)
class SegResNetEffNetCascade(_SegResNetMultiTask):
    """SegResNet, then an EfficientNet classifier reading the image concatenated with the predicted lesion probability.

    ``cls = EfficientNet(cat(image, p))`` with ``p`` = sigmoid of the segmentation logits (one channel) or channel 1 of
    their softmax (two or more channels). The classifier is a complete EfficientNet-B0 (stem included) with
    ``in_channels + 1`` input channels; the two networks share no parameters.

    From the paper: a configuration in which the segmentation output is integrated into the classification network
    (SegResNet + EfficientNet). Our reading: the probability map is concatenated to the image as an extra channel;
    by default it is **not detached**, so the classification loss also reaches the SegResNet through ``p`` (one
    network trained end-to-end under the joint loss, as a plain PyTorch implementation of the cascade behaves);
    ``detach_probability=True`` makes it a two-stage cascade in which the SegResNet learns from the segmentation
    loss alone. EfficientNet widths as in :class:`SegResNetEffNet` (B0 at the default width).

    Args:
        in_channels: image channels (1-3).
        seg_channels: segmentation logit channels (1: lesion, sigmoid; 2: background + lesion, softmax).
        num_classes: classification logits (2 or 3).
        init_filters: SegResNet width, a multiple of 8; the EfficientNet width coefficient is ``init_filters / 16``
            unless ``effnet_width`` is given.
        dropout: dropout before the classifier's linear layer.
        blocks_down: residual blocks per SegResNet encoder level, 2 to 6 levels.
        blocks_up: residual blocks per decoder level; ``None``: one each.
        seg_dropout: SegResNet's own ``dropout_prob``; ``None``: off.
        detach_probability: stop the classification gradient at the lesion probability.
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
        dropout: float = 0.0,
        blocks_down: Sequence[int] = (1, 2, 2, 4),
        blocks_up: Sequence[int] | None = None,
        seg_dropout: float | None = None,
        detach_probability: bool = False,
        effnet_width: float | None = None,
        effnet_depth: float = 1.0,
        drop_connect_rate: float = 0.2,
    ) -> None:
        super().__init__(
            in_channels, seg_channels, num_classes, init_filters, dropout, blocks_down, blocks_up, seg_dropout
        )
        if not isinstance(detach_probability, bool):
            raise ValueError(f"detach_probability must be a bool, got {detach_probability!r}")
        self.detach_probability = detach_probability
        self.classifier = build_efficientnet_classifier(
            self.in_channels + 1, self.num_classes, 1, self.init_filters, dropout, effnet_width, effnet_depth,
            drop_connect_rate,
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_input(x, self.in_channels)
        seg = self.segresnet(x)
        probability = lesion_probability(seg, self.seg_channels)
        if self.detach_probability:
            probability = probability.detach()
        cls = self.classifier(torch.cat([x, probability], dim=1))
        return {Head.SEG.value: seg, Head.CLS.value: cls}


@register_network("segresnet_effnet_parallel", paper=PAPER)
class SegResNetEffNetParallel(_SegResNetMultiTask):
    """Independent SegResNet (segmentation) and EfficientNet (classification) trained under one joint loss.

    No parameter and no feature is shared: the only coupling is the summed loss (and the shared optimizer). It is
    the baseline the sharing configurations have to beat.

    From the paper: the two architectures side by side in a multi-task training. Our reading: the EfficientNet is a
    complete B0 (stem included) on the image, width coefficient ``init_filters / 16``; SegResNet as in
    :class:`SegResNetShared`.

    Args:
        in_channels: image channels (1-3).
        seg_channels: segmentation logit channels (1: lesion, sigmoid; 2: background + lesion, softmax).
        num_classes: classification logits (2 or 3).
        init_filters: SegResNet width, a multiple of 8.
        dropout: dropout before the classifier's linear layer.
        blocks_down: residual blocks per SegResNet encoder level, 2 to 6 levels.
        blocks_up: residual blocks per decoder level; ``None``: one each.
        seg_dropout: SegResNet's own ``dropout_prob``; ``None``: off.
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
        dropout: float = 0.0,
        blocks_down: Sequence[int] = (1, 2, 2, 4),
        blocks_up: Sequence[int] | None = None,
        seg_dropout: float | None = None,
        effnet_width: float | None = None,
        effnet_depth: float = 1.0,
        drop_connect_rate: float = 0.2,
    ) -> None:
        super().__init__(
            in_channels, seg_channels, num_classes, init_filters, dropout, blocks_down, blocks_up, seg_dropout
        )
        self.classifier = build_efficientnet_classifier(
            self.in_channels, self.num_classes, 1, self.init_filters, dropout, effnet_width, effnet_depth,
            drop_connect_rate,
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_input(x, self.in_channels)
        return {Head.SEG.value: self.segresnet(x), Head.CLS.value: self.classifier(x)}
