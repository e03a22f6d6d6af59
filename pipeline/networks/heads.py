"""Classification heads shared by the multi-task networks."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ClassificationHead"]


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
