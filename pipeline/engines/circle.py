"""Circle training (paper 001): a second pass refined by the first pass's segmentation."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.keys import Head
from pipeline.networks.mtil import circle_forward

__all__ = ["CircleTraining", "circle_training", "FIRST_PASS_KEY"]

FIRST_PASS_KEY = "first_pass_seg"


class CircleTraining(nn.Module):
    """Run ``network(x)``, then ``network(x, prev_seg=p)`` with ``p`` the first pass's detached lesion probability.

    Returns the second pass's dict plus the first pass's segmentation logits under ``"first_pass_seg"``, which
    ``MultiTaskLoss`` scores when the preset gives it an aux weight. The network must accept ``prev_seg``
    (``mtil`` does).

    Args:
        network: a zoo network whose ``forward`` takes ``(x, prev_seg=None)``.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.in_channels = getattr(network, "in_channels", 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        first, second = circle_forward(self.network, x)
        second = dict(second)
        second[FIRST_PASS_KEY] = first[Head.SEG.value]
        return second


def circle_training(network: nn.Module) -> CircleTraining:
    """Wrap ``network`` for circle training (used by the bundles when the preset sets ``circle_training``)."""
    return CircleTraining(network)
