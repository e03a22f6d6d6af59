"""``OperatingPoint``: the classification threshold, chosen on the validation fold with the checkpoint it belongs to."""

from __future__ import annotations

import json
import logging
from os import PathLike
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events

from pipeline.atomic import write_json_atomic
from pipeline.metrics import choose_operating_threshold, gather_arrays, positive_vs_rest

__all__ = ["OperatingPoint", "OPERATING_POINT", "read_operating_threshold", "write_operating_point"]

logger = logging.getLogger(__name__)

#: written beside ``model.pt`` by training, copied into exported bundles
OPERATING_POINT = "operating_point.json"


class OperatingPoint:
    """Attach to the validation evaluator: at each epoch whose validation score is the best so far (the epoch whose
    weights the key-metric saver keeps as ``model.pt``), choose the positive-class threshold that maximises Youden's J
    on the validation images and write it to ``save_dir/operating_point.json``.

    The argmax of a model trained on imbalanced classes decides for the majority class too often (a malignant
    sensitivity well below its AUC would allow); the threshold is chosen on the validation fold, never on the test
    set, and evaluation and ``bmtl predict`` decide with it.

    Args:
        save_dir: the folder of ``model.pt``.
        classes: class names of the datalist (the positive class is the last, "malignant").
        output_transform: engine output -> (positive-class probabilities, 0/1 labels), default
            ``pipeline.metrics.positive_vs_rest``.
    """

    def __init__(self, save_dir: str | PathLike, classes: list[str], output_transform: Any = positive_vs_rest) -> None:
        if not classes:
            raise ValueError("classes must name at least one class")
        self.path = Path(save_dir) / OPERATING_POINT
        self.classes = [str(c) for c in classes]
        self.output_transform = output_transform
        self._scores: list[float] = []
        self._truth: list[float] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        # registered after the workflow's own best-metric update (Workflow.__init__), so best_metric_epoch is current
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write_if_best)

    def _reset(self, engine: Engine) -> None:
        self._scores, self._truth = [], []

    def _collect(self, engine: Engine) -> None:
        probs, labels = self.output_transform(engine.state.output)
        self._scores += [float(torch.as_tensor(p).reshape(-1)[0]) for p in probs]
        self._truth += [float(torch.as_tensor(y).reshape(-1)[0]) for y in labels]

    def _write_if_best(self, engine: Engine) -> None:
        scores = np.concatenate(gather_arrays([np.asarray(self._scores, dtype=np.float64)]))
        truth = np.concatenate(gather_arrays([np.asarray(self._truth, dtype=np.float64)]))
        if engine.state.best_metric_epoch != engine.state.epoch or idist.get_rank() > 0:
            return
        threshold = write_operating_point(self.path.parent, self.classes[-1], scores, truth > 0.5,
                                          epoch=int(engine.state.epoch))
        logger.info("operating threshold of %s: %s (epoch %d)", self.classes[-1], threshold, engine.state.epoch)


def write_operating_point(save_dir: str | PathLike, positive_class: str, scores: np.ndarray,
                          is_positive: np.ndarray, **extra: Any) -> float | None:
    """Choose the threshold on validation ``scores`` (positive-class probabilities) and write
    ``save_dir/operating_point.json`` (atomically) with how it was chosen and ``extra`` entries; returns it."""
    scores, is_positive = np.asarray(scores, dtype=np.float64), np.asarray(is_positive).astype(bool)
    threshold = choose_operating_threshold(scores, is_positive)
    record = {"positive_class": str(positive_class), "threshold": threshold,
              "criterion": "Youden's J (sensitivity + specificity - 1) on the validation fold",
              "n_images": int(len(scores)), "n_positive": int(is_positive.sum())}
    if threshold is None:
        record["note"] = "one class only in the validation fold: the predicted class is the argmax"
    write_json_atomic(Path(save_dir) / OPERATING_POINT, {**record, **extra})
    return threshold


def read_operating_threshold(save_dir: str | PathLike) -> float | None:
    """The threshold in ``save_dir/operating_point.json``; ``None`` (argmax) when the file is absent (runs from before
    the operating point existed) or holds no threshold.

    Raises:
        ValueError: the file exists but is not a valid operating point (names the file).
    """
    path = Path(save_dir) / OPERATING_POINT
    if not path.is_file():
        return None
    try:
        threshold = json.loads(path.read_text(encoding="utf-8")).get("threshold")
        if threshold is None:
            return None
        threshold = float(threshold)
    except (ValueError, AttributeError, TypeError) as err:
        raise ValueError(f"{path}: not a valid operating point ({err}); delete it to decide by argmax") from err
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"{path}: threshold {threshold} is outside (0, 1); delete the file to decide by argmax")
    return threshold
