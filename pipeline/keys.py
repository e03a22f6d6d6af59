"""Names shared by networks, losses, batches and metrics."""

from __future__ import annotations

from monai.utils import StrEnum

__all__ = ["Head", "BatchKey"]


class Head(StrEnum):
    """Keys of the dict every registered network returns.

    ``SEG`` holds ``(B, S, H, W)`` segmentation logits (S=1: one lesion channel, read with a sigmoid; this is the
    zoo-wide default), ``CLS`` holds ``(B, K)`` classification logits. Auxiliary outputs use the other names.
    """

    SEG = "seg"
    CLS = "cls"
    DEEP_SUPERVISION = "deep_supervision"  # list of (B, S, h, w) logits, coarse to fine
    OBJECT_REGIONS = "object_regions"  # (B, R, h, w) coarse soft-region logits (MTL-OCA)


class BatchKey(StrEnum):
    """Keys of a datalist item and of a batch."""

    IMAGE = "image"
    LABEL = "label"  # the lesion mask
    CLS = "cls"  # class index into the datalist's ``classes``
    GROUP = "group"  # patient or duplicate-cluster id
    FOLD = "fold"
    SOURCE = "source"
    ID = "id"
    AUX = "aux"  # {target name: category index} of the auxiliary classification targets (``add_aux_targets``)
