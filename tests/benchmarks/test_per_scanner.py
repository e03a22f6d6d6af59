"""``benchmarks/per_scanner.py``: test scores scanner by scanner."""

from __future__ import annotations

import math

import pandas as pd
import pytest

import per_scanner   # benchmarks/ is on the path (tests/conftest.py)
from pipeline.data.prepare import prepare
from pipeline.data.synthetic import make_us_dataset


def test_scores_are_split_by_the_scanner_of_each_image():
    per_image = pd.DataFrame({
        "id": ["a", "b", "c", "d", "e"],
        "true_class": ["malignant", "benign", "malignant", "benign", "benign"],
        "prob_malignant": [0.9, 0.2, 0.1, 0.8, 0.3],
        "dice": [0.8, 0.6, 0.5, 0.7, 0.9],
    })
    devices = {"a": "X", "b": "X", "c": "Y", "d": "Y", "e": "Z"}
    table = per_scanner.by_scanner(per_image, devices).set_index("scanner")
    assert table.loc["X", "auc"] == 1.0 and table.loc["Y", "auc"] == 0.0   # ranked right on X, wrong on Y
    assert math.isnan(table.loc["Z", "auc"])                                 # one class only
    assert table.loc["X", "dice"] == pytest.approx(0.7) and table.loc["Y", "malignant"] == 1
    assert list(table["images"]) == [2, 2, 1]
    with pytest.raises(ValueError, match="without a scanner"):
        per_scanner.by_scanner(per_image, {"a": "X"})


def test_a_datalist_without_scanners_is_refused_with_what_to_do(tmp_path):
    raw = make_us_dataset(tmp_path / "raw", n=12, seed=0, size=(32, 32))
    datalist = prepare("busi", raw, tmp_path / "prepared", n_folds=2, seed=0, test_fold=1)[1]["datalist"]
    with pytest.raises(ValueError, match="no 'device' field.*--source busbra"):
        per_scanner.test_image_scanners(datalist)
