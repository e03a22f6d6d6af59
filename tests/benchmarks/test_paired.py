"""``benchmarks/paired.py``: the paired difference of two evaluations over seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from paired import paired_difference   # benchmarks/ is on the path (tests/conftest.py)


def _evaluation(folder: Path, dice: np.ndarray, prob: np.ndarray, truth: np.ndarray, ids=None) -> Path:
    folder.mkdir(parents=True)
    pd.DataFrame({"id": ids if ids is not None else [f"c{i}" for i in range(len(dice))], "dice": dice,
                  "true_class": np.where(truth, "malignant", "benign"), "prob_malignant": prob}
                 ).to_csv(folder / "per_image.csv", index=False)
    return folder


def test_a_constant_dice_gain_and_a_perfect_ranking_are_measured(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.random(60) < 0.5
    a_dirs, b_dirs = [], []
    for seed in range(2):
        dice = rng.uniform(0.4, 0.9, 60)
        noisy = np.clip(truth * 0.3 + rng.uniform(0, 0.7, 60), 0, 1)
        a_dirs.append(_evaluation(tmp_path / f"a{seed}", dice, noisy, truth))
        b_dirs.append(_evaluation(tmp_path / f"b{seed}", dice + 0.05, truth * 0.8 + 0.1, truth))   # AUC 1
    result = paired_difference(a_dirs, b_dirs, n_bootstrap=200)
    point, low, high = result["dice"]
    assert point == pytest.approx(0.05) and low == pytest.approx(0.05) and high == pytest.approx(0.05)
    point, low, high = result["auc"]
    assert 0 < low <= point <= high and point > 0.05


def test_different_images_or_seed_counts_are_refused(tmp_path):
    truth = np.arange(10) % 2 == 0
    a = _evaluation(tmp_path / "a", np.ones(10), np.full(10, 0.5), truth)
    b = _evaluation(tmp_path / "b", np.ones(10), np.full(10, 0.5), truth, ids=[f"x{i}" for i in range(10)])
    with pytest.raises(ValueError, match="different images"):
        paired_difference([a], [b])
    with pytest.raises(ValueError, match="same number"):
        paired_difference([a], [a, a])
