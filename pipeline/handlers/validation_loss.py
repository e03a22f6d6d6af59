"""The training loss on the validation images, from the validator's own forward passes."""

from __future__ import annotations

from typing import Any

import torch
from monai.engines import IterationEvents
from monai.utils import CommonKeys, min_version, optional_import

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
idist, _ = optional_import("ignite", "0.4.11", min_version, "distributed")

__all__ = ["ValidationLoss"]


class ValidationLoss:
    """Put the mean loss over a validator's images into its ``state.metrics`` (``val_loss``, ``val_seg_loss``,
    ``val_cls_loss``), so that the training history, MLflow and the learning curves show it beside the training loss.

    The loss is computed on the network's logits right after the validator's forward pass (``FORWARD_COMPLETED``,
    before post-processing turns them into probabilities and masks), against the batch's labels at the network's
    size: no second forward pass. A ``MultiTaskLoss`` is scored without its auxiliary outputs (``main_terms``:
    networks return them in training only); any other loss is called as it is. Batches are weighted by their size;
    under ``torch.distributed`` the sums are gathered over the ranks.

    Args:
        loss_fn: the training loss (``pred`` dict vs ``target`` dict).
        prefix: the metric names' prefix.
    """

    def __init__(self, loss_fn: Any, prefix: str = "val_") -> None:
        self.loss_fn, self.prefix = loss_fn, prefix
        self._sums: dict[str, float] = {}
        self._n = 0

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self._accumulate)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._complete)

    def _reset(self, engine: Any) -> None:
        self._sums, self._n = {}, 0

    def _accumulate(self, engine: Any) -> None:
        pred, target = engine.state.output[CommonKeys.PRED], engine.state.output[CommonKeys.LABEL]
        with torch.no_grad():
            if hasattr(self.loss_fn, "main_terms"):
                total, terms = self.loss_fn.main_terms(pred, target)
            else:
                total, terms = self.loss_fn(pred, target), {}
        n = int(engine.state.output[CommonKeys.IMAGE].shape[0])
        for name, value in {"loss": total, **{f"{k}_loss": v for k, v in terms.items()}}.items():
            self._sums[name] = self._sums.get(name, 0.0) + float(value) * n
        self._n += n

    def _complete(self, engine: Any) -> None:
        names = sorted(self._sums)
        totals = idist.all_reduce(torch.tensor([self._sums[k] for k in names] + [float(self._n)], dtype=torch.float64))
        n = float(totals[-1])
        for name, value in zip(names, totals[:-1].tolist()):
            engine.state.metrics[f"{self.prefix}{name}"] = value / n if n else float("nan")
