"""MONAI ``FlexibleUNet`` with an EfficientNet encoder and a classification head: the model-zoo 2D multi-task setup."""

from __future__ import annotations

import torch
from monai.networks.nets import EfficientNetEncoder, FlexibleUNet
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE
from torch import nn

from pipeline.keys import Head
from pipeline.networks.heads import ClassificationHead
from pipeline.networks.utils import EFFNET_BN_MOMENTUM, check_common_args, check_input
from pipeline.registry import register_network

__all__ = ["FlexUNetMultiTask", "DECODER_WIDTH_MULTIPLIERS"]

# decoder_channels = init_filters * these, deepest first; init_filters=16 gives MONAI's default (256, 128, 64, 32, 16)
DECODER_WIDTH_MULTIPLIERS: tuple[int, ...] = (16, 8, 4, 2, 1)


@register_network("flexunet_mt", paper="MONAI model zoo 2D standard")
class FlexUNetMultiTask(nn.Module):
    """MONAI :class:`~monai.networks.nets.FlexibleUNet` (EfficientNet encoder, U-Net decoder) and a classification head.

    Segmentation is FlexibleUNet unchanged: its EfficientNet encoder gives five features (strides 2 to 32; 16, 24,
    40, 112 and 320 channels for B0), its U-Net decoder (``UpCat`` blocks, batch norm, ReLU, nearest upsampling)
    goes back to full resolution and its 3x3 segmentation head gives ``seg_channels`` logits. FlexibleUNet's own
    forward returns only that map, so this class calls its ``encoder``, ``decoder`` and ``segmentation_head`` itself
    and feeds the deepest encoder feature (stride 32) to a :class:`~pipeline.networks.heads.ClassificationHead`
    (global average pooling, dropout, linear; a 2-layer MLP with ``cls_hidden``). The encoder is shared by both tasks.

    This is not a paper's method but the usual MONAI model-zoo 2D setup; our choices: the head on the deepest
    encoder feature; ``init_filters`` sets the decoder width, ``decoder_channels = init_filters * (16, 8, 4, 2, 1)``
    (16 = MONAI's default ``(256, 128, 64, 32, 16)``); the encoder width is fixed by ``backbone``. The EfficientNet
    encoder's own classification layers (1x1 head conv, its batch norm, the 1000-way linear layer), which
    FlexibleUNet never runs, are removed, so every parameter left is trained. The encoder's batch norms use PyTorch's
    momentum (0.1) instead of MONAI's TF value (0.01), for the reason given at ``EFFNET_BN_MOMENTUM``.

    ``pretrained=True`` loads ImageNet weights for the encoder through ``torch.hub`` (``model_zoo.load_url``): the
    file (``efficientnet-b0-355c32eb.pth`` for B0) must already be in the torch hub cache
    (``$TORCH_HOME/hub/checkpoints``) or it is downloaded, so it needs network access or a pre-fetched file; with
    ``in_channels != 3`` the stem conv keeps its random initialisation (MONAI skips weights of another shape).
    Default off; tests never switch it on.

    Args:
        in_channels: image channels (1-3).
        seg_channels: segmentation logit channels (1: lesion, sigmoid; 2: background + lesion, softmax).
        num_classes: classification logits (2 or 3).
        init_filters: decoder width: ``decoder_channels = init_filters * (16, 8, 4, 2, 1)``.
        dropout: dropout before the linear layer(s) of the classification head.
        backbone: an EfficientNet name known to MONAI (``"efficientnet-b0"`` ... ``"efficientnet-b7"``, ...).
        pretrained: load ImageNet encoder weights (see above).
        cls_hidden: hidden width of a 2-layer MLP head; ``None``: linear head.
        cls_pool: ``"avg"`` or ``"avgmax"`` pooling of the head.

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
        backbone: str = "efficientnet-b0",
        pretrained: bool = False,
        cls_hidden: int | None = None,
        cls_pool: str = "avg",
    ) -> None:
        super().__init__()
        check_common_args(in_channels, seg_channels, num_classes, dropout)
        if int(init_filters) != init_filters or init_filters < 1:
            raise ValueError(f"init_filters must be a positive integer, got {init_filters!r}")
        if backbone not in EfficientNetEncoder.backbone_names:
            raise ValueError(f"backbone must be one of {EfficientNetEncoder.backbone_names}, got {backbone!r}")
        if not isinstance(pretrained, bool):
            raise ValueError(f"pretrained must be a bool, got {pretrained!r}")
        if cls_hidden is not None and (int(cls_hidden) != cls_hidden or cls_hidden < 1):
            raise ValueError(f"cls_hidden must be a positive integer or None, got {cls_hidden!r}")
        if cls_pool not in ("avg", "avgmax"):
            raise ValueError(f"cls_pool must be 'avg' or 'avgmax', got {cls_pool!r}")
        self.in_channels = int(in_channels)
        self.seg_channels = int(seg_channels)
        self.num_classes = int(num_classes)
        self.init_filters = int(init_filters)
        self.backbone = backbone
        self.pretrained = pretrained
        self.decoder_channels = tuple(self.init_filters * m for m in DECODER_WIDTH_MULTIPLIERS)

        self.net = FlexibleUNet(
            in_channels=self.in_channels,
            out_channels=self.seg_channels,
            backbone=backbone,
            pretrained=pretrained,
            decoder_channels=self.decoder_channels,
            spatial_dims=2,
        )
        # FlexibleUNet only runs the encoder's feature stages: drop EfficientNet's unused classification layers
        encoder = self.net.encoder
        encoder._conv_head = nn.Identity()
        encoder._bn1 = nn.Identity()
        encoder._fc = nn.Identity()
        for module in encoder.modules():  # MONAI's TF momentum (0.01) -> PyTorch's: see EFFNET_BN_MOMENTUM
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = EFFNET_BN_MOMENTUM

        deepest = FLEXUNET_BACKBONE.register_dict[backbone]["feature_channel"][-1]
        self.cls_head = ClassificationHead(deepest, self.num_classes, dropout=dropout, hidden=cls_hidden, pool=cls_pool)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_input(x, self.in_channels)
        features = self.net.encoder(x)
        decoded = self.net.decoder(features, self.net.skip_connect)
        seg = self.net.segmentation_head(decoded)
        return {Head.SEG.value: seg, Head.CLS.value: self.cls_head(features[-1])}
