"""``benchmarks/recipe.py --calibrate-only``: the idle calibrations of a queue of rows, and nothing trained."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import recipe   # benchmarks/ is on the path (tests/conftest.py)
from pipeline.data.prepare import prepare
from pipeline.data.synthetic import make_us_dataset


@pytest.fixture
def datalist(tmp_path):
    raw = make_us_dataset(tmp_path / "raw", n=12, seed=0, size=(32, 32))
    return prepare("busi", raw, tmp_path / "prepared", n_folds=3, seed=0, test_fold=2)[1]["datalist"]


def test_calibrate_only_calibrates_the_missing_rows_and_trains_nothing(tmp_path, datalist, monkeypatch, capsys):
    out = tmp_path / "recipe"
    (out / "splitA").mkdir(parents=True)
    (out / "splitA" / "plan.json").write_text(json.dumps({"reference": {"epoch_seconds": 60.0}}))
    calibrated = []

    def fake_train_bundle(self, name, run_dir, extra, seed):
        calibrated.append((name, run_dir.name, extra["epochs"]))
        run_dir.mkdir(parents=True)
        pd.DataFrame({"epoch": [1, 2], "epoch_seconds": [90.0, 70.0], "val_seconds": [5.0, 5.0]}).to_csv(
            run_dir / "history.csv", index=False)

    monkeypatch.setattr(recipe.RecipeBenchmark, "train_bundle", fake_train_bundle)
    monkeypatch.setattr(recipe.RecipeBenchmark, "train_reference", lambda *a, **k: pytest.fail("recalibrated"))
    argv = ["--datalist", str(datalist), "--output", str(out), "--calibrate-only", "--report",
            str(tmp_path / "BENCHMARKS.md"), "--rows", "reference", "default", "default_no_tta", "default_ema"]
    assert recipe.main(argv) == 0

    # default_ema costs what default costs; the variant trains nothing; the reference's calibration is kept
    assert calibrated == [("default", "default", 2)]
    plan = json.loads((out / "splitA" / "plan.json").read_text())
    assert plan == {"reference": {"epoch_seconds": 60.0}, "default": {"epoch_seconds": 75.0}}
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.index("{"):]) == plan
    assert not (out / "splitA" / "runs").exists() and not (tmp_path / "BENCHMARKS.md").exists()


def test_calibrate_only_refuses_fixed_epochs(tmp_path, datalist):
    with pytest.raises(SystemExit):
        recipe.main(["--datalist", str(datalist), "--output", str(tmp_path), "--calibrate-only", "--epochs", "3"])
