"""``benchmarks/recipe.py``: a split whose reference trains on another split's images reads that split's reference."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest

import recipe   # benchmarks/ is on the path (tests/conftest.py)
from pipeline.data.prepare import prepare
from pipeline.data.synthetic import make_us_dataset


@pytest.fixture
def datalists(tmp_path):
    """The same test images with other validation folds (``A``, ``X``), and other test images (``Y``)."""
    raw = make_us_dataset(tmp_path / "raw", n=12, seed=0, size=(32, 32))
    a = prepare("busi", raw, tmp_path / "A", n_folds=3, seed=0, test_fold=2)[1]["datalist"]
    shutil.copytree(a.parent, tmp_path / "X")
    x = tmp_path / "X" / a.name
    data = json.loads(x.read_text())
    n_folds = 1 + max(item["fold"] for item in data["training"])
    for item in data["training"]:
        item["fold"] = (item["fold"] + 1) % n_folds
    x.write_text(json.dumps(data))
    y = prepare("busi", raw, tmp_path / "Y", n_folds=3, seed=0, test_fold=1)[1]["datalist"]
    return {"A": a, "X": x, "Y": y}


@pytest.fixture
def splits(tmp_path, datalists, monkeypatch):
    monkeypatch.setattr(recipe, "SPLITS", {"A": {"title": "A"}, "X": {"reference_split": "A", "title": "X"},
                                           "Y": {"reference_split": "A", "title": "Y"}})
    monkeypatch.setattr(recipe.RecipeBenchmark, "prepare", lambda self: datalists[self.split])
    out = tmp_path / "recipe"
    for split, plan in (("A", {"reference": {"epoch_seconds": 60.0}}), ("X", {"default": {"epoch_seconds": 120.0}})):
        (out / f"split{split}").mkdir(parents=True)
        (out / f"split{split}" / "plan.json").write_text(json.dumps(plan))
    return out


def make(out, split):
    args = argparse.Namespace(output=out, split=split, datalist=None, budget_minutes=20.0, budget_mode="epochs",
                              epochs=None, override={}, rows=["reference", "default"], seeds=[0])
    return recipe.RecipeBenchmark(args)


def test_the_reference_is_trained_calibrated_and_read_in_its_own_split(splits, monkeypatch):
    b = make(splits, "X")
    assert b.owner("reference").root == splits / "splitA" and b.owner("default") is b
    assert b.owner("default_no_tta") is b                     # a variant belongs to its trained row's split
    monkeypatch.setattr(recipe.RecipeBenchmark, "train_reference", lambda *a, **k: pytest.fail("recalibrated"))
    # each row's epochs from its own split's calibration: nothing calibrated again in X
    assert b.calibrate() == {"reference": 20, "default": 10}
    assert "reference" not in json.loads((splits / "splitX" / "plan.json").read_text())


def test_a_split_without_a_reference_split_owns_its_reference(splits):
    b = make(splits, "A")
    assert b.reference_source is b and b.owner("reference") is b


def test_a_reference_split_with_other_test_images_is_refused(splits):
    with pytest.raises(RuntimeError, match="split Y reads split A's reference runs, but their test images differ"):
        make(splits, "Y")
