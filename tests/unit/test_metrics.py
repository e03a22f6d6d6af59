from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from pipeline.metrics import (
    CLASSIFICATION_METRICS,
    ClassificationMetrics,
    classification_scores,
    decision_margin,
    expected_calibration_error,
    finite_or_none,
    gather_arrays,
    gather_by_rank,
    resampled_classification_scores,
    segmentation_scores,
)


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


@pytest.mark.parametrize("n_classes, threshold, normalised",
                         [(2, None, True), (2, 0.3, True), (3, None, True), (3, 0.45, True), (3, None, False)])
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_resampled_scores_equal_classification_scores_on_each_resample(n_classes, threshold, normalised):
    rng = np.random.default_rng(n_classes)
    probs = np.round(rng.dirichlet(np.ones(n_classes), size=40), 1)   # rounded: ties, as real probabilities have
    if normalised:
        probs = probs / probs.sum(1, keepdims=True)
    else:
        probs[::7] *= 0.5   # some rows do not sum to 1: no macro AUC (scikit-learn refuses them)
    labels = rng.integers(0, n_classes, size=40)
    groups = [rng.integers(0, 40, size=(30, 40)),                     # bootstrap resamples
              rng.integers(0, 40, size=(20, 6)),                      # small ones: some classes absent
              np.flatnonzero(labels == 0)[None, :4],                  # one class only: NaN AUC, balanced accuracy
              np.flatnonzero(labels != n_classes - 1)[None, :8],      # no positive: NaN sensitivity
              np.flatnonzero(labels == n_classes - 1)[None, :5]]      # no negative: NaN specificity
    for resamples in groups:
        got = resampled_classification_scores(probs, labels, resamples, threshold=threshold)
        for b, rows in enumerate(resamples):
            expected = classification_scores(probs[rows], labels[rows], threshold=threshold)
            for name in CLASSIFICATION_METRICS:
                np.testing.assert_allclose(got[name][b], expected[name], rtol=0, atol=1e-12,
                                           err_msg=f"{name} of resample {rows}")


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


def test_predicted_classes_argmax_or_operating_threshold():
    from pipeline.metrics import predicted_classes

    probs = np.array([[0.7, 0.3], [0.4, 0.6], [0.8, 0.2]])
    np.testing.assert_array_equal(predicted_classes(probs), [0, 1, 0])
    np.testing.assert_array_equal(predicted_classes(probs, threshold=0.25), [1, 1, 0])
    np.testing.assert_array_equal(predicted_classes(probs, threshold=0.65), [0, 0, 0])
    # three classes: below the threshold, the most probable of the *other* classes (never the positive one)
    three = np.array([[0.1, 0.35, 0.55], [0.5, 0.1, 0.4], [0.2, 0.5, 0.3]])
    np.testing.assert_array_equal(predicted_classes(three, threshold=0.6), [1, 0, 1])
    np.testing.assert_array_equal(predicted_classes(three, threshold=0.3), [2, 2, 2])
    np.testing.assert_array_equal(predicted_classes(three[0]), [2])   # one image as a 1-D vector
    with pytest.raises(ValueError, match="threshold must be in"):
        predicted_classes(probs, threshold=1.0)


def test_operating_threshold_maximises_youden_and_sits_between_images():
    from pipeline.metrics import choose_operating_threshold

    # separable: any threshold in (0.3, 0.4] is perfect; the chosen one lies strictly between the two images
    t = choose_operating_threshold([0.1, 0.2, 0.3, 0.4, 0.9], [0, 0, 0, 1, 1])
    assert 0.3 < t < 0.4 and t == pytest.approx(0.35)
    # one benign image above the malignant ones: Youden's J still picks the cut below the positives (J = 2/3)
    t = choose_operating_threshold([0.05, 0.1, 0.8, 0.2, 0.25], [0, 0, 0, 1, 1])
    assert 0.1 < t < 0.2
    # a low threshold on imbalanced scores: argmax (0.5) would call no positive image positive here
    scores, truth = [0.1, 0.12, 0.15, 0.3, 0.35, 0.4], [0, 0, 0, 1, 1, 1]
    t = choose_operating_threshold(scores, truth)
    s = classification_scores(np.stack([1 - np.array(scores), scores], 1), np.array(truth), threshold=t)
    assert s["sensitivity"] == 1.0 and s["specificity"] == 1.0
    assert classification_scores(np.stack([1 - np.array(scores), scores], 1), np.array(truth))["sensitivity"] == 0
    assert choose_operating_threshold([0.2, 0.7], [1, 1]) is None and choose_operating_threshold([0.2], [0]) is None


@pytest.mark.parametrize(
    "value, expected",
    [(0.5, 0.5), (np.float32(2.0), 2.0), ("0.25", 0.25), ({"mean": 0.75, "ci95": [0.7, 0.8]}, 0.75),
     (None, None), (float("nan"), None), (float("inf"), None), ("n/a", None), ({"ci95": None}, None)],
)
def test_finite_or_none(value, expected):
    assert finite_or_none(value) == expected


def test_gathers_outside_torch_distributed_are_the_local_values():
    parts = [np.arange(3), np.arange(2)]
    assert gather_by_rank(parts) == [parts]
    assert [p.tolist() for p in gather_arrays(parts)] == [[0, 1, 2], [0, 1]]
    with pytest.raises(TypeError, match="list, tuple or dict"):
        gather_by_rank(np.arange(3))


def test_decision_margin_is_the_distance_to_the_decision():
    np.testing.assert_allclose(decision_margin(np.array([[0.2, 0.8], [0.55, 0.45]])), [0.3, 0.05])
    np.testing.assert_allclose(decision_margin(np.array([0.1, 0.3, 0.6])), [0.15])
    np.testing.assert_allclose(decision_margin(np.array([[0.2, 0.8], [0.55, 0.45]]), threshold=0.4), [0.4, 0.05])


def test_ece_zero_for_calibrated_and_positive_for_overconfident():
    # 8 images at 0.25 with 2 positives, 8 at 0.75 with 6: every bin's frequency equals its confidence
    p = np.array([0.25] * 8 + [0.75] * 8)
    y = np.array([1, 1] + [0] * 6 + [1] * 6 + [0, 0])
    assert expected_calibration_error(p, y) == pytest.approx(0.0, abs=1e-6)
    # overconfident: 0.95 for malignant on images that are malignant half the time
    p_over = np.full(10, 0.95)
    y_over = np.array([1, 0] * 5)
    assert expected_calibration_error(p_over, y_over) == pytest.approx(0.45, abs=1e-5)


def test_ece_accepts_class_probabilities():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1, 1], 50)
    labels = rng.integers(0, 3, 50)
    two_d = expected_calibration_error(probs, labels, positive=-1)
    one_d = expected_calibration_error(probs[:, 2], labels == 2)
    assert two_d == pytest.approx(one_d) and two_d > 0
    assert math.isnan(expected_calibration_error(np.zeros((0, 2)), np.zeros(0)))


def test_roc_confidence_band_holds_the_curve_and_narrows_with_more_images():
    from sklearn.metrics import roc_curve

    from pipeline.metrics import roc_confidence_band

    rng = np.random.default_rng(0)

    def sample(n):
        positives = rng.random(n) < 0.4
        return np.clip(rng.normal(0.35 + 0.3 * positives, 0.2), 0, 1), positives

    scores, positives = sample(80)
    fpr_grid, low, high = roc_confidence_band(scores, positives, n_bootstrap=300)
    fpr, tpr, _ = roc_curve(positives, scores)
    curve = np.interp(fpr_grid, fpr, tpr)
    assert (low <= high).all() and np.mean((low <= curve + 1e-9) & (curve <= high + 1e-9)) > 0.95
    again = roc_confidence_band(scores, positives, n_bootstrap=300)
    np.testing.assert_array_equal(again[1], low)   # seeded: the same band every time
    big_scores, big_positives = sample(2000)
    _, big_low, big_high = roc_confidence_band(big_scores, big_positives, n_bootstrap=300)
    assert np.mean(big_high - big_low) < 0.5 * np.mean(high - low)
    _, none_low, _ = roc_confidence_band(scores, np.zeros(80), n_bootstrap=10)   # one class: no band
    assert np.isnan(none_low).all()
