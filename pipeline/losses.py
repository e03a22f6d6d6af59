"""The joint loss: a weighted sum of a segmentation loss, a classification loss and auxiliary terms.

``MultiTaskLoss(pred, target)`` takes the network's output dict and the target dict ``{"seg": mask, "cls": label}``
built by ``pipeline.engines.MultiTaskPrepareBatch``, so MONAI's stock ``SupervisedTrainer`` runs it unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from monai.losses import DiceCELoss, DiceFocalLoss, DiceLoss, FocalLoss
from torch import nn
from torch.nn import functional as F

from pipeline.keys import Head

__all__ = ["MultiTaskLoss", "make_seg_loss", "make_cls_loss", "SEG_LOSSES", "CLS_LOSSES"]

SEG_LOSSES = ("dice", "dice_ce", "dice_focal")
CLS_LOSSES = ("ce", "focal")


def make_seg_loss(name: str = "dice_ce", seg_channels: int = 1, focal_gamma: float = 2.0) -> nn.Module:
    """MONAI segmentation loss by preset name, matching the zoo's seg convention.

    One lesion channel is read with a sigmoid (MONAI then uses binary cross-entropy); two or more channels with a
    softmax against a one-hot target.

    Args:
        name: ``"dice"`` (Dice alone, as paper 004's code), ``"dice_ce"`` (Dice + cross-entropy) or
            ``"dice_focal"`` (Dice + focal).
        seg_channels: channels of the segmentation logits.
        focal_gamma: focusing parameter of the focal term.

    Raises:
        ValueError: unknown ``name`` or ``seg_channels`` < 1.
    """
    if seg_channels < 1:
        raise ValueError(f"seg_channels must be >= 1, got {seg_channels}")
    act = {"sigmoid": True} if seg_channels == 1 else {"softmax": True, "to_onehot_y": True}
    if name == "dice":
        return DiceLoss(**act)
    if name == "dice_ce":
        return DiceCELoss(**act)
    if name == "dice_focal":
        return DiceFocalLoss(gamma=focal_gamma, **act)
    raise ValueError(f"seg_loss must be one of {SEG_LOSSES}, got {name!r}")


def make_cls_loss(
    name: str = "ce", class_weights: Sequence[float] | None = None, focal_gamma: float = 2.0
) -> nn.Module:
    """Classification loss on ``(B, K)`` logits and ``(B,)`` integer labels.

    Args:
        name: ``"ce"`` (cross-entropy) or ``"focal"`` (MONAI ``FocalLoss`` with softmax).
        class_weights: optional per-class weights (length K).
        focal_gamma: focusing parameter of the focal loss.

    Raises:
        ValueError: unknown ``name``.
    """
    weight = None if class_weights is None else torch.as_tensor(list(class_weights), dtype=torch.float32)
    if name == "ce":
        return nn.CrossEntropyLoss(weight=weight)
    if name == "focal":
        return _FocalClassificationLoss(focal_gamma, weight)
    raise ValueError(f"cls_loss must be one of {CLS_LOSSES}, got {name!r}")


class _FocalClassificationLoss(nn.Module):
    """MONAI ``FocalLoss`` adapted to ``(B, K)`` logits with ``(B,)`` integer labels."""

    def __init__(self, gamma: float, weight: torch.Tensor | None) -> None:
        super().__init__()
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
        seg_loss: loss on ``(B, S, H, W)`` logits vs ``(B, 1, H, W)`` mask (see ``make_seg_loss``).
        cls_loss: loss on ``(B, K)`` logits vs ``(B,)`` labels (see ``make_cls_loss``).
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
