"""Fold ensembles of ``bmtl predict``: several exported bundles whose lesion and class probabilities are averaged
(as nnU-Net averages its folds), after checking that they expect the same input and mean the same classes."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.keys import Head
from pipeline.networks.utils import lesion_probability

__all__ = ["ENSEMBLE_KEYS", "ensemble_value", "check_ensemble_member", "bundle_cls_threshold", "ensemble_threshold",
           "average_probabilities"]

logger = logging.getLogger(__name__)

# what must agree between the bundles of an ensemble: the input they expect and the meaning of their outputs
ENSEMBLE_KEYS = ("classes", "modality", "image_size", "resize_mode", "keep_aspect", "extra_input_channels",
                 "preprocessing_transforms", "input_normalisation", "slice_axis")


def ensemble_value(parser: Any, key: str) -> str | None:
    """``key`` of a bundle's configs as comparable text: the value, or the config itself for the transforms (whose
    parsed form is a list of objects)."""
    if key not in parser:
        return None
    value = parser.get(key) if key == "preprocessing_transforms" else parser.get_parsed_content(key)
    return json.dumps(value, sort_keys=True, default=str)


def check_ensemble_member(first_root: Path, first: Any, root: Path, parser: Any) -> None:
    """Refuse a bundle whose input or output would mean something else than the first bundle's.

    Args:
        first_root / first: the first bundle's folder and config parser.
        root / parser: the candidate's.

    Raises:
        ValueError: naming the bundle, the value that differs and both values.
    """
    for key in ENSEMBLE_KEYS:
        expected, other = ensemble_value(first, key), ensemble_value(parser, key)
        if expected != other:
            raise ValueError(f"{root} cannot be averaged with {first_root}: its {key} is {other}, not {expected} "
                             "(an ensemble needs bundles trained on the same classes with the same preprocessing)")


def bundle_cls_threshold(value: Any, root: Path) -> float | None:
    """A bundle's ``cls_threshold`` (deploy.yaml) as a number in (0, 1), or None (argmax).

    Raises:
        ValueError: a number outside (0, 1) (the message names the bundle's deploy.yaml).
    """
    if value in (None, "", "null", "None"):
        return None
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"cls_threshold of {root / 'configs' / 'deploy.yaml'} must be in (0, 1), got {value}")
    return float(value)


def ensemble_threshold(thresholds: Sequence[float | None]) -> float | None:
    """The operating threshold of an ensemble: the mean of its members' (each chosen on its own validation fold), or
    None (argmax) unless every member has one."""
    known = [t for t in thresholds if t is not None]
    if known and len(known) < len(thresholds):
        logger.warning("only some ensemble members have an operating threshold: deciding by argmax")
    return float(np.mean(known)) if known and len(known) == len(thresholds) else None


def average_probabilities(models: Sequence[Callable[[torch.Tensor], Any]], inferer: Callable[..., dict],
                          x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lesion probability ``(B, 1, h, w)`` and class probabilities ``(B, C)`` of ``x``, averaged over ``models``
    (MONAI's ``MeanEnsemble``; one model: its own), on the CPU."""
    from monai.transforms import MeanEnsemble

    lesion, classes = [], []
    for model in models:
        out = inferer(x, model)
        lesion.append(lesion_probability(out[Head.SEG.value].float()).cpu())
        classes.append(torch.softmax(out[Head.CLS.value].float(), dim=1).cpu())
    if len(models) == 1:
        return lesion[0], classes[0]
    mean = MeanEnsemble()
    return torch.as_tensor(mean(lesion)), torch.as_tensor(mean(classes))
