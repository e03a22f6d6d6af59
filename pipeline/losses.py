"""The joint loss: a weighted sum of a segmentation loss, a classification loss and auxiliary terms.

``MultiTaskLoss(pred, target)`` takes the network's output dict and the target dict ``{"seg": mask, "cls": label}``
built by ``pipeline.engines.MultiTaskPrepareBatch``, so MONAI's stock ``SupervisedTrainer`` runs it unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from monai.losses import FocalLoss
from torch import nn
from torch.nn import functional as F

from pipeline.keys import Head

__all__ = ["MultiTaskLoss", "FocalClassificationLoss"]


class FocalClassificationLoss(nn.Module):
    """MONAI ``FocalLoss`` (softmax) on ``(B, K)`` logits with ``(B,)`` integer labels, the layout of
    ``torch.nn.CrossEntropyLoss`` (MONAI's takes a ``(B, 1)`` label), so that a preset swaps one for the other.

    Args:
        gamma: focusing parameter.
        weight: optional per-class weights (length K).
    """

    def __init__(self, gamma: float = 2.0, weight: Sequence[float] | torch.Tensor | None = None) -> None:
        super().__init__()
        weight = None if weight is None else torch.as_tensor(weight, dtype=torch.float32)
        self.focal = FocalLoss(gamma=gamma, weight=weight, use_softmax=True, to_onehot_y=True)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.focal(logits, labels.long().view(-1, 1))


class MultiTaskLoss(nn.Module):
    """``seg_weight * seg_loss + cls_weight * cls_loss + sum(aux_weight * aux_loss)``.

    Auxiliary outputs are scored against the lesion mask, resized (nearest) to their size:
    ``Head.DEEP_SUPERVISION`` (a list of seg logits: the mean of ``seg_loss`` over the list),
    ``Head.OBJECT_REGIONS`` (``(B, 2, h, w)`` background/lesion region logits: cross-entropy), an output whose name is
    also a key of the target dict (an auxiliary classification target such as BI-RADS, ``(B, n)`` logits against
    ``(B,)`` category indices: cross-entropy over the items that have one, index -1 left out), and any other key whose
    value is a tensor of seg logits (e.g. the first pass of circle training): ``seg_loss``. Outputs without a weight
    are ignored; a weighted output that the network did not return is an error.

    The last call's terms are kept (detached) in ``self.terms`` for logging.

    Args:
        seg_loss: loss on ``(B, S, H, W)`` logits vs ``(B, 1, H, W)`` mask, e.g. MONAI's ``DiceCELoss(sigmoid=True)``
            for one lesion channel.
        cls_loss: loss on ``(B, K)`` logits vs ``(B,)`` labels, e.g. ``torch.nn.CrossEntropyLoss``.
        seg_weight: weight of the segmentation term (the paper's lambda).
        cls_weight: weight of the classification term.
        aux_weights: weight per auxiliary output key.

    Raises:
        ValueError: a negative weight.
    """

    def __init__(
        self,
        seg_loss: nn.Module,
        cls_loss: nn.Module,
        seg_weight: float = 1.0,
        cls_weight: float = 1.0,
        aux_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.seg_loss, self.cls_loss = seg_loss, cls_loss
        self.seg_weight, self.cls_weight = float(seg_weight), float(cls_weight)
        self.aux_weights = {str(k): float(v) for k, v in (aux_weights or {}).items()}
        for name, weight in {"seg_weight": self.seg_weight, "cls_weight": self.cls_weight, **self.aux_weights}.items():
            if weight < 0:
                raise ValueError(f"loss weight {name!r} must be >= 0, got {weight}")
        self.terms: dict[str, float] = {}

    def main_terms(self, pred: Mapping[str, object], target: Mapping[str, torch.Tensor]
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``seg_weight * seg_loss + cls_weight * cls_loss`` and its two terms, without the auxiliary outputs (which
        networks return in training only): the loss of a validation batch."""
        for key, where in ((Head.SEG, pred), (Head.CLS, pred), (Head.SEG, target), (Head.CLS, target)):
            if key not in where:
                side = "prediction" if where is pred else "target"
                raise KeyError(f"MultiTaskLoss: the {side} dict has no {key.value!r} key (keys: {list(where)})")
        seg = self.seg_loss(pred[Head.SEG], target[Head.SEG].float())
        cls = self.cls_loss(pred[Head.CLS], target[Head.CLS].long().view(-1))
        return self.seg_weight * seg + self.cls_weight * cls, {"seg": seg, "cls": cls}

    def forward(self, pred: Mapping[str, object], target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        total, terms = self.main_terms(pred, target)
        mask = target[Head.SEG].float()
        for key, weight in self.aux_weights.items():
            if weight == 0:
                continue
            if key not in pred:
                raise KeyError(f"MultiTaskLoss: aux weight given for {key!r} but the network returned {list(pred)}")
            aux = self._aux_loss(key, pred[key], mask, target.get(key))
            terms[key] = aux
            total = total + weight * aux
        self.terms = {k: float(v.detach()) for k, v in terms.items()}
        return total

    def _aux_loss(self, key: str, value: object, mask: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is not None:  # an auxiliary classification target
            logits, labels = torch.as_tensor(value).float(), labels.long().view(-1)
            # the mean over the items that have a value; a batch without any gives 0, not cross_entropy's 0/0 NaN
            valid = labels >= 0
            per_item = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
            return (per_item * valid).sum() / valid.sum().clamp(min=1)
        if key == Head.OBJECT_REGIONS:
            regions = torch.as_tensor(value)
            return F.cross_entropy(regions, _resize(mask, regions.shape[-2:])[:, 0].long())
        if isinstance(value, (list, tuple)):
            return torch.stack([self.seg_loss(v, _resize(mask, v.shape[-2:])) for v in value]).mean()
        value = torch.as_tensor(value)
        return self.seg_loss(value, _resize(mask, value.shape[-2:]))


def _resize(mask: torch.Tensor, size: torch.Size) -> torch.Tensor:
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.interpolate(mask, size=tuple(size), mode="nearest")
