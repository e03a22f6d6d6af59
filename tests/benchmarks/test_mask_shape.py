"""``benchmarks/mask_shape.py``: shape descriptors of lesion masks and the network + shape stack."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

import mask_shape   # benchmarks/ is on the path (tests/conftest.py)
from pipeline.data.datalist import load_datalist, split_items
from pipeline.data.prepare import prepare
from pipeline.data.synthetic import make_us_dataset


def test_descriptors_of_known_shapes():
    tall = np.zeros((40, 40), np.uint8)
    tall[5:35, 10:20] = 255                       # 30 x 10, a full rectangle
    d = mask_shape.shape_descriptors(tall)
    assert d["height_over_width"] == pytest.approx(3.0)
    assert d["solidity"] == pytest.approx(1.0) and d["extent"] == pytest.approx(1.0)
    assert d["log_area"] == pytest.approx(np.log(300 / 1600))
    notched = tall.copy()
    notched[5:30, 15:20] = 0                      # an L: not convex, less solid
    assert mask_shape.shape_descriptors(notched)["solidity"] < 0.8
    speck = tall.copy()
    speck[0, 0] = 255                             # the largest component is described, not the speck
    assert mask_shape.shape_descriptors(speck)["height_over_width"] == pytest.approx(3.0)
    assert np.isnan(mask_shape.shape_descriptors(np.zeros((8, 8)))["solidity"])
    with pytest.raises(ValueError, match="2D"):
        mask_shape.shape_descriptors(np.zeros((2, 8, 8)))


@pytest.fixture
def prepared(tmp_path):
    raw = make_us_dataset(tmp_path / "raw", n=48, seed=0, size=(48, 48))
    datalist = prepare("busi", raw, tmp_path / "prepared", n_folds=3, seed=0, test_fold=2)[1]["datalist"]
    return datalist


def _fake_predictions(datalist, split: str, out, positive: str = "malignant"):
    """A ``bmtl predict`` folder whose masks are the truth and whose probability is a perfect ranking."""
    (out / "masks").mkdir(parents=True)
    malignant_class = load_datalist(datalist)["classes"].index(positive)
    rows = []
    for k, item in enumerate(split_items(datalist, 0, split)):
        mask = f"masks/{item['id']}_mask.png"
        shutil.copy(item["label"], out / mask)
        malignant = int(item["cls"]) == malignant_class
        rows.append({"file": f"{item['id']}.png", "status": "ok", "prob_malignant": (0.6 if malignant else 0.4)
                     + 0.001 * k, "mask": mask})
    pd.DataFrame(rows).to_csv(out / "predictions.csv", index=False)
    return out


def test_report_on_true_masks_and_a_perfect_network(prepared, tmp_path):
    val = _fake_predictions(prepared, "val", tmp_path / "val")
    test = _fake_predictions(prepared, "test", tmp_path / "test")
    report = mask_shape.shape_report(prepared, [val, val], [test, test], n_bootstrap=50)
    assert report["seeds"] == 2 and report["network_auc"] == pytest.approx(1.0)
    assert report["network_by_device"] == {"": [1.0, 1.0]}   # the synthetic datalist has no device column
    for name, figures in report["descriptors"].items():   # predicted masks = truth: the same AUC
        assert figures["predicted"] == pytest.approx(figures["truth"]), name
        assert figures["malignant_when"] in ("higher", "lower")
    assert 0.0 <= report["shape_truth_auc"] <= 1.0
    assert report["stacked_vs_network"]["lo"] <= report["stacked_vs_network"]["diff"] <= \
        report["stacked_vs_network"]["hi"]
    assert "network + shape" in mask_shape.markdown(report)


def test_predictions_of_other_images_or_failures_are_refused(prepared, tmp_path):
    val = _fake_predictions(prepared, "val", tmp_path / "val")
    with pytest.raises(ValueError, match="not the"):      # the validation images given as the test set's
        mask_shape.shape_report(prepared, [val], [val])
    table = pd.read_csv(val / "predictions.csv")
    table.loc[0, "status"] = "failed"
    table.to_csv(val / "predictions.csv", index=False)
    test = _fake_predictions(prepared, "test", tmp_path / "test")
    with pytest.raises(ValueError, match="failed"):
        mask_shape.shape_report(prepared, [val], [test])
    with pytest.raises(ValueError, match="one folder per seed"):
        mask_shape.shape_report(prepared, [val], [])


def test_link_images_writes_the_folders_to_predict(prepared, tmp_path):
    mask_shape.main(["--datalist", str(prepared), "--link-images", str(tmp_path / "images")])
    for split in ("val", "test"):
        linked = sorted(p.stem for p in (tmp_path / "images" / split).iterdir())
        assert linked == sorted(item["id"] for item in split_items(prepared, 0, split))
