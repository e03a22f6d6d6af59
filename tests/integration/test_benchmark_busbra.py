"""benchmarks/busbra.py end to end on a tiny synthetic datalist: equal-budget runs, shifts, folds, report, MLflow."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pandas as pd
import pytest
import yaml

from pipeline.data.prepare import prepare
from pipeline.data.synthetic import make_us_dataset
from pipeline.presets import load_preset
from pipeline.workflows import run_bundle

from .conftest import REPO

pytestmark = pytest.mark.slow


def _load_script():
    spec = importlib.util.spec_from_file_location("bench_busbra", REPO / "benchmarks" / "busbra.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_runs_networks_baselines_shifts_and_folds(tmp_path, monkeypatch):
    raw = make_us_dataset(tmp_path / "raw", n=16, seed=0, size=(64, 64))
    _, paths = prepare("busi", raw, tmp_path / "prepared", n_folds=2, seed=0)
    presets = tmp_path / "presets"
    presets.mkdir()
    for name in ("segresnet_shared", "segresnet_seg_only"):  # the tiny variants: width 8, batch 4
        config = load_preset(name)
        config["network_kwargs"] = {**config["network_kwargs"], "init_filters": 8}
        config["batch_size"] = 4
        (presets / f"tiny_{name}.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("BMTL_PRESETS", str(presets))  # read by this process and by the bundle processes
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out, report = tmp_path / "bench", tmp_path / "BENCHMARKS.md"
    report.write_text("# Benchmarks\n\nkept text\n")
    script = _load_script()
    argv = ["--datalist", str(paths["datalist"]), "--output", str(out), "--budget-minutes", "0.01", "--size", "64",
            "--networks", "tiny_segresnet_shared", "tiny_segresnet_seg_only", "--best", "1", "--shifts", "gain",
            "--report", str(report)]
    assert script.main(argv) == 0

    results = pd.read_csv(out / "results.csv")
    assert sorted(zip(results["preset"], results["fold"])) == [
        ("tiny_segresnet_seg_only", 0), ("tiny_segresnet_shared", 0), ("tiny_segresnet_shared", 1)]
    assert (results["epochs"] >= 1).all() and results["dice"].between(0, 1).all()
    for preset in ("tiny_segresnet_shared", "tiny_segresnet_seg_only"):  # best + baseline get the shifted set
        assert (out / "runs" / preset / "fold0" / "eval_gain" / "summary.json").exists()
    assert not (out / "runs" / "tiny_segresnet_shared" / "fold1" / "eval_gain").exists()
    plan = json.loads((out / "plan.json").read_text())
    assert plan["tiny_segresnet_shared@64"]["train_images_per_second"] > 0

    text = report.read_text()
    assert text.startswith("# Benchmarks\n\nkept text\n") and "<!-- busbra:begin -->" in text
    assert "| tiny_segresnet_seg_only |" in text and "| tiny_segresnet_shared (2 folds) |" in text
    assert "| tiny_segresnet_shared - tiny_segresnet_seg_only | dice |" in text  # paired vs the seg-only baseline
    assert "gain Dice" in text

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("busbra_benchmark")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.info.run_name.startswith("benchmark_")]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert {r.info.run_name for r in children} >= {"tiny_segresnet_shared_fold0", "tiny_segresnet_shared_fold1",
                                                   "tiny_segresnet_seg_only_fold0"}

    # a second call resumes: nothing is retrained and the parent run is updated, not duplicated
    before = (out / "runs" / "tiny_segresnet_shared" / "fold0" / "models" / "model.pt").stat().st_mtime
    assert script.main(argv) == 0
    assert (out / "runs" / "tiny_segresnet_shared" / "fold0" / "models" / "model.pt").stat().st_mtime == before
    runs = client.search_runs([experiment.experiment_id])
    assert len([r for r in runs if r.info.run_name.startswith("benchmark_")]) == 1

    # a run whose folder is deleted trains again, and its older MLflow run is replaced, not kept beside the new one
    shutil.rmtree(out / "runs" / "tiny_segresnet_seg_only" / "fold0")
    assert script.main(argv) == 0
    assert (out / "runs" / "tiny_segresnet_seg_only" / "fold0" / "done.json").exists()
    names = [r.info.run_name for r in client.search_runs([experiment.experiment_id])]
    assert "tiny_segresnet_seg_only_fold0" in names and len(names) == len(set(names))


def test_bn_statistics_leaves_a_network_without_batch_norm_unchanged(tmp_path, monkeypatch, capsys):
    """SegResNet normalises by groups: re-estimating batch-norm statistics must not change its scores."""
    raw = make_us_dataset(tmp_path / "raw", n=12, seed=1, size=(64, 64))
    _, paths = prepare("busi", raw, tmp_path / "prepared", n_folds=2, seed=0)
    run_dir = tmp_path / "run"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_bundle(REPO / "bundles" / "breast_us_mtl", "training",
               {"datalist": str(paths["datalist"]), "preset": "segresnet_shared", "output_dir": str(run_dir),
                "image_size": [64, 64], "epochs": 1, "batch_size": 4, "use_mlflow": False})
    spec = importlib.util.spec_from_file_location("bn_statistics", REPO / "benchmarks" / "bn_statistics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([str(run_dir)]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {run_dir} |")]
    auc_saved, auc_again, dice_saved, dice_again = row[0].split("|")[2:6]
    assert auc_saved == auc_again and dice_saved == dice_again
