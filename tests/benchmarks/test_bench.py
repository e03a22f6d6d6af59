"""The benchmarks' library (benchmarks/bench.py): budget planning, scanner shifts, reading and comparing results."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import bench
from pipeline.data.datalist import split_items
from pipeline.data.prepare import prepare
from pipeline.data.synthetic import make_us_dataset


@pytest.fixture(scope="module")
def tiny_us_datalist(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_us")
    raw = make_us_dataset(root / "raw", n=12, seed=0, size=(64, 64))
    _, paths = prepare("busi", raw, root / "prepared", n_folds=2, seed=0)
    return paths["datalist"]


def test_plan_epochs_equal_budget():
    # 2 minutes at 25 img/s over 1,500 images is exactly 2 epochs; a slow network still gets one
    assert bench.plan_epochs(25.0, 1500, 120) == 2
    assert bench.plan_epochs(1.0, 1500, 120) == 1
    assert bench.plan_epochs(100.0, 1000, 60) == 6
    with pytest.raises(ValueError, match="budget_seconds"):
        bench.plan_epochs(10.0, 100, 0)


def test_train_throughput_and_inference_time_are_positive():
    assert bench.train_images_per_second("segresnet_seg_only", size=32, batch=2, steps=1) > 0
    assert bench.inference_ms_per_image("efficientnet_cls_only", size=32, repeats=2) > 0
    fp32, bf16 = bench.bf16_train_images_per_second("segresnet_seg_only", size=32, batch=2, rounds=2,
                                                    steps_per_round=3)
    assert fp32 > 0 and bf16 > 0


def test_circle_training_preset_builds_the_wrapper():
    from pipeline.engines import CircleTraining

    assert isinstance(bench.build_preset_network("mtil"), CircleTraining)
    assert not isinstance(bench.build_preset_network("nmtnet"), CircleTraining)


def test_preset_loss_is_the_one_its_fragment_declares():
    from monai.losses import DiceCELoss, DiceLoss

    from pipeline.losses import FocalClassificationLoss

    paper = bench.build_preset_loss("unetpp_mt")   # paper 004: Dice and focal, alpha 0.35
    assert type(paper.seg_loss) is DiceLoss and isinstance(paper.cls_loss, FocalClassificationLoss)
    assert (paper.seg_weight, paper.cls_weight, paper.aux_weights) == (0.35, 0.65, {"deep_supervision": 0.35})
    default = bench.build_preset_loss("nmtnet")
    assert type(default.seg_loss) is DiceCELoss and type(default.cls_loss) is torch.nn.CrossEntropyLoss


@pytest.mark.parametrize("kind", bench.SHIFTS)
def test_shift_image_changes_the_image_and_survives_percentile_normalisation(kind):
    rng = np.random.default_rng(0)
    image = (np.linspace(20, 230, 64)[None, :] * np.ones((48, 1))).astype(np.uint8)
    shifted = bench.shift_image(image, kind, rng)
    assert shifted.shape == image.shape and shifted.dtype == np.uint8

    def normalise(x):  # what the bundles' ScaleIntensityRangePercentilesd does
        lo, hi = np.percentile(x, (0.5, 99.5))
        return np.clip((x - lo) / (hi - lo), 0, 1)

    assert np.abs(normalise(shifted.astype(float)) - normalise(image.astype(float))).mean() > 0.02


def test_shift_image_rejects_bad_input():
    with pytest.raises(ValueError, match="shift kind"):
        bench.shift_image(np.zeros((8, 8), np.uint8), "blur", np.random.default_rng(0))
    with pytest.raises(ValueError, match="grey"):
        bench.shift_image(np.zeros((8, 8, 3), np.uint8), "gain", np.random.default_rng(0))


def test_write_shifted_datalist_keeps_masks_labels_and_fold(tiny_us_datalist, tmp_path):
    path = bench.write_shifted_datalist(tiny_us_datalist, 0, tmp_path / "gain", "gain")
    original = split_items(tiny_us_datalist, 0, "val")
    shifted = split_items(path, 0, "val")
    assert [i["id"] for i in shifted] == [i["id"] for i in original]
    for a, b in zip(original, shifted):
        assert b["label"] == a["label"] and b["cls"] == a["cls"] and b["fold"] == 0
        assert b["image"] != a["image"]
        img_a = np.asarray(Image.open(a["image"]).convert("L"))
        img_b = np.asarray(Image.open(b["image"]))
        assert img_b.shape == img_a.shape and not np.array_equal(img_a, img_b)
    assert json.loads(path.read_text())["classes"] == json.loads(open(tiny_us_datalist).read())["classes"]


def _summary(tmp_path, hd95=3.0, with_ci=True):
    ci = {"ci95": [0.5, 0.7]} if with_ci else {}
    summary = {
        "segmentation": {"dice": {"mean": 0.6, **ci}, "jaccard": {"mean": 0.5, **ci}, "hd95": {"mean": hd95}},
        "classification": {"auc": 0.8, "accuracy": 0.7, "balanced_accuracy": 0.65, "f1_macro": 0.6,
                           "sensitivity": 0.5, "specificity": 0.9,
                           **({"ci95": {"auc": [0.7, 0.9]}} if with_ci else {})},
    }
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    return tmp_path


def test_read_summary(tmp_path):
    out = bench.read_summary(_summary(tmp_path))
    assert out["dice"] == {"mean": 0.6, "lo": 0.5, "hi": 0.7}
    assert out["auc"]["lo"] == 0.7 and np.isnan(out["accuracy"]["lo"])
    out = bench.read_summary(_summary(tmp_path, hd95=None, with_ci=False))
    assert np.isnan(out["hd95"]["mean"]) and np.isnan(out["dice"]["lo"])


def _per_image(dice, prob, truth):
    return pd.DataFrame({"id": [f"i{k}" for k in range(len(dice))], "dice": dice, "prob_malignant": prob,
                         "true_class": ["malignant" if t else "benign" for t in truth]})


def test_paired_bootstrap_detects_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    n = 200
    truth = rng.random(n) < 0.4
    dice = rng.uniform(0.5, 0.9, n)
    good_prob = np.clip(truth * 0.6 + rng.normal(0.2, 0.15, n), 0, 1)
    noise_prob = rng.random(n)
    better = _per_image(dice + 0.1, good_prob, truth)
    worse = _per_image(dice, noise_prob, truth)
    out = bench.paired_bootstrap(better, worse, n_resamples=300)
    assert out["dice"]["diff"] == pytest.approx(0.1)
    assert out["dice"]["lo"] > 0 and out["dice"]["p"] < 0.01
    assert out["auc"]["diff"] > 0.3 and out["auc"]["lo"] > 0
    same = bench.paired_bootstrap(worse, worse.sample(frac=1, random_state=1), n_resamples=100)
    assert same["dice"]["diff"] == pytest.approx(0) and same["dice"]["p"] == 1.0
    with pytest.raises(ValueError, match="same images"):
        bench.paired_bootstrap(better, worse.iloc[:10])


def test_paired_bootstrap_seeds_averages_the_seeds_on_one_draw_of_images():
    rng = np.random.default_rng(1)
    n = 120
    truth = rng.random(n) < 0.4
    dice = rng.uniform(0.5, 0.9, n)
    prob = np.clip(truth * 0.5 + rng.normal(0.25, 0.2, n), 0, 1)
    ref = _per_image(dice, prob, truth)
    seed0, seed1 = _per_image(dice + 0.1, prob, truth), _per_image(dice + 0.3, prob, truth)
    out = bench.paired_bootstrap_seeds([(seed0, ref), (seed1, ref.sample(frac=1, random_state=2))], n_resamples=200)
    assert out["dice"]["diff"] == pytest.approx(0.2)
    assert out["dice"]["lo"] == pytest.approx(0.2) and out["dice"]["hi"] == pytest.approx(0.2)
    assert out["auc"]["diff"] == pytest.approx(0.0)
    one = bench.paired_bootstrap_seeds([(seed0, ref)], n_resamples=50)
    assert one == bench.paired_bootstrap(seed0, ref, n_resamples=50)
    with pytest.raises(ValueError, match="no pair"):
        bench.paired_bootstrap_seeds([])
    with pytest.raises(ValueError, match="same images"):
        bench.paired_bootstrap_seeds([(seed0, ref), (seed1, ref.iloc[:50])])


def test_markdown_results_blanks_the_task_a_baseline_does_not_learn():
    metrics = {m: {"mean": 0.5, "lo": 0.4, "hi": 0.6} for m in bench.REPORTED_METRICS}
    text = bench.markdown_results([
        {"network": "segresnet_shared", "network_name": "segresnet_shared", **metrics},
        {"network": "segresnet_seg_only", "network_name": "segresnet_seg_only", **metrics, "epochs": 3},
        {"network": "cv", "network_name": "efficientnet_cls_only",
         **{m: {"mean": 0.5, "std": 0.1} for m in bench.REPORTED_METRICS}},
    ], extra=[("epochs", "epochs")])
    lines = text.splitlines()
    assert len(lines) == 5 and lines[0].startswith("| network | dice |")
    assert lines[2].count("0.500 (0.400-0.600)") == 8 and lines[2].split("|")[4].strip() == "0.5 (0.4-0.6)"
    seg_only = lines[3].split("|")
    assert seg_only[1].strip() == "segresnet_seg_only" and seg_only[5].strip() == "-" and seg_only[-2].strip() == "3"
    assert seg_only[4].strip() == "0.5 (0.4-0.6)"  # its own task (hd95) is kept
    assert "0.500 ± 0.100" in lines[4] and lines[4].split("|")[2].strip() == "-"


def test_replace_section_keeps_the_rest_of_the_file(tmp_path):
    path = tmp_path / "B.md"
    bench.replace_section(path, "a", "first")
    assert path.read_text() == "<!-- a:begin -->\nfirst\n<!-- a:end -->\n"
    path.write_text("# Title\n\nintro\n\n" + path.read_text() + "\nafter\n")
    bench.replace_section(path, "a", "second")
    bench.replace_section(path, "b", "other")
    text = path.read_text()
    assert text.startswith("# Title\n\nintro\n\n<!-- a:begin -->\nsecond\n<!-- a:end -->\n\nafter")
    assert "first" not in text and text.rstrip().endswith("<!-- b:begin -->\nother\n<!-- b:end -->")
