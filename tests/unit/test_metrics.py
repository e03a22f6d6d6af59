from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from pipeline.metrics import CLASSIFICATION_METRICS, ClassificationMetrics, classification_scores, segmentation_scores


def _masks():
    truth = torch.zeros(4, 1, 32, 32)
    pred = torch.zeros(4, 1, 32, 32)
    truth[0, :, 8:16, 8:16] = 1
    pred[0, :, 8:16, 8:16] = 1  # perfect
    truth[1, :, 8:16, 8:16] = 1
    pred[1, :, 8:16, 12:20] = 1  # half overlap
    # image 2: both empty (a normal image predicted normal) -> 1
    pred[3, :, 0:4, 0:4] = 1  # empty truth, non-empty prediction -> 0
    return pred, truth


def test_segmentation_conventions_for_empty_truth():
    scores = segmentation_scores(*_masks())
    np.testing.assert_allclose(scores["dice"], [1.0, 0.5, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(scores["jaccard"], [1.0, 1 / 3, 1.0, 0.0], atol=1e-6)
    assert scores["hd95"][0] == 0 and scores["hd95"][1] > 0
    assert math.isnan(scores["hd95"][2]) and math.isnan(scores["hd95"][3])


def test_classification_scores_match_hand_counts():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8], [0.55, 0.45]])
    labels = np.array([0, 0, 1, 1, 1])
    s = classification_scores(probs, labels)
    assert s["sensitivity"] == pytest.approx(2 / 3) and s["specificity"] == 1.0
    assert s["accuracy"] == pytest.approx(4 / 5)
    assert s["auc"] == pytest.approx(1.0)
    assert s["confusion_matrix"] == [[2, 0], [1, 2]]
    assert s["balanced_accuracy"] == pytest.approx((1 + 2 / 3) / 2)


def test_three_classes_macro_auc_and_single_class_nan():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1, 1], size=30)
    labels = np.arange(30) % 3
    s = classification_scores(probs, labels)
    assert 0 <= s["auc_macro_ovr"] <= 1 and len(s["confusion_matrix"]) == 3
    only_one = classification_scores(probs[:5], np.zeros(5, dtype=int))
    assert math.isnan(only_one["auc"]) and math.isnan(only_one["sensitivity"])


def test_ignite_metric_accumulates_over_iterations():
    batches = [
        (torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.tensor([0, 1])),
        ([torch.tensor([0.7, 0.3]), torch.tensor([0.4, 0.6])], [torch.tensor([1]), torch.tensor([1])]),
    ]
    engine = Engine(lambda e, batch: batch)
    ClassificationMetrics(prefix="val_").attach(engine, "cls")
    state = engine.run(batches, max_epochs=1)
    for name in CLASSIFICATION_METRICS:
        assert f"val_{name}" in state.metrics
    assert state.metrics["val_accuracy"] == pytest.approx(3 / 4)
    assert state.metrics["val_sensitivity"] == pytest.approx(2 / 3)
