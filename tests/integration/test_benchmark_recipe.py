"""benchmarks/recipe.py and benchmarks/reference.py end to end on a tiny synthetic datalist with a test section."""

from __future__ import annotations

import importlib.util
import shutil
import sys

import pandas as pd
import pytest
import yaml

from pipeline.data.prepare import prepare
from pipeline.data.synthetic import make_us_dataset
from pipeline.presets import load_preset

from .conftest import REPO

pytestmark = pytest.mark.slow


def _load_script():
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_recipe", REPO / "benchmarks" / "recipe.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_recipe_benchmark_reference_default_variant_report_mlflow(tmp_path, monkeypatch):
    raw = make_us_dataset(tmp_path / "raw", n=24, seed=0, size=(64, 64))
    out, report = tmp_path / "recipe", tmp_path / "BENCHMARKS.md"
    # prepared inside the output, as the benchmark prepares BUS-BRA: the archive keeps the paths relative to it
    _, paths = prepare("busi", raw, out / "data_A", n_folds=3, seed=0, test_fold=2)
    config = load_preset("segresnet_shared")
    config["network_kwargs"] = {**config["network_kwargs"], "init_filters": 8}
    config.update(batch_size=4, image_size=[64, 64])
    preset = out / "tiny.yaml"   # inside the output too: a row's config names it
    preset.write_text(yaml.safe_dump(config))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    report.write_text("# Benchmarks\n\nkept text\n")
    script = _load_script()
    argv = ["--datalist", str(paths["datalist"]), "--output", str(out), "--epochs", "1", "--override",
            f"preset={preset}", "--report", str(report), "--rows", "reference", "default", "default_no_tta",
            "default_all_folds"]
    assert script.main(argv) == 0

    runs = out / "splitA" / "runs"
    results = pd.read_csv(out / "results_A.csv")
    assert results["network"].tolist() == ["reference", "default", "default_no_tta", "default_all_folds"]
    assert (results["epochs"] == 1).all() and results["dice"].between(0, 1).all()
    assert results["vs_ref_dice"].iloc[0] != results["vs_ref_dice"].iloc[0]  # the reference is not compared to itself
    assert results["vs_ref_dice"].iloc[1].startswith(("+", "-")) and results["inference_ms"].iloc[1] > 0
    # the variant is an evaluation of the default's weights, not a training run of its own
    assert (runs / "default_seed0" / "eval_test_default_no_tta" / "summary.json").exists()
    assert not (runs / "default_no_tta_seed0").exists()
    # --fold all: trained on the validation fold too, so neither a validation score nor a threshold chosen on it
    all_folds = runs / "default_all_folds_seed0"
    assert (all_folds / "eval_test" / "summary.json").exists() and not (all_folds / "eval_val").exists()
    assert not (all_folds / "models" / "operating_point.json").exists()
    assert results["val_dice"].isna().tolist() == [True, False, False, True]
    # the reference is a run folder the bundle evaluates: scored by the same protocol on the test split
    n_test = len(pd.read_csv(runs / "default_seed0" / "eval_test" / "per_image.csv"))
    assert len(pd.read_csv(runs / "reference_seed0" / "eval_test" / "per_image.csv")) == n_test > 0
    text = report.read_text()
    assert text.startswith("# Benchmarks\n\nkept text\n") and "<!-- recipe_A:begin -->" in text
    assert "| default_no_tta (seed 0) |" in text and "vs ref Dice" in text

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("recipe_benchmark_A")
    all_runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in all_runs if r.info.run_name.startswith("recipe_A")]
    children = {r.info.run_name for r in all_runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert {"default_seed0", "default_seed0_eval_test", "reference_seed0_eval_test",
            "default_no_tta_seed0_eval_test"} <= children

    before = (runs / "default_seed0" / "models" / "model.pt").stat().st_mtime
    assert script.main(argv) == 0  # resumes: nothing retrained
    assert (runs / "default_seed0" / "models" / "model.pt").stat().st_mtime == before

    # a new machine: the archived runs (no weights) re-render the same table without training or evaluating
    import recipe_archive

    recipe_archive.save(out, tmp_path / "archive")
    shutil.rmtree(out / "splitA")
    recipe_archive.restore(tmp_path / "archive", out)
    assert not (runs / "default_seed0" / "models" / "model.pt").exists()
    monkeypatch.setattr(script, "run_bundle", lambda *a, **k: pytest.fail("trained or evaluated again"))
    monkeypatch.setattr(script.RecipeBenchmark, "train_reference", lambda *a, **k: pytest.fail("trained again"))
    assert script.main(argv) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "results_A.csv"), results)


def test_rows_that_change_the_network_build_it():
    """A row's ``network_kwargs`` replace the preset's whole: each must build its network (its preset's, else the
    default's)."""
    import torch

    from pipeline.keys import Head
    from pipeline.registry import create_network

    script = _load_script()
    import recipe_rows   # importable once the script is loaded (it puts benchmarks/ on the path)

    rows = {name: row for name, row in script.ROWS.items() if "network_kwargs" in row.train}
    assert {"nmtnet_cls_bottleneck", "nmtnet_cls_global", "nmtnet_groupnorm"} <= set(rows)
    for name, row in rows.items():
        network = load_preset(row.train.get("preset", recipe_rows.DEFAULT_PRESET))["network_name"]
        kwargs = {**row.train["network_kwargs"], "init_filters": 16}
        net = create_network(network, **kwargs, in_channels=1, num_classes=2).eval()
        with torch.no_grad():
            assert net(torch.rand(1, 1, 64, 64))[Head.CLS].shape == (1, 2), name
