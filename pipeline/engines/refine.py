"""Prediction refinement (paper 004): the two heads are made to agree on "normal"."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from pipeline.metrics import predicted_classes

__all__ = ["RefinePredictiond", "REFINED_KEY"]

REFINED_KEY = "refined"


class RefinePredictiond(MapTransform):
    """Post-processing on decollated outputs: empty the binary mask of an image classified normal, and call an image
    with no lesion pixel normal (its probabilities become one-hot "normal"). Records whether anything changed
    under ``"refined"``.

    "Classified normal" is the decision the report and ``bmtl predict`` print: the argmax or, with an operating
    ``threshold`` on the positive class (``pipeline.metrics.predicted_classes``), the positive class wherever its
    probability reaches it. A no-op when the classes have no normal class (``normal_index=None``) or when
    ``enabled`` is False.

    Args:
        keys: the binary segmentation key (e.g. ``"pred_seg"``).
        cls_key: the class-probability key (e.g. ``"pred_cls"``).
        normal_index: index of the normal class, or None.
        empty_mask_means_normal: apply the second rule.
        normal_empties_mask: apply the first rule.
        enabled: switch the whole transform.
        threshold: operating threshold of the positive class (the last one); ``None``: argmax.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred_seg",
        cls_key: str = "pred_cls",
        normal_index: int | None = 0,
        empty_mask_means_normal: bool = True,
        normal_empties_mask: bool = True,
        enabled: bool = True,
        allow_missing_keys: bool = False,
        threshold: float | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.cls_key, self.normal_index, self.threshold = cls_key, normal_index, threshold
        self.empty_mask_means_normal, self.normal_empties_mask = empty_mask_means_normal, normal_empties_mask
        self.enabled = enabled

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        changed = False
        if self.enabled and self.normal_index is not None:
            for key in self.key_iterator(d):
                probs = torch.as_tensor(d[self.cls_key])
                mask = d[key]
                decided = predicted_classes(probs.reshape(-1).detach().cpu().numpy(), self.threshold)
                is_normal = int(decided[0]) == self.normal_index
                has_lesion = bool(torch.as_tensor(mask).any())
                if self.normal_empties_mask and is_normal and has_lesion:
                    d[key] = mask * 0
                    changed = True
                elif self.empty_mask_means_normal and not has_lesion and not is_normal:
                    one_hot = torch.zeros_like(probs)
                    one_hot.reshape(-1)[self.normal_index] = 1
                    d[self.cls_key] = one_hot
                    changed = True
        d[REFINED_KEY] = changed
        return d
