"""``pipeline.handlers.summary``: the bootstrap confidence intervals of an evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.handlers.summary import bootstrap_intervals
from pipeline.metrics import resampled_classification_scores


def test_resamples_scored_in_chunks_give_the_intervals_of_all_resamples_at_once():
    rng = np.random.default_rng(0)
    n = 4500   # 444 resamples per chunk: the 1,000 resamples are scored in three chunks
    probs = rng.dirichlet([1.0, 1.0], size=n)
    labels = (rng.random(n) < probs[:, 1]).astype(int)
    dice = rng.random(n)
    ci = bootstrap_intervals(probs, labels, dice, dice, n_classes=2, positive=1, threshold=None, n_bootstrap=1000,
                             seed=3)
    resamples = np.random.default_rng(3).integers(0, n, size=(1000, n))   # bootstrap_intervals's draw
    whole = resampled_classification_scores(probs, labels, resamples, positive=1)
    for name in ("auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity"):
        assert ci[name] == pytest.approx(list(np.percentile(whole[name], [2.5, 97.5])), abs=1e-12), name
    assert ci["dice"] == pytest.approx(list(np.percentile(dice[resamples].mean(1), [2.5, 97.5])), abs=1e-12)
