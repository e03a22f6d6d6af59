"""Fold ensembles: several models whose lesion and class probabilities are averaged (as nnU-Net averages its folds),
after checking that they expect the same input and mean the same classes.

``bmtl predict`` averages exported bundles (``check_ensemble_member``, ``average_probabilities``); the bundles'
``evaluating`` workflow averages the evaluated run's checkpoint with ``ensemble_checkpoints`` (other runs of the same
configuration, ``ensemble_inferer``) the same way, so an ensemble is scored as it predicts.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer

from pipeline.keys import Head
from pipeline.networks.utils import lesion_probability

__all__ = ["ENSEMBLE_KEYS", "ensemble_value", "check_ensemble_member", "bundle_cls_threshold", "ensemble_threshold",
           "average_probabilities", "check_member_runs", "load_members", "MeanEnsembleInferer", "ensemble_inferer"]

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


def check_member_runs(checkpoints: Sequence[str | os.PathLike], run_config: str | os.PathLike) -> None:
    """Refuse a checkpoint whose training run expected another input, meant other classes or built another network
    than the evaluated run: ``ENSEMBLE_KEYS`` and ``network_name`` of the ``run_config.json`` beside its ``models/``
    folder against ``run_config`` (the evaluated run's); a key either lacks, or a bare checkpoint without a
    ``run_config.json``, is checked only by whether the weights fit the network (``load_members``).

    Raises:
        ValueError: naming the checkpoint, the key and both values.
    """
    ours = json.loads(Path(run_config).read_text(encoding="utf-8")) if Path(run_config).is_file() else {}
    for path in checkpoints:
        config = Path(path).resolve().parent.parent / "run_config.json"
        if not config.is_file():
            continue
        recorded = json.loads(config.read_text(encoding="utf-8"))
        for key in (*ENSEMBLE_KEYS, "network_name"):
            if key not in recorded or key not in ours:
                continue
            theirs, expected = (json.dumps(v, sort_keys=True, default=str) for v in (recorded[key], ours[key]))
            if theirs != expected:
                raise ValueError(f"{path} cannot be averaged with the evaluated run: its run's {key} is {theirs}, not "
                                 f"{expected} ({config}; an ensemble needs runs trained on the same classes with the "
                                 "same preprocessing)")


def load_members(network: torch.nn.Module, checkpoints: Sequence[str | os.PathLike],
                 device: str | torch.device | None = None) -> list[torch.nn.Module]:
    """Copies of ``network`` holding the weights of ``checkpoints`` (training runs' ``models/model.pt``), in eval mode.

    Raises:
        DataError: a checkpoint that is missing, unreadable or does not fit the network (naming the file).
    """
    from ignite.handlers import Checkpoint

    from pipeline.handlers.checkpoint import check_checkpoint_fits, load_checkpoint

    members = []
    for path in checkpoints:
        member = copy.deepcopy(network)
        checkpoint = load_checkpoint(path, device)
        check_checkpoint_fits(checkpoint, {"network": member}, path)
        # Ignite's loader, as MONAI's CheckpointLoader: a checkpoint of one object is that object's state dict
        Checkpoint.load_objects(to_load={"network": member}, checkpoint=checkpoint)
        members.append(member.eval())
    return members


class MeanEnsembleInferer(Inferer):
    """The lesion and class probabilities of the evaluated network and ``members``, each model through ``inferer``
    (with its test-time augmentation), averaged as ``bmtl predict`` averages a fold ensemble
    (``average_probabilities``) and returned as logits, so that the bundle's activations give the averages back.

    Args:
        inferer: the bundle's inferer (``MultiTaskInferer``), called once per model.
        members: the other models (``load_members``).
    """

    def __init__(self, inferer: Callable[..., dict], members: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        self.inferer = inferer
        self.members = list(members)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> dict:
        lesion, classes = average_probabilities([network, *self.members],
                                                lambda x, model: self.inferer(x, model, *args, **kwargs), inputs)
        return {Head.SEG.value: torch.logit(lesion, eps=1e-6).to(inputs.device),
                Head.CLS.value: torch.log(classes.clamp_min(1e-12)).to(inputs.device)}


def ensemble_inferer(inferer: Callable[..., dict], network: torch.nn.Module, checkpoints: Sequence[str | os.PathLike],
                     device: str | torch.device | None, run_config: str | os.PathLike,
                     bn_recalibration: str = "none") -> Callable[..., dict]:
    """``inferer`` itself without ``checkpoints``; else a ``MeanEnsembleInferer`` over ``network`` and the
    checkpoints' models (the evaluating workflow's ``ensemble_checkpoints``).

    Args:
        run_config: the evaluated run's ``run_config.json`` (``check_member_runs``).
        bn_recalibration: the evaluation's; it re-estimates the evaluated network only, so an ensemble needs "none".

    Raises:
        ValueError: ``bn_recalibration`` with an ensemble, or a member of another configuration.
    """
    if not checkpoints:
        return inferer
    if bn_recalibration != "none":
        raise ValueError(f"ensemble_checkpoints with bn_recalibration={bn_recalibration!r}: the statistics would be "
                         "re-estimated for the evaluated network only; evaluate an ensemble with bn_recalibration=none")
    check_member_runs(checkpoints, run_config)
    return MeanEnsembleInferer(inferer, load_members(network, checkpoints, device))
