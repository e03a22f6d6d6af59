"""Bundles end to end through MONAI's ConfigWorkflow on synthetic 64x64 data: train, resume, evaluate, track."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from monai.bundle import ConfigWorkflow

from pipeline.engines import cpu_has_fast_bf16
from pipeline.registry import list_networks
from pipeline.workflows import bundle_config_files
from tests.integration.conftest import MR_BUNDLE, US_BUNDLE, tiny_preset

pytestmark = pytest.mark.slow


def run_workflow(bundle, workflow: str, **override):
    """The workflow in this process (MONAI's ConfigWorkflow), with the config files `bmtl` would pass (a preset merged
    as a config fragment)."""
    config_files, override = bundle_config_files(bundle, workflow, override)
    wf = ConfigWorkflow(
        config_file=config_files,
        meta_file=str(bundle / "configs" / "metadata.json"),
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
    assert {"val_dice", "val_auc", "val_score", "train_loss_epoch", "val_loss"} <= set(run.data.metrics)
    assert history[["val_loss", "val_seg_loss", "val_cls_loss"]].notna().all().all()   # beside the training loss
    assert run.data.params["fold"] == "0"
    # the recipe: the preset's losses and their weights
    assert (run.data.params["seg_loss"], run.data.params["cls_loss"]) == ("DiceCELoss", "CrossEntropyLoss")
    recipe = yaml.safe_load(preset.read_text())
    assert (run.data.params["loss_weights.seg"], run.data.params["loss_weights.cls"]) == (
        str(recipe["seg_weight"]), str(recipe["cls_weight"]))
    assert run.data.params["network_name"] == "segresnet_shared"
    assert run.data.params["preset"] == "segresnet_shared_lesion"   # tiny_preset's default: the bundle's
    # provenance and the images as MLflow dataset inputs
    assert run.data.params["git_commit"].removesuffix("-dirty") not in ("", None)
    assert run.data.params["version.monai"] not in ("", "not installed")
    from mlflow.tracking import MlflowClient

    inputs = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlruns.db'}").get_run(run.info.run_id).inputs
    assert {d.dataset.name for d in inputs.dataset_inputs} == {"train_dataset_0", "val_dataset_0"}

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
    # the classification threshold training chose on this validation fold decides the predicted class
    operating_point = json.loads((out / "models" / "operating_point.json").read_text())
    assert operating_point["n_images"] == summary["n_images"]
    assert summary["classification"]["operating_threshold"] == operating_point["threshold"]
    for plot in ("roc.png", "confusion_matrix.png", "calibration.png", "overlays.png", "gradcam_worst.png"):
        assert (out / "eval_val" / plot).stat().st_size > 5000
    page = (out / "eval_val" / "report.html").read_text()   # the one page to look at, plots embedded
    sections = ("metrics", "learning-curves", "roc", "calibration", "confusion", "overlays", "gradcam", "worst")
    assert all(f"<h2 id='{s}'>" in page for s in sections)
    eval_run = _mlflow_metrics(out / "mlruns.db", "smoke_eval_val")
    # named after the split evaluated: the validation fold's figures are never called test_*
    assert {"val_dice", "val_auc", "val_auc_ci_low"} <= set(eval_run.data.metrics)
    assert not any(name.startswith("test_") for name in eval_run.data.metrics)
    assert eval_run.data.tags["mlflow.parentRunId"] == run.info.run_id   # nested under the training it evaluates
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlruns.db'}")
    eval_inputs = client.get_run(eval_run.info.run_id).inputs
    assert [d.dataset.name for d in eval_inputs.dataset_inputs] == ["val_dataset_0"]   # the images it scored
    assert {"report.html", "per_image.csv", "summary.json"} <= {a.path for a in client.list_artifacts(
        eval_run.info.run_id)}
    for logged in (run, eval_run):   # artifacts beside the run's tracking database, not in the working directory
        assert logged.info.artifact_uri.startswith(out.as_uri())
    if bundle == US_BUNDLE:
        # `bmtl evaluate --run` of a run trained with `monai.bundle run`: the MLflow run is "smoke", the folder "run";
        # the evaluation still nests under it and the cross-dataset table (Markdown, CSV, HTML page) is logged to it
        from pipeline.workflows import evaluate_datasets

        table, _ = evaluate_datasets(out, [datalist], split="all", quiet=True)
        all_run = _mlflow_metrics(out / "mlruns.db", "smoke_eval_all")
        assert all_run.data.tags["mlflow.parentRunId"] == run.info.run_id
        assert "all_dice" in all_run.data.metrics and not any(m.startswith(("val_", "test_"))
                                                              for m in all_run.data.metrics)
        assert {"datasets_all.md", "datasets_all.csv", "datasets_all.html"} <= {
            a.path for a in client.list_artifacts(run.info.run_id)}
        page = table.with_suffix(".html").read_text()
        assert "<h2 id='datasets'>" in page and "href='eval_all/report.html'" in page


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


def test_weight_average_is_what_validation_scores_and_model_pt_holds_and_it_resumes(us_datalist, tmp_path):
    preset = tiny_preset(tmp_path / "preset.yaml")
    common = dict(datalist=str(us_datalist), preset=str(preset), use_mlflow=False, weight_average_decay=0.9)
    run_workflow(US_BUNDLE, "training", epochs=1, output_dir=str(tmp_path / "resumed"), **common)
    wf = run_workflow(US_BUNDLE, "training", epochs=2, output_dir=str(tmp_path / "resumed"), **common)
    average = wf.parser.get_parsed_content("weight_average")
    assert wf.parser.get_parsed_content("validate#evaluator").network is average.module
    assert int(average.n_averaged) == 2 * len(wf.parser.get_parsed_content("train#dataloader"))
    models = tmp_path / "resumed" / "models"
    last = torch.load(models / "last.pt", map_location="cpu", weights_only=True)
    kept = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    assert kept.keys() == last["network"].keys()
    assert any(not torch.equal(kept[k], last["network"][k]) for k in kept)   # the average, not the last weights
    # one uninterrupted run gives the same average as the resumed one (the average is in the epoch checkpoint; the
    # weights themselves agree to ~1e-4 here, not bit for bit), where a restarted average would be far off
    run_workflow(US_BUNDLE, "training", epochs=2, output_dir=str(tmp_path / "straight"), **common)
    straight = torch.load(tmp_path / "straight" / "models" / "last.pt", map_location="cpu", weights_only=True)
    assert int(last["weight_average"]["n_averaged"]) == int(straight["weight_average"]["n_averaged"])
    for key, value in last["weight_average"].items():
        torch.testing.assert_close(value, straight["weight_average"][key], atol=2e-3, rtol=0)
    # off (the default): no average in the checkpoint, validation scores the network itself
    wf = run_workflow(US_BUNDLE, "training", epochs=1, output_dir=str(tmp_path / "off"),
                      **{**common, "weight_average_decay": 0.0})
    assert wf.parser.get_parsed_content("validate#evaluator").network is wf.parser.get_parsed_content("network")
    assert "weight_average" not in torch.load(tmp_path / "off" / "models" / "last.pt", weights_only=True)


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
    preset = tiny_preset(tmp_path / "preset.yaml", preset=network)
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
        ({"fold": "none"}, ValueError, "--fold 'none': expected a fold index (0, 1, ...) or all"),
        ({"cpu_bf16": "false"}, ValueError, "--cpu_bf16 'false' is not a switch"),
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
    files = [str(configs / f) for f in ("common.yaml", "train.yaml", "multi_gpu_train.yaml")] + [str(preset)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "monai.bundle", "run", "training", "--meta_file", str(configs / "metadata.json"),
           "--config_file", json.dumps(files), "--bundle_root", str(US_BUNDLE), "--datalist", str(us_datalist),
           "--epochs", "2", "--output_dir", str(out), "--use_mlflow", "False"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (out / "models" / "last.pt").is_file() and (out / "models" / "model.pt").is_file()
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [1, 2]
    assert "val_dice" in history and history["val_dice"].notna().all()


def test_cv_two_folds_and_compare(us_datalist, tmp_path, capsys, monkeypatch):
    """`bmtl cv` trains and evaluates each fold in a child process, aggregates, and logs an MLflow parent run."""
    import tqdm.auto
    from mlflow.tracking import MlflowClient

    from pipeline.cli import main

    bars, real = [], tqdm.auto.tqdm
    monkeypatch.setattr(tqdm.auto, "tqdm", lambda iterable, **kw: bars.append((kw["desc"], kw["unit"])) or real(
        iterable, **kw))
    preset = tiny_preset(tmp_path / "preset.yaml")
    out = tmp_path / "cv"
    assert main(["cv", "--bundle", str(US_BUNDLE), "--datalist", str(us_datalist), "--folds", "2",
                 "--network", str(preset), "--output", str(out), "--epochs", "1"]) == 0
    assert bars == [("cv preset", "fold")]   # one bar over the folds (shown on a terminal)
    folds = pd.read_csv(out / "cv_folds.csv")
    assert folds["fold"].tolist() == [0, 1] and folds["dice"].notna().all()
    summary = pd.read_csv(out / "cv_summary.csv")
    assert summary.loc[0, "dice_mean"] == pytest.approx(folds["dice"].mean())
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlruns.db'}")
    parent = client.search_runs([client.get_experiment_by_name("breast_mtl_cv").experiment_id])[0]
    children = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) >= 2 and "dice_mean" in parent.data.metrics
    for log in ("train.log", "evaluate.log"):   # each fold keeps its logs beside its history.csv
        logs = sorted(out.rglob(log))
        assert len(logs) == 2 and all((p.parent / "history.csv").is_file() and p.stat().st_size > 0 for p in logs)
    assert main(["compare", str(out), "--output", str(tmp_path / "compare.csv")]) == 0
    assert (tmp_path / "compare.md").is_file()
    assert (tmp_path / "compare.png").stat().st_size > 5000   # the networks-by-metrics figure beside the table


def test_bmtl_train_then_evaluate_keep_logs_and_the_run_values(us_datalist, tmp_path, capsys):
    """`bmtl train` runs the bundle's training, keeps train.log and the values it was given; `bmtl evaluate` scores
    the run with those same values (here a non-default threshold) and keeps evaluate.log beside history.csv."""
    from pipeline.cli import main

    preset = tiny_preset(tmp_path / "preset.yaml")
    run = tmp_path / "run"
    assert main(["train", "--datalist", str(us_datalist), "--preset", str(preset), "--output", str(run),
                 "--epochs", "1", "--fold", "1", "--override", "seg_threshold=0.4", "--override", "use_mlflow=false",
                 "--quiet"]) == 0
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [1]
    assert "Epoch[1] Complete" in (run / "train.log").read_text()   # the trainer's own log, streamed into the file
    recorded = json.loads((run / "train_args.json").read_text())["overrides"]
    assert recorded["fold"] == 1 and recorded["seg_threshold"] == 0.4 and recorded["use_mlflow"] is False
    assert json.loads((run / "run_config.json").read_text())["fold"] == 1
    assert json.loads((run / "run_config.json").read_text())["mlflow"] is None   # not tracked: nothing to log into

    assert main(["evaluate", "--run", str(run), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "validation images" in out and "dice" in out
    summary = json.loads((run / "eval_val" / "summary.json").read_text())
    val_fold_items = [i for i in json.loads(us_datalist.read_text())["training"] if i["fold"] == 1]
    assert summary["n_images"] == len(val_fold_items)     # fold 1 from train_args.json, not the bundle's fold 0
    assert (run / "evaluate.log").stat().st_size > 0

    # external validation: another dataset, every item, metrics and folder named as external
    from pipeline.data.prepare import prepare
    from pipeline.data.synthetic import make_us_dataset

    raw = make_us_dataset(tmp_path / "other_raw", n=9, seed=5, size=(64, 64))
    _, other = prepare("busi", raw, tmp_path / "other", n_folds=3, seed=0)
    assert main(["evaluate", "--run", str(run), "--datalist", str(other["datalist"]), "--split", "all"]) == 0
    (external,) = run.glob("eval_external_*_all")
    assert json.loads((external / "summary.json").read_text())["n_images"] == 9
    assert (run / "eval_val" / "summary.json").is_file()   # the run's own evaluation is kept

    # classes matched by name, both ways. A normal/benign/malignant model on a benign/malignant datalist: every
    # image scored, benign as benign (index 1 of the model, 0 of the datalist)
    _, two = prepare("busi", raw, tmp_path / "two", n_folds=2, seed=0, classes=["benign", "malignant"])
    two_items = json.loads(two["datalist"].read_text())["training"]
    assert main(["evaluate", "--run", str(run), "--datalist", str(two["datalist"]), "--split", "all",
                 "--output", str(tmp_path / "three_on_two")]) == 0
    per_image = pd.read_csv(tmp_path / "three_on_two" / "per_image.csv")
    assert len(per_image) == len(two_items) and set(per_image["true_class"]) <= {"benign", "malignant"}
    truth = {Path(i["image"]).name: ["benign", "malignant"][i["cls"]] for i in two_items}
    assert all(truth[Path(f).name] == c for f, c in zip(per_image["file"], per_image["true_class"]))
    three_on_two = json.loads((tmp_path / "three_on_two" / "summary.json").read_text())
    assert three_on_two["positive_class"] == "malignant" and math.isfinite(three_on_two["classification"]["auc"])
    confusion = three_on_two["classification"]["confusion_matrix"]   # the model's classes; no true normal image
    assert confusion["classes"] == ["normal", "benign", "malignant"] and sum(confusion["matrix"][0]) == 0
    assert sum(map(sum, confusion["matrix"])) == len(two_items)
    # the same model exported and scored as deployed (bmtl evaluate --bundle): the same figures per image
    from pipeline.deploy import export_bundle

    export_bundle(US_BUNDLE, run, tmp_path / "exported", formats=["torchscript"])
    assert main(["evaluate", "--bundle", str(tmp_path / "exported"), "--datalist", str(two["datalist"]),
                 "--output", str(tmp_path / "bundle_eval")]) == 0
    (bundle_eval,) = (tmp_path / "bundle_eval").glob("eval_external_*_all")
    from_bundle = pd.read_csv(bundle_eval / "per_image.csv")
    assert from_bundle["file"].tolist() == per_image["file"].tolist()
    for column in [c for c in per_image.columns if c.startswith("prob_")] + ["dice"]:
        np.testing.assert_allclose(from_bundle[column], per_image[column], atol=1e-5, err_msg=column)
    assert main(["evaluate", "--bundle", str(tmp_path / "exported"), "--datalist", str(two["datalist"]),
                 "--datalist", str(other["datalist"]), "--output", str(tmp_path / "bundle_eval")]) == 0
    assert len(pd.read_csv(tmp_path / "bundle_eval" / "datasets_all.csv")) == 2
    # an empty split is one line naming the datalist and the split (exit 2), for a bundle and for a run
    no_test = two["datalist"].with_name("no_test.json")
    no_test.write_text(json.dumps({**json.loads(two["datalist"].read_text()), "test": []}))
    capsys.readouterr()
    for which in (["--bundle", str(tmp_path / "exported"), "--output", str(tmp_path / "empty")], ["--run", str(run)]):
        assert main(["evaluate", *which, "--datalist", str(no_test), "--split", "test"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "'test' split" in err and "no_test.json" in err and "empty" in err
    assert not (tmp_path / "empty").exists()
    (tmp_path / "exported" / "configs" / "evaluate.yaml").unlink()   # a bundle exported before evaluate.yaml
    assert main(["evaluate", "--bundle", str(tmp_path / "exported"), "--datalist", str(two["datalist"]),
                 "--output", str(tmp_path / "old")]) == 1
    assert "export the run again" in capsys.readouterr().err
    assert main(["evaluate", "--bundle", str(tmp_path / "exported"), "--datalist", str(two["datalist"])]) == 2

    # a benign/malignant model on the three-class datalist: its normal images are left out and counted
    two_run = tmp_path / "two_run"
    assert main(["train", "--datalist", str(two["datalist"]), "--preset", str(preset), "--output", str(two_run),
                 "--epochs", "1", "--override", "use_mlflow=false", "--quiet"]) == 0
    assert main(["evaluate", "--run", str(two_run), "--datalist", str(us_datalist), "--split", "all",
                 "--output", str(tmp_path / "two_on_three")]) == 0
    assert "not scored (the model has no such class):" in capsys.readouterr().out
    summary = json.loads((tmp_path / "two_on_three" / "summary.json").read_text())
    three = json.loads(us_datalist.read_text())
    n_normal = sum(1 for i in three["training"] + three["test"] if three["classes"][i["cls"]] == "normal")
    assert summary["left_out"]["per_class"] == {"normal": n_normal} and n_normal > 0
    assert summary["n_images"] == len(three["training"]) + len(three["test"]) - n_normal
    assert summary["classes"] == ["benign", "malignant"]

    # one table over several datasets, one row each, with the matched classes' left-out counts
    assert main(["evaluate", "--run", str(two_run), "--datalist", str(us_datalist), "--datalist",
                 str(two["datalist"]), "--split", "all"]) == 0
    table = pd.read_csv(two_run / "datasets_all.csv")
    assert len(table) == 2 and table["left_out"].tolist() == [n_normal, 0]
    assert table["images"].tolist()[1] == len(two_items) and table["dice_ci_low"].notna().all()
    assert table["evaluation"].iloc[0] in (two_run / "datasets_all.md").read_text()

    assert main(["evaluate", "--run", str(tmp_path / "missing")]) == 2
    assert "not a trained run" in capsys.readouterr().err


@pytest.mark.parametrize("resize_mode,keep_aspect", [("bilinear", False), ("area", False), ("bilinear", True)])
def test_evaluate_and_predict_give_the_same_masks_and_probabilities(resize_mode, keep_aspect, tmp_path):
    """A file means the same thing in evaluation and in `bmtl predict`: same preprocessing, same way back to the
    image's own size (larger than the training size here), same mask cleaning, so the same lesion areas and class
    probabilities for every image."""
    from pipeline.data.prepare import prepare
    from pipeline.data.synthetic import make_us_dataset
    from pipeline.deploy import export_bundle
    from pipeline.handlers import read_operating_threshold
    from pipeline.inference import Predictor, predict

    raw = make_us_dataset(tmp_path / "raw", n=12, seed=3, size=(96, 120))
    _, paths = prepare("busi", raw, tmp_path / "prepared", n_folds=3, seed=0)
    preset = tiny_preset(tmp_path / "preset.yaml")
    run = tmp_path / "run"
    common = dict(datalist=str(paths["datalist"]), preset=str(preset), output_dir=str(run), use_mlflow=False,
                  resize_mode=resize_mode, keep_aspect=keep_aspect)
    run_workflow(US_BUNDLE, "training", epochs=2, warmup_epochs=0, **common)
    run_workflow(US_BUNDLE, "evaluating", n_bootstrap=0, **common)
    evaluated = pd.read_csv(run / "eval_val" / "per_image.csv").set_index("file")

    export_bundle(US_BUNDLE, run, tmp_path / "exported", formats=["torchscript"])
    deploy = yaml.safe_load((tmp_path / "exported" / "configs" / "deploy.yaml").read_text())
    assert deploy["keep_aspect"] is keep_aspect
    network_input, _ = Predictor(tmp_path / "exported", progress=False).preprocess(torch.rand(1, 96, 120) + 0.5)
    blank_rows = (network_input[0] == 0).all(dim=1)
    assert network_input.shape[-2:] == (64, 64) and bool(blank_rows[:3].all()) is keep_aspect   # padded, not squashed
    assert deploy["cls_threshold"] == read_operating_threshold(run / "models")   # predict decides as evaluate did
    # the card and metadata.json carry the evaluation that lies in the run folder
    val_summary = json.loads((run / "eval_val" / "summary.json").read_text())
    meta = json.loads((tmp_path / "exported" / "configs" / "metadata.json").read_text())
    assert meta["eval_metrics"]["val_dice"] == pytest.approx(val_summary["segmentation"]["dice"]["mean"], abs=1e-4)
    assert f"| val | {val_summary['n_images']} | 0 |" in (tmp_path / "exported" / "docs" / "model_card.md").read_text()
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for file in evaluated.index:
        (inputs / Path(file).name).write_bytes(Path(file).read_bytes())
    result = predict(tmp_path / "exported", inputs, tmp_path / "pred", runtime="torch", overlays=False,
                     progress=False)
    predicted = pd.read_csv(result.csv_path)
    predicted.index = [Path(f).name for f in predicted["file"]]
    assert len(predicted) == len(evaluated) > 0
    for file, row in evaluated.iterrows():
        out = predicted.loc[Path(file).name]
        assert out["lesion_area_px"] == pytest.approx(row["lesion_area_pred_px"], abs=2), file
        for c in ("normal", "benign", "malignant"):
            assert out[f"prob_{c}"] == pytest.approx(row[f"prob_{c}"], abs=1e-4), (file, c)
        assert out["predicted_class"] == row["pred_class"], file
    assert (evaluated["lesion_area_pred_px"] > 0).any()   # not a comparison of empty masks only


def test_a_fold_ensemble_is_evaluated_as_it_predicts(us_datalist, tmp_path, capsys):
    """`bmtl evaluate --run A --ensemble B` scores what `bmtl predict --bundle A --bundle B` outputs: the same averaged
    class probabilities and masks for every image, the members' mean threshold; the run's own evaluation is kept."""
    from pipeline.cli import main
    from pipeline.deploy import export_bundle
    from pipeline.handlers import read_operating_threshold
    from pipeline.inference import predict

    preset = tiny_preset(tmp_path / "preset.yaml")
    runs = [tmp_path / f"fold{fold}" for fold in (0, 1)]
    for fold, run in enumerate(runs):
        run_workflow(US_BUNDLE, "training", datalist=str(us_datalist), preset=str(preset), output_dir=str(run),
                     use_mlflow=False, epochs=2, warmup_epochs=0, fold=fold, seed=fold)
    assert main(["evaluate", "--run", str(runs[0]), "--split", "all", "--override", "n_bootstrap=0"]) == 0
    own = (runs[0] / "eval_all" / "per_image.csv").read_text()
    assert main(["evaluate", "--run", str(runs[0]), "--ensemble", str(runs[1]), "--split", "all", "--override",
                 "n_bootstrap=0"]) == 0
    assert "dice" in capsys.readouterr().out
    assert (runs[0] / "eval_all" / "per_image.csv").read_text() == own   # never over the run's own evaluation
    evaluated = pd.read_csv(runs[0] / "eval_all_ensemble" / "per_image.csv").set_index("file")
    single = pd.read_csv(runs[0] / "eval_all" / "per_image.csv").set_index("file")
    assert (evaluated["prob_malignant"] - single["prob_malignant"]).abs().max() > 1e-3   # the member counts

    exported = [tmp_path / f"exported{i}" for i in range(len(runs))]
    for run, bundle in zip(runs, exported):
        export_bundle(US_BUNDLE, run, bundle, formats=["torchscript"])
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for file in evaluated.index:
        (inputs / Path(file).name).write_bytes(Path(file).read_bytes())
    result = predict(exported, inputs, tmp_path / "pred", runtime="torch", overlays=False, progress=False)
    predicted = pd.read_csv(result.csv_path)
    predicted.index = [Path(f).name for f in predicted["file"]]
    assert len(predicted) == len(evaluated) > 0
    for file, row in evaluated.iterrows():
        out = predicted.loc[Path(file).name]
        for c in ("normal", "benign", "malignant"):
            assert out[f"prob_{c}"] == pytest.approx(row[f"prob_{c}"], abs=1e-4), (file, c)
        assert out["lesion_area_px"] == pytest.approx(row["lesion_area_pred_px"], abs=2), file
        assert out["predicted_class"] == row["pred_class"], file
    thresholds = [read_operating_threshold(run / "models") for run in runs]
    summary = json.loads((runs[0] / "eval_all_ensemble" / "summary.json").read_text())
    assert None not in thresholds and thresholds[0] != thresholds[1]
    assert summary["classification"]["operating_threshold"] == pytest.approx(sum(thresholds) / 2)
    assert main(["evaluate", "--run", str(runs[0]), "--ensemble", str(tmp_path / "missing")]) == 2
    assert "missing: not a trained run" in capsys.readouterr().err
    assert main(["evaluate", "--run", str(runs[0]), "--ensemble", str(runs[0])]) == 2
    assert "a run is named twice" in capsys.readouterr().err


@pytest.mark.parametrize("option", [{"oversample": True}, {"weighted_sampler": True}, {"channels_last": True},
                                    {"cpu_bf16": True}, {"cpu_bf16": False}])
def test_training_options(option, us_datalist, tmp_path):
    preset = tiny_preset(tmp_path / "preset.yaml")
    out = tmp_path / "run"
    wf = run_workflow(US_BUNDLE, "training", epochs=1, datalist=str(us_datalist), preset=str(preset),
                      output_dir=str(out), use_mlflow=False, **option)
    n_train = len(wf.parser.get_parsed_content("train#items"))
    n_data = len(wf.parser.get_parsed_content("train#data"))
    assert n_data > n_train if "oversample" in option else n_data == n_train
    assert math.isfinite(pd.read_csv(out / "history.csv")["train_loss"].iloc[0])
    # bfloat16 by default only where the CPU computes it natively (AMX); an explicit value wins (this assertion
    # assumed an AMX CPU until the suite ran on one without)
    inferer = wf.parser.get_parsed_content("train#inferer")
    assert inferer.enabled is option.get("cpu_bf16", cpu_has_fast_bf16())


def test_monai_default_run_id_is_the_workflow_of_the_file(us_datalist, tmp_path):
    """`python -m monai.bundle run --config_file "[common, train]"` (MONAI's default run id, `run`) trains, and the
    same with evaluate.yaml evaluates: the model zoo's convention, beside the named ids."""
    preset = tiny_preset(tmp_path / "preset.yaml")
    values = dict(datalist=str(us_datalist), output_dir=str(tmp_path / "run"), use_mlflow=False, preset=str(preset))
    for workflow, extra in (("training", {"epochs": 1}), ("evaluating", {"eval_dir": str(tmp_path / "eval")})):
        files, override = bundle_config_files(US_BUNDLE, workflow, {**values, **extra})
        wf = ConfigWorkflow(config_file=files, meta_file=str(US_BUNDLE / "configs" / "metadata.json"),
                            logging_file=None, bundle_root=str(US_BUNDLE), **override)   # run_id: MONAI's default
        assert wf.run_id == "run"
        wf.initialize()
        wf.run()
        wf.finalize()
    assert (tmp_path / "run" / "models" / "model.pt").is_file()
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["n_images"] > 0


def test_fold_all_trains_on_every_fold_and_keeps_the_last_epoch(tmp_path):
    """nnU-Net's "all": no validation fold, the last epoch is the model, evaluated with the argmax class."""
    from pipeline.data.prepare import prepare
    from pipeline.data.synthetic import make_us_dataset

    raw = make_us_dataset(tmp_path / "raw", n=30, seed=0, size=(64, 64))
    _, paths = prepare("busi", raw, tmp_path / "prepared", n_folds=3, seed=0, test_fold=0)
    data = json.loads(Path(paths["datalist"]).read_text())
    out = tmp_path / "run"
    common = dict(datalist=str(paths["datalist"]), preset=str(tiny_preset(tmp_path / "preset.yaml")),
                  output_dir=str(out), run_name="all", fold="all")
    wf = run_workflow(US_BUNDLE, "training", epochs=2, **common)
    assert len(wf.parser.get_parsed_content("train#items")) == len(data["training"])
    assert wf.parser.get_parsed_content("validate#items") == []
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [1, 2] and not any(c.startswith("val_") for c in history.columns)
    models = out / "models"
    assert not (models / "operating_point.json").exists()
    last = torch.load(models / "last.pt", map_location="cpu")["network"]
    kept = torch.load(models / "model.pt", map_location="cpu")
    assert kept.keys() == last.keys() and all(torch.equal(kept[k], last[k]) for k in kept)
    assert _mlflow_metrics(out / "mlruns.db", "all").data.params["fold"] == "all"
    run_workflow(US_BUNDLE, "evaluating", split="test", **common)
    summary = json.loads((out / "eval_test" / "summary.json").read_text())
    assert summary["n_images"] == len(data["test"]) > 0


def test_auxiliary_target_trains_and_the_exported_bundle_loads_it(us_datalist, tmp_path):
    """BI-RADS as an auxiliary target: a datalist field, a head of its own in training, pinned for export."""
    from pipeline.deploy import export_bundle
    from pipeline.verify import verify_bundle

    data = json.loads(Path(us_datalist).read_text())
    for i, item in enumerate(data["training"]):   # a field like BUS-BRA's, one item without a value
        item["birads"] = None if i == 0 else str(2 + (i + item["cls"]) % 4)
    datalist = Path(us_datalist).parent / "datalist_birads.json"
    datalist.write_text(json.dumps(data))
    out = tmp_path / "run"
    aux = {"birads": ["2", "3", "4", "5"]}
    wf = run_workflow(US_BUNDLE, "training", epochs=1, datalist=str(datalist), preset=str(tiny_preset(
        tmp_path / "preset.yaml")), output_dir=str(out), use_mlflow=False, aux_targets=aux)
    assert wf.parser.get_parsed_content("loss").aux_weights == {"birads": 0.5}
    assert "birads" in wf.parser.get_parsed_content("loss").terms   # the last training step scored the head
    assert math.isfinite(pd.read_csv(out / "history.csv")["train_loss"].iloc[0])
    assert "heads.birads.weight" in torch.load(out / "models" / "model.pt", map_location="cpu")
    assert json.loads((out / "run_config.json").read_text())["aux_targets"] == aux
    exported = tmp_path / "exported"
    export_bundle(US_BUNDLE, out, exported, formats=["torchscript"])
    assert yaml.safe_load((exported / "configs" / "deploy.yaml").read_text())["aux_targets"] == aux
    rows = verify_bundle(exported)
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]


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


def test_batch_norm_recalibration_changes_only_the_statistics_of_the_evaluated_network(us_datalist, tmp_path):
    """--bn_recalibration train|target re-estimates the batch-norm statistics before evaluation (nmtnet has batch
    norm): the probabilities move, the saved weights do not, and a word outside the three is refused by name."""
    preset = tiny_preset(tmp_path / "preset.yaml", preset="nmtnet")
    common = dict(datalist=str(us_datalist), preset=str(preset), output_dir=str(tmp_path / "run"), use_mlflow=False,
                  n_bootstrap=0)
    run_workflow(US_BUNDLE, "training", epochs=1, warmup_epochs=0, **common)
    weights = (tmp_path / "run" / "models" / "model.pt").read_bytes()
    probabilities = {}
    for mode in ("none", "train", "target"):
        run_workflow(US_BUNDLE, "evaluating", bn_recalibration=mode, **common)
        per_image = pd.read_csv(tmp_path / "run" / "eval_val" / "per_image.csv")
        probabilities[mode] = per_image.filter(like="prob_").to_numpy()
    assert not np.allclose(probabilities["none"], probabilities["target"], atol=1e-4)
    assert not np.allclose(probabilities["train"], probabilities["target"], atol=1e-4)
    assert (tmp_path / "run" / "models" / "model.pt").read_bytes() == weights   # evaluation never saves weights
    with pytest.raises(RuntimeError) as error:   # MONAI wraps what a config expression raises
        run_workflow(US_BUNDLE, "evaluating", bn_recalibration="adapt", **common)
    assert "--bn_recalibration 'adapt': expected one of none, train, target" in str(error.value.__cause__)
