from __future__ import annotations

import json

import pytest
import torch
from ignite.engine import Engine, Events

from pipeline.handlers import OPERATING_POINT, OperatingPoint, read_operating_threshold

CLASSES = ["benign", "malignant"]


def _validator(epochs_probs, labels, best_epochs):
    """An engine standing in for the validation evaluator: in epoch e, image i has malignant probability
    ``epochs_probs[e - 1][i]``; ``best_epochs`` are reported as best-metric epochs, as MONAI's Workflow does."""
    def step(engine, i):
        p = epochs_probs[engine.state.epoch - 1][i]
        return [{"pred_cls": torch.tensor([1 - p, p]), "label_cls": torch.tensor(labels[i])}]

    engine = Engine(step)
    engine.state.best_metric_epoch = -1

    @engine.on(Events.EPOCH_COMPLETED)
    def _best(e):  # registered before the handler's, as MONAI's Workflow registers its own
        if e.state.epoch in best_epochs:
            e.state.best_metric_epoch = e.state.epoch

    return engine


def test_threshold_of_the_best_epoch_is_written_and_read(tmp_path):
    labels = [0, 0, 0, 1, 1]
    epochs = [[0.1, 0.2, 0.3, 0.4, 0.9],      # best: separable at 0.35
              [0.1, 0.6, 0.2, 0.3, 0.7]]      # not best: its threshold must not replace epoch 1's
    engine = _validator(epochs, labels, best_epochs={1})
    OperatingPoint(tmp_path, CLASSES).attach(engine)
    engine.run(range(5), max_epochs=2)
    record = json.loads((tmp_path / OPERATING_POINT).read_text())
    assert record["epoch"] == 1 and record["positive_class"] == "malignant"
    assert record["n_images"] == 5 and record["n_positive"] == 2
    assert record["threshold"] == pytest.approx(0.35)
    assert read_operating_threshold(tmp_path) == pytest.approx(0.35)
    # a later best epoch replaces it, from that epoch's images only: J = 2/3 at 0.25 (one benign image above)
    # beats J = 1/2 at 0.65
    engine = _validator(epochs, labels, best_epochs={1, 2})
    OperatingPoint(tmp_path, CLASSES).attach(engine)
    engine.run(range(5), max_epochs=2)
    record = json.loads((tmp_path / OPERATING_POINT).read_text())
    assert record["epoch"] == 2 and record["n_images"] == 5 and record["threshold"] == pytest.approx(0.25)


def test_a_validation_fold_with_one_class_means_argmax(tmp_path):
    engine = _validator([[0.2, 0.7]], [0, 0], best_epochs={1})
    OperatingPoint(tmp_path, CLASSES).attach(engine)
    engine.run(range(2), max_epochs=1)
    record = json.loads((tmp_path / OPERATING_POINT).read_text())
    assert record["threshold"] is None and "argmax" in record["note"]
    assert read_operating_threshold(tmp_path) is None


def test_missing_or_bad_operating_point_files(tmp_path):
    assert read_operating_threshold(tmp_path) is None          # runs from before the operating point
    (tmp_path / OPERATING_POINT).write_text('{"threshold": 1.5}')
    with pytest.raises(ValueError, match="outside \\(0, 1\\)"):
        read_operating_threshold(tmp_path)
    (tmp_path / OPERATING_POINT).write_text("{not json")
    with pytest.raises(ValueError, match=f"{OPERATING_POINT}: not a valid operating point"):
        read_operating_threshold(tmp_path)
    with pytest.raises(ValueError, match="classes"):
        OperatingPoint(tmp_path, [])
