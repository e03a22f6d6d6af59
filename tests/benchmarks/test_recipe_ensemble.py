"""``benchmarks/recipe.py``'s fold-ensemble rows: one run per validation fold sharing the budget, evaluated together."""

from __future__ import annotations

import argparse
import json

import pandas as pd
import pytest

import recipe   # benchmarks/ is on the path (tests/conftest.py)
import recipe_rows
from pipeline.data.prepare import prepare
from pipeline.data.synthetic import make_us_dataset


@pytest.fixture
def benchmark(tmp_path, monkeypatch):
    """A RecipeBenchmark whose bundle runs are recorded, not run (training leaves a history and a model)."""
    raw = make_us_dataset(tmp_path / "raw", n=12, seed=0, size=(32, 32))
    datalist = prepare("busi", raw, tmp_path / "prepared", n_folds=3, seed=0, test_fold=2)[1]["datalist"]
    out = tmp_path / "recipe"
    (out / "splitA").mkdir(parents=True)
    (out / "splitA" / "plan.json").write_text(json.dumps({"default": {"epoch_seconds": 120.0},   # 10 epochs
                                                          f"inference_ms:{recipe_rows.DEFAULT_PRESET}": 10.0}))
    calls = []

    def fake_run_bundle(bundle, workflow, overrides, log_file=None):
        calls.append((workflow, overrides))
        run = overrides["output_dir"]
        if workflow == "training":
            (recipe.Path(run) / "models").mkdir(parents=True, exist_ok=True)
            (recipe.Path(run) / "models" / "model.pt").write_bytes(b"weights")
            pd.DataFrame({"epoch": range(1, overrides["epochs"] + 1), "epoch_seconds": 40.0}).to_csv(
                recipe.Path(run) / "history.csv", index=False)

    monkeypatch.setattr(recipe, "run_bundle", fake_run_bundle)
    args = argparse.Namespace(output=out, split="A", datalist=datalist, budget_minutes=20.0, budget_mode="epochs",
                              epochs=None, override={}, rows=["default_fold_ensemble3"], seeds=[0])
    return recipe.RecipeBenchmark(args), calls


def test_members_share_the_budget_on_their_own_folds_and_are_evaluated_together(benchmark):
    b, calls = benchmark
    run_dir = b.train("default_fold_ensemble3", 0)
    trained = [(o["fold"], o["epochs"], recipe.Path(o["output_dir"]).name, o["run_name"]) for w, o in calls]
    # the other members first; the row's own folder (fold 0, the validation fold of every other row) last
    assert trained == [(2, 3, "default_fold_ensemble3_seed0_member2", "default_fold_ensemble3_seed0_member2"),
                       (1, 3, "default_fold_ensemble3_seed0_member1", "default_fold_ensemble3_seed0_member1"),
                       (0, 3, "default_fold_ensemble3_seed0", "default_fold_ensemble3_seed0")]
    assert json.loads((run_dir / "done.json").read_text())["epochs"] == 3
    assert not recipe_rows.validated("default_fold_ensemble3")   # fold 0 trained members 1 and 2: no val score
    calls.clear()
    eval_dir = b.evaluate("default_fold_ensemble3", 0, "test")
    ((workflow, overrides),) = calls
    assert workflow == "evaluating" and overrides["output_dir"] == str(run_dir) and eval_dir == run_dir / "eval_test"
    assert overrides["ensemble_checkpoints"] == [str(run_dir.with_name(f"{run_dir.name}_member{k}") / "models" /
                                                     "model.pt") for k in (1, 2)]
    assert b.inference_ms("default_fold_ensemble3") == pytest.approx(3 * b.inference_ms("default")) == 60.0


def test_an_interrupted_ensemble_trains_only_what_is_missing(benchmark):
    b, calls = benchmark
    run_dir = b.train("default_fold_ensemble3", 0)
    (run_dir / "done.json").unlink()                                  # the row's own run did not finish
    (run_dir.with_name(f"{run_dir.name}_member1") / "done.json").unlink()
    calls.clear()
    b.train("default_fold_ensemble3", 0)
    assert [o["fold"] for _, o in calls] == [1, 0]
    calls.clear()
    b.train("default_fold_ensemble3", 0)                              # finished: nothing trained again
    assert calls == []


def test_the_3x_row_gives_each_member_the_whole_budget(benchmark):
    b, calls = benchmark
    b.train("default_fold_ensemble3_3x", 0)
    assert [(o["fold"], o["epochs"]) for _, o in calls] == [(2, 10), (1, 10), (0, 10)]


def test_a_row_that_is_not_an_ensemble_keeps_its_own_fold(benchmark):
    b, calls = benchmark
    b.train("default_all_folds", 0)
    (overrides,) = [o for _, o in calls if recipe.Path(o["output_dir"]).name == "default_all_folds_seed0"]
    assert overrides["fold"] == "all"   # the row's --fold all, not the ensemble members' fold 0


def test_a_row_that_changes_its_network_or_input_size_is_timed_with_the_change(benchmark, monkeypatch):
    b, _ = benchmark
    timed = []
    monkeypatch.setattr(recipe.bench, "inference_ms_per_image",
                        lambda network, size: timed.append((network, size)) or 7.0)
    assert b.inference_ms("default") == 20.0 and not timed   # the plan's figure (twice: flip TTA), nothing timed
    assert b.inference_ms("shared_decoder_cls_weight0.3") == 14.0
    assert b.inference_ms("default_res160") == 14.0
    (lesion, lesion_size), (res160, res160_size) = timed
    assert lesion["network_kwargs"]["classifier_features"] == "decoder" and lesion_size == [128, 128]
    assert res160_size == [160, 160]
    plan = json.loads(b.plan_path.read_text())
    assert plan["inference_ms:segresnet_shared:" '{"network_kwargs": {"classifier_features": "decoder"}}'] == 7.0
    assert "inference_ms:segresnet_shared" not in plan   # the linear head's time is not the lesion head's
