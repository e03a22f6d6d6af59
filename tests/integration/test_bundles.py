"""Bundles end to end through MONAI's ConfigWorkflow on synthetic 64x64 data: train, resume, evaluate, track."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from monai.bundle import ConfigWorkflow

from pipeline.registry import list_networks
from tests.integration.conftest import MR_BUNDLE, US_BUNDLE, tiny_preset

pytestmark = pytest.mark.slow


def run_workflow(bundle, workflow: str, **override):
    files = {"training": "train.yaml", "evaluating": "evaluate.yaml"}
    configs = bundle / "configs"
    wf = ConfigWorkflow(
        config_file=[str(configs / "common.yaml"), str(configs / files[workflow])],
        meta_file=str(configs / "metadata.json"),
        logging_file=None,
        run_id=workflow,
        bundle_root=str(bundle),
        **override,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    return wf


def _mlflow_metrics(db, run_name):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
            if r.info.run_name == run_name]
    assert runs, f"no MLflow run named {run_name}"
    return runs[0]


@pytest.mark.parametrize("bundle,datalist_fixture", [(US_BUNDLE, "us_datalist"), (MR_BUNDLE, "mr_datalist")])
def test_train_then_evaluate(bundle, datalist_fixture, tmp_path, request):
    datalist = request.getfixturevalue(datalist_fixture)
    preset = tiny_preset(tmp_path / "preset.yaml")
    out = tmp_path / "run"
    common = dict(datalist=str(datalist), preset=str(preset), output_dir=str(out), run_name="smoke", fold=0)
    # no warm-up: in a 2-epoch run a 1-epoch warm-up would leave epoch 1 at a low rate and this test about learning
    run_workflow(bundle, "training", epochs=2, warmup_epochs=0, **common)

    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [1, 2]
    assert history["train_loss"].iloc[1] < history["train_loss"].iloc[0]
    assert (out / "models" / "model.pt").is_file() and (out / "models" / "last.pt").is_file()
    run = _mlflow_metrics(out / "mlruns.db", "smoke")
    assert {"val_dice", "val_auc", "val_score", "train_loss_epoch"} <= set(run.data.metrics)
    assert run.data.params["fold"] == "0"

    run_workflow(bundle, "evaluating", **common)
    summary = json.loads((out / "eval_val" / "summary.json").read_text())
    for key in ("dice", "jaccard", "hd95"):
        value = summary["segmentation"][key]["mean"]
        assert value is not None and math.isfinite(value), key
    for key in ("auc", "accuracy", "balanced_accuracy", "f1_macro", "sensitivity", "specificity"):
        value = summary["classification"][key]
        assert value is not None and math.isfinite(value), key
    per_image = pd.read_csv(out / "eval_val" / "per_image.csv")
    assert len(per_image) == summary["n_images"] > 0
    for plot in ("roc.png", "confusion_matrix.png", "calibration.png", "overlays.png"):
        assert (out / "eval_val" / plot).stat().st_size > 5000
    eval_run = _mlflow_metrics(out / "mlruns.db", "smoke_eval_val")
    assert "test_dice" in eval_run.data.metrics


def test_resume_continues_from_the_saved_epoch(us_datalist, tmp_path):
    preset = tiny_preset(tmp_path / "preset.yaml")
    common = dict(datalist=str(us_datalist), preset=str(preset), output_dir=str(tmp_path / "run"),
                  run_name="resume", use_mlflow=False)
    run_workflow(US_BUNDLE, "training", epochs=1, **common)
    wf = run_workflow(US_BUNDLE, "training", epochs=2, **common)
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 2
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history["epoch"].tolist() == [1, 2]  # epoch 1 was not trained again


def test_time_budget_stops_training_and_resumes_with_its_clock(us_datalist, tmp_path):
    """--budget_minutes: a budget smaller than one epoch trains one epoch, saves it and stops; the checkpoint holds
    the spent time, so a resumed run with the same budget trains nothing more."""
    import torch

    preset = tiny_preset(tmp_path / "preset.yaml")
    common = dict(datalist=str(us_datalist), preset=str(preset), output_dir=str(tmp_path / "run"),
                  run_name="budget", use_mlflow=False, budget_minutes=0.001)
    wf = run_workflow(US_BUNDLE, "training", **common)
    assert wf.parser.get_parsed_content("max_epochs") == 1000  # the budget, not the epochs, ends the run
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history["epoch"].tolist() == [1] and history["val_seconds"].iloc[0] > 0
    state = torch.load(tmp_path / "run" / "models" / "last.pt", weights_only=True)["time_budget"]
    assert state["epochs_done"] == 1 and state["elapsed"] > 0.06
    # the LR followed the budget: the cosine was told the run ends after this epoch
    assert wf.parser.get_parsed_content("lr_scheduler").t_total == len(wf.parser.get_parsed_content("train#dataloader"))
    wf = run_workflow(US_BUNDLE, "training", **common)
    assert wf.parser.get_parsed_content("train#trainer").state.epoch == 1
    assert pd.read_csv(tmp_path / "run" / "history.csv")["epoch"].tolist() == [1]


@pytest.mark.parametrize("network", list_networks())
def test_every_network_trains_one_epoch_through_the_bundle(network, us_datalist, tmp_path):
    preset = tiny_preset(tmp_path / "preset.yaml", network=network)
    out = tmp_path / "run"
    run_workflow(US_BUNDLE, "training", epochs=1, datalist=str(us_datalist), preset=str(preset),
                 output_dir=str(out), use_mlflow=False, val_interval=1)
    history = pd.read_csv(out / "history.csv")
    assert len(history) == 1 and math.isfinite(history["train_loss"].iloc[0])
    assert (out / "models" / "model.pt").is_file()


@pytest.mark.parametrize(
    "override,error,match",
    [
        ({"preset": "no_such_preset"}, KeyError, "unknown preset 'no_such_preset'; available presets"),
        ({"datalist": ""}, ValueError, "datalist is required"),
        ({"fold": 7}, ValueError, "fold 7 is out of range"),
    ],
)
def test_bad_config_values_give_clear_errors(override, error, match, us_datalist, tmp_path):
    args = dict(datalist=str(us_datalist), output_dir=str(tmp_path / "run"), use_mlflow=False, epochs=1)
    args.update(override)
    with pytest.raises(Exception) as info:
        run_workflow(US_BUNDLE, "training", **args)
    chain, e = [], info.value
    while e is not None:
        chain.append(e)
        e = e.__cause__ or e.__context__
    assert any(isinstance(c, error) and match in str(c) for c in chain), [str(c)[:200] for c in chain]


def test_two_process_gloo_ddp_training(us_datalist, tmp_path):
    """torchrun with 2 CPU processes (gloo): DistributedSampler, DDP, rank-0 checkpoints and history."""
    import os
    import subprocess
    import sys

    preset = tiny_preset(tmp_path / "preset.yaml")
    out = tmp_path / "ddp"
    configs = US_BUNDLE / "configs"
    files = [str(configs / f) for f in ("common.yaml", "train.yaml", "multi_gpu_train.yaml")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "monai.bundle", "run", "training", "--meta_file", str(configs / "metadata.json"),
           "--config_file", json.dumps(files), "--bundle_root", str(US_BUNDLE), "--datalist", str(us_datalist),
           "--preset", str(preset), "--epochs", "2", "--output_dir", str(out), "--use_mlflow", "False"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (out / "models" / "last.pt").is_file() and (out / "models" / "model.pt").is_file()
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [1, 2]
    assert "val_dice" in history and history["val_dice"].notna().all()


def test_cv_two_folds_and_compare(us_datalist, tmp_path, capsys):
    """`bmtl cv` trains and evaluates each fold in a child process, aggregates, and logs an MLflow parent run."""
    from mlflow.tracking import MlflowClient

    from pipeline.cli import main

    preset = tiny_preset(tmp_path / "preset.yaml")
    out = tmp_path / "cv"
    assert main(["cv", "--bundle", str(US_BUNDLE), "--datalist", str(us_datalist), "--folds", "2",
                 "--network", str(preset), "--output", str(out), "--epochs", "1"]) == 0
    folds = pd.read_csv(out / "cv_folds.csv")
    assert folds["fold"].tolist() == [0, 1] and folds["dice"].notna().all()
    summary = pd.read_csv(out / "cv_summary.csv")
    assert summary.loc[0, "dice_mean"] == pytest.approx(folds["dice"].mean())
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlruns.db'}")
    parent = client.search_runs([client.get_experiment_by_name("breast_mtl_cv").experiment_id])[0]
    children = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) >= 2 and "dice_mean" in parent.data.metrics
    assert main(["compare", str(out), "--output", str(tmp_path / "compare.csv")]) == 0
    assert (tmp_path / "compare.md").is_file()


@pytest.mark.parametrize("option", [{"oversample": True}, {"weighted_sampler": True}, {"channels_last": True}])
def test_training_options(option, us_datalist, tmp_path):
    preset = tiny_preset(tmp_path / "preset.yaml")
    out = tmp_path / "run"
    wf = run_workflow(US_BUNDLE, "training", epochs=1, datalist=str(us_datalist), preset=str(preset),
                      output_dir=str(out), use_mlflow=False, **option)
    n_train = len(wf.parser.get_parsed_content("train#items"))
    n_data = len(wf.parser.get_parsed_content("train#data"))
    assert n_data > n_train if "oversample" in option else n_data == n_train
    assert math.isfinite(pd.read_csv(out / "history.csv")["train_loss"].iloc[0])


def test_native_resolution_sliding_window_evaluation_with_refinement(us_datalist, tmp_path):
    """--eval_resize false: native-size images (64²) larger than the training size (32²), so the segmentation is
    tiled by the sliding window; --refine on 3 classes."""
    preset = tiny_preset(tmp_path / "preset.yaml")
    common = dict(datalist=str(us_datalist), preset=str(preset), output_dir=str(tmp_path / "run"), use_mlflow=False,
                  image_size=[32, 32])
    run_workflow(US_BUNDLE, "training", epochs=1, **common)
    run_workflow(US_BUNDLE, "evaluating", eval_resize=False, refine=True, **common)
    summary = json.loads((tmp_path / "run" / "eval_val" / "summary.json").read_text())
    assert math.isfinite(summary["segmentation"]["dice"]["mean"]) and summary["n_images"] > 0
