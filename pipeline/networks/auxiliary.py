"""Auxiliary classification heads that share a network's classifier features (e.g. BI-RADS beside benign/malignant)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from pipeline.keys import Head

__all__ = ["AuxiliaryClassifiers", "with_auxiliary_classifiers"]


class AuxiliaryClassifiers(nn.Module):
    """A registered network plus one linear head per auxiliary target, on the features its classifier reads.

    The features are the input of the network's last ``nn.Linear`` with ``num_classes`` outputs (the layer giving the
    class logits), captured by a forward hook: every registered network keeps its own classifier, and the auxiliary
    heads train the features it reads (the hidden layer and everything below) without a change to any network. In
    training mode the output is the network's dict plus one ``(B, n)`` logits entry per head; in eval mode it is the
    network's dict unchanged, so evaluation, export and inference see the network's own contract.

    Args:
        network: a registered network (``pipeline.registry.create_network``).
        num_classes: its number of class logits.
        heads: auxiliary target name -> number of categories, e.g. ``{"birads": 4}``.

    Raises:
        ValueError: ``heads`` is empty or names a key of the network's output, a head has fewer than two categories,
            or the network has no linear layer with ``num_classes`` outputs (e.g. a segmentation-only network).
    """

    def __init__(self, network: nn.Module, num_classes: int, heads: Mapping[str, int]) -> None:
        super().__init__()
        if not heads:
            raise ValueError("heads must name at least one auxiliary target")
        for name, n in heads.items():
            if name in {h.value for h in Head} or int(n) < 2:
                raise ValueError(f"heads[{name!r}]: a new output name with two or more categories is needed, got {n}")
        layers = [m for m in network.modules() if isinstance(m, nn.Linear) and m.out_features == int(num_classes)]
        if not layers:
            raise ValueError(f"{type(network).__name__} has no linear layer with num_classes={num_classes} outputs: "
                             "auxiliary heads share the features of the network's classifier")
        self.network = network
        self.heads = nn.ModuleDict({name: nn.Linear(layers[-1].in_features, int(n)) for name, n in heads.items()})
        self._features: torch.Tensor | None = None
        layers[-1].register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        if self.training:  # in eval mode (and in a traced export) nothing is kept
            self._features = args[0]

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        out = self.network(x)
        if not self.training:
            return out
        features, self._features = self._features, None
        if features is None:
            raise RuntimeError(f"{type(self.network).__name__} did not run its classifier: no features for "
                               f"the auxiliary heads {list(self.heads)}")
        return {**out, **{name: head(features) for name, head in self.heads.items()}}


def with_auxiliary_classifiers(network: nn.Module, num_classes: int, heads: Mapping[str, int] | None) -> nn.Module:
    """``AuxiliaryClassifiers(network, num_classes, heads)``, or ``network`` itself when ``heads`` is empty (the
    bundles' default: checkpoints keep the network's own parameter names)."""
    return AuxiliaryClassifiers(network, num_classes, heads) if heads else network
