"""Classification heads shared by the multi-task networks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ClassificationHead", "FineGrainedClassifier", "CLASSIFIER_FEATURES", "masked_average_pool"]


class ClassificationHead(nn.Module):
    """Global-average-pooled feature map -> dropout -> linear (or a 2-layer MLP when ``hidden`` is given).

    Args:
        in_channels: channels of the feature map it reads (usually the deepest encoder feature).
        num_classes: number of logits.
        dropout: dropout probability before each linear layer.
        hidden: width of the hidden layer of a 2-layer MLP; ``None`` for a single linear layer.
        pool: ``"avg"`` or ``"avgmax"`` (concatenated average and max pooling).
    """

    def __init__(
        self, in_channels: int, num_classes: int, dropout: float = 0.0, hidden: int | None = None, pool: str = "avg"
    ) -> None:
        super().__init__()
        if pool not in ("avg", "avgmax"):
            raise ValueError(f"pool must be 'avg' or 'avgmax', got {pool!r}")
        self.pool = pool
        features = in_channels * (2 if pool == "avgmax" else 1)
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden is not None:
            layers += [nn.Linear(features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            features = hidden
        layers.append(nn.Linear(features, num_classes))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        if self.pool == "avgmax":
            pooled = torch.cat([pooled, torch.flatten(nn.functional.adaptive_max_pool2d(x, 1), 1)], dim=1)
        return self.mlp(pooled)


def masked_average_pool(features: torch.Tensor, prob: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Average of ``features`` weighted by a probability map, ``(B, C)``.

    Args:
        features: ``(B, C, h, w)``.
        prob: ``(B, 1, H, W)`` in [0, 1]; area-averaged to ``(h, w)`` first.
        eps: added to the total weight (an all-zero map gives zeros, never NaN).
    """
    weights = F.adaptive_avg_pool2d(prob, features.shape[-2:])
    return (features * weights).sum(dim=(2, 3)) / (weights.sum(dim=(2, 3)) + eps)


CLASSIFIER_FEATURES = ("decoder", "bottleneck", "global")


class FineGrainedClassifier(nn.Module):
    """Classifier that reuses the segmentation: lesion-weighted features + global bottleneck features -> MLP.

    NMTNet's fine-grained classifier (paper 000, our reading), also offered to ``segresnet_shared``.

    ``features`` chooses what is pooled, then classified by ``ClassificationHead`` (dropout -> linear -> ReLU ->
    dropout -> linear):

    - ``"decoder"``: every decoder stage output average-pooled under the predicted lesion probability (resized to that
      stage), the global average of the bottleneck and the mean lesion probability (the predicted lesion area
      fraction, one scalar);
    - ``"bottleneck"``: the bottleneck average-pooled under the lesion probability and globally (semantic features
      of the lesion and of the whole image, no fine-scale decoder texture and no area fraction, both of which depend
      on the scanner's resolution and field of view);
    - ``"global"``: the global average of the bottleneck only (the plain MONAI reference's head; the mask is unused).

    Args:
        decoder_channels: channels of the decoder stages it pools (``"decoder"`` only).
        bottleneck_channels: channels of the bottleneck.
        num_classes: number of logits.
        hidden: hidden width of the MLP.
        dropout: dropout before each linear layer.
        detach_mask: stop the classification gradient at the lesion probability (the mask is then shaped by the
            segmentation loss only).
        features: ``"decoder"``, ``"bottleneck"`` or ``"global"``.

    Raises:
        ValueError: an unknown ``features``.
    """

    def __init__(
        self,
        decoder_channels: Sequence[int],
        bottleneck_channels: int,
        num_classes: int,
        hidden: int,
        dropout: float = 0.0,
        detach_mask: bool = True,
        features: str = "decoder",
    ) -> None:
        super().__init__()
        if features not in CLASSIFIER_FEATURES:
            raise ValueError(f"classifier_features must be one of {CLASSIFIER_FEATURES}, got {features!r}")
        self.detach_mask = detach_mask
        self.features = features
        width = {
            "decoder": sum(decoder_channels) + bottleneck_channels + 1,
            "bottleneck": 2 * bottleneck_channels,
            "global": bottleneck_channels,
        }[features]
        self.head = ClassificationHead(width, num_classes, dropout, hidden)

    def forward(
        self, decoder_features: Sequence[torch.Tensor], lesion_prob: torch.Tensor, bottleneck: torch.Tensor
    ) -> torch.Tensor:
        """Classify.

        Args:
            decoder_features: the decoder stage outputs.
            lesion_prob: ``(B, 1, H, W)`` lesion probability.
            bottleneck: ``(B, C, h, w)`` bottleneck features.
        """
        if self.detach_mask:
            lesion_prob = lesion_prob.detach()
        pooled = []
        if self.features == "decoder":
            pooled += [masked_average_pool(feat, lesion_prob) for feat in decoder_features]
        elif self.features == "bottleneck":
            pooled.append(masked_average_pool(bottleneck, lesion_prob))
        pooled.append(torch.flatten(F.adaptive_avg_pool2d(bottleneck, 1), 1))
        if self.features == "decoder":
            pooled.append(lesion_prob.mean(dim=(2, 3)))
        vector = torch.cat(pooled, dim=1)
        return self.head(vector[:, :, None, None])
