"""Prediction refinement (paper 004): the two heads are made to agree on "normal"."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = ["RefinePredictiond", "REFINED_KEY"]

REFINED_KEY = "refined"


class RefinePredictiond(MapTransform):
    """Post-processing on decollated outputs: empty the binary mask of an image classified normal, and call an image
    with no lesion pixel normal (its probabilities become one-hot "normal"). Records whether anything changed
    under ``"refined"``.

    A no-op when the classes have no normal class (``normal_index=None``) or when ``enabled`` is False.

    Args:
        keys: the binary segmentation key (e.g. ``"pred_seg"``).
        cls_key: the class-probability key (e.g. ``"pred_cls"``).
        normal_index: index of the normal class, or None.
        empty_mask_means_normal: apply the second rule.
        normal_empties_mask: apply the first rule.
        enabled: switch the whole transform.
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
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.cls_key, self.normal_index = cls_key, normal_index
        self.empty_mask_means_normal, self.normal_empties_mask = empty_mask_means_normal, normal_empties_mask
        self.enabled = enabled

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        changed = False
        if self.enabled and self.normal_index is not None:
            for key in self.key_iterator(d):
                probs = torch.as_tensor(d[self.cls_key])
                mask = d[key]
                is_normal = int(torch.argmax(probs.reshape(-1))) == self.normal_index
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
