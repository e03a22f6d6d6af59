"""ResNet18 encoder (MONAI's 2D ``resnet18``) returning its five feature maps: the encoder of ``nmtnet`` (paper 000),
with optional local torchvision weights (never downloaded) and batch, group or instance norm."""

from __future__ import annotations

import torch
from monai.networks.nets import resnet18
from torch import nn

__all__ = ["NORMS", "ResNet18Encoder", "load_torchvision_resnet18", "norm_spec"]

# the normalisation layers: batch norm (ResNet's), or per-image group / instance norm, which keep no running
# statistics of the training scanners (MONAI's SegResNet uses 8 groups)
NORMS: dict[str, str | tuple] = {
    "batch": "BATCH",
    "group": ("GROUP", {"num_groups": 8}),
    "instance": ("INSTANCE", {"affine": True}),
}


def norm_spec(norm: str) -> str | tuple:
    """MONAI's norm argument for ``norm`` (a key of ``NORMS``).

    Raises:
        ValueError: an unknown ``norm``.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {tuple(NORMS)}, got {norm!r}")
    return NORMS[norm]


def load_torchvision_resnet18(resnet: nn.Module, path: str, in_channels: int) -> None:
    """Load a local torchvision-layout ResNet18 state dict (e.g. ImageNet weights) into a MONAI 2D ResNet18.

    MONAI's ResNet uses torchvision's parameter names; ``fc.*`` is dropped, a ``module.`` prefix is stripped and
    the first convolution is adapted to ``in_channels`` (summed over RGB for one channel, as timm does; averaged and
    rescaled otherwise). Nothing is downloaded.

    Args:
        resnet: a MONAI ``ResNet`` built at full width (64) with ``feed_forward=False``.
        path: path of the ``.pth`` file (a state dict, or a dict holding one under ``"state_dict"``).
        in_channels: input channels of ``resnet``.

    Raises:
        ValueError: the file does not match a ResNet18 at full width.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"pretrained: {path} does not hold a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
    weight = state.get("conv1.weight")
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4:
        raise ValueError(f"pretrained: {path} has no 2D ResNet 'conv1.weight' of shape (64, C, 7, 7)")
    if weight.shape[1] != in_channels:
        if in_channels == 1:
            weight = weight.sum(dim=1, keepdim=True)
        else:
            weight = weight.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1) * (weight.shape[1] / in_channels)
        state["conv1.weight"] = weight
    try:
        missing, unexpected = resnet.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise ValueError(f"pretrained: {path} does not match a full-width ResNet18: {err}") from err
    if missing or unexpected:
        raise ValueError(
            f"pretrained: {path} does not match a ResNet18; missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def _replace_batch_norms(module: nn.Module, norm: str) -> None:
    """Swap every 2D batch norm under ``module`` for a freshly initialised ``norm`` layer of the same width."""
    from monai.networks.layers.utils import get_norm_layer

    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, get_norm_layer(norm_spec(norm), spatial_dims=2, channels=child.num_features))
        else:
            _replace_batch_norms(child, norm)


class ResNet18Encoder(nn.Module):
    """MONAI 2D ResNet18 (basic blocks, layers 2-2-2-2, 7x7 stride-2 stem, max pool) returning five feature maps.

    Args:
        in_channels: input channels.
        init_filters: width ``f`` of the stem and of ``layer1``; the stages have ``f, f, 2f, 4f, 8f`` channels
            (64 = ResNet18).
        pretrained: ``None`` (random initialisation) or the path of a local torchvision ResNet18 state dict; needs
            ``init_filters=64`` and ``norm="batch"``. Never downloads.
        norm: ``"batch"``, ``"group"`` or ``"instance"`` (``NORMS``).

    Raises:
        ValueError: ``pretrained`` with another width than 64, or a file that does not match.
    """

    def __init__(self, in_channels: int, init_filters: int, pretrained: str | None = None, norm: str = "batch") -> None:
        super().__init__()
        f = init_filters
        self.channels = (f, f, 2 * f, 4 * f, 8 * f)
        # widen_factor scales MONAI's (64, 128, 256, 512); f / 64 is exact in binary, so the widths are f * (1, 2, 4, 8)
        self.resnet = resnet18(
            pretrained=False,
            spatial_dims=2,
            n_input_channels=in_channels,
            conv1_t_size=7,
            conv1_t_stride=2,
            feed_forward=False,
            bias_downsample=False,  # as torchvision, so that its weights load
            widen_factor=f / 64,
            norm=norm_spec(norm),
        )
        if norm != "batch":
            # MONAI's ResNet (1.6) gives `norm` to its stem only: its layers are built with batch norm whatever it is
            _replace_batch_norms(self.resnet, norm)
        if pretrained is not None and not isinstance(pretrained, str):
            raise ValueError(
                "pretrained must be None or the path of a local weight file (nothing is downloaded), "
                f"got {pretrained!r}"
            )
        if pretrained:
            if norm != "batch":
                raise ValueError(f"pretrained ResNet18 weights need norm='batch' (ImageNet's), got norm={norm!r}")
            if f != 64:
                raise ValueError(f"pretrained ResNet18 weights need init_filters=64, got init_filters={f}")
            load_torchvision_resnet18(self.resnet, str(pretrained), in_channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the stem (1/2), ``layer1`` (1/4), ``layer2`` (1/8), ``layer3`` (1/16) and ``layer4`` (1/32) maps."""
        r = self.resnet
        x0 = r.act(r.bn1(r.conv1(x)))
        x1 = r.layer1(r.maxpool(x0))
        x2 = r.layer2(x1)
        x3 = r.layer3(x2)
        x4 = r.layer4(x3)
        return [x0, x1, x2, x3, x4]
