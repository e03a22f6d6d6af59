"""Re-estimating a network's batch-norm statistics before evaluation, on images without their labels."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from monai.utils import min_version, optional_import

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = ["BN_RECALIBRATION_MODES", "BatchNormRecalibration", "has_batch_norm"]

# none: the statistics of training (augmented images); train: re-estimated on the training images as evaluated
# (no augmentation); target: re-estimated on the images being evaluated (label-free adaptation to their scanner)
BN_RECALIBRATION_MODES = ("none", "train", "target")


def has_batch_norm(network: torch.nn.Module) -> bool:
    """Whether ``network`` has batch-norm layers that keep running statistics."""
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
               for m in network.modules())


class BatchNormRecalibration:
    """Before an evaluator runs, replace the running mean and variance of the network's batch-norm layers by their
    average over ``loader``'s images (``torch.optim.swa_utils.update_bn``: momentum ``None``, equal weight per batch).

    The statistics a network keeps from training describe the augmented images of the training scanners; those of
    another scanner (gain, depth attenuation, speckle) differ, and every normalised feature shifts with them. Re-
    estimating them on the images to be evaluated (``target``; AdaBN, Li et al. 2016) uses no label, only the
    images; on the training images as evaluated (``train``) it removes the augmentation's share of the shift. Layers
    without running statistics (group or instance norm) are left as they are, and so is a network without batch norm.

    Attach after the checkpoint loader (both run on ``Events.STARTED``, in the order attached).

    Args:
        loader: the batches to estimate on; None: the evaluator's own ``data_loader`` (``target``).
        prepare_batch: builds the network input from a batch (the evaluator's when None).
        max_batches: at most this many batches (None: all).
        enabled: off: does nothing (the bundle's ``bn_recalibration: none``).

    Raises:
        ValueError: ``max_batches`` below 1.
    """

    def __init__(self, loader: Iterable | None = None, prepare_batch: Any = None, max_batches: int | None = None,
                 enabled: bool = True) -> None:
        if max_batches is not None and int(max_batches) < 1:
            raise ValueError(f"max_batches must be 1 or more (or None for all), got {max_batches}")
        self.loader, self.prepare_batch, self.enabled = loader, prepare_batch, bool(enabled)
        self.max_batches = None if max_batches is None else int(max_batches)
        self.batches = 0   # how many batches the last recalibration used

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def _inputs(self, engine: Any) -> Iterator[torch.Tensor]:
        prepare = self.prepare_batch or engine.prepare_batch
        loader = self.loader if self.loader is not None else engine.data_loader
        for batch in itertools.islice(loader, self.max_batches):
            self.batches += 1
            image = prepare(batch, engine.state.device, engine.non_blocking)[0]
            yield image.as_tensor() if hasattr(image, "as_tensor") else image

    def __call__(self, engine: Any) -> None:
        network = engine.network
        if not self.enabled or not has_batch_norm(network):
            return
        self.batches = 0
        with torch.no_grad():   # update_bn runs the forward passes in train mode and restores the mode after
            torch.optim.swa_utils.update_bn(self._inputs(engine), network)
        engine.logger.info(f"batch-norm statistics re-estimated on {self.batches} batches")
