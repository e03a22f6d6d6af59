from __future__ import annotations

import json

from pipeline.model_card import build_model_card, eval_metrics

RUN_CONFIG = {"bundle": "breast_us_mtl", "modality": "US", "preset": "nmtnet", "network_name": "nmtnet",
              "in_channels": 1, "classes": ["benign", "malignant"], "image_size": [128, 128],
              "resize_mode": "bilinear", "seg_threshold": 0.5, "fold": 1, "seed": 0}


def _dataset(root, synthetic):
    items = [{"image": f"images/{i}.png", "label": f"masks/{i}.png", "cls": i % 2, "group": f"p{i // 2}",
              "fold": i % 3, "source": "x"} for i in range(9)]
    datalist = {"name": "synthetic_us" if synthetic else "busbra", "modality": "US",
                "classes": ["benign", "malignant"], "training": items, "test": items[:4]}
    (root / "datalist.json").write_text(json.dumps(datalist))
    (root / "dataset.json").write_text(json.dumps({"description": "made for the test", "license": "CC BY 4.0",
                                                   "citation": "Someone 2023", **({"synthetic": True} if synthetic
                                                                                  else {})}))
    return root / "datalist.json"


def _summary(dice, auc, threshold):
    return {"n_images": 4, "segmentation": {"dice": {"mean": dice, "ci95": [dice - 0.05, dice + 0.05]},
                                            "jaccard": {"mean": dice - 0.1}, "hd95": {"mean": 12.5}},
            "classification": {"auc": auc, "sensitivity": 0.75, "specificity": float("nan"), "ece": 0.05,
                               "balanced_accuracy": 0.7, "operating_threshold": threshold,
                               "ci95": {"auc": [auc - 0.1, min(1.0, auc + 0.1)]}}}


def test_card_says_what_the_run_was_trained_on_and_how_it_scored(tmp_path):
    run = tmp_path / "run"
    (run / "eval_test").mkdir(parents=True)
    (run / "eval_external_busi_all").mkdir()
    (run / "eval_test" / "summary.json").write_text(json.dumps(_summary(0.8, 0.9, 0.31)))
    (run / "eval_external_busi_all" / "summary.json").write_text(
        json.dumps({**_summary(0.6, 0.7, None), "left_out": {"per_class": {"normal": 3}}}))
    datalist = _dataset(tmp_path, synthetic=False)
    card = build_model_card(run, {**RUN_CONFIG, "datalist": str(datalist)}, cls_threshold=0.31, bundle_name="B")
    assert card.startswith("# Model card: B")
    assert "Research use only. Not a medical device" in card and "synthetic" not in card.lower()
    assert "**busbra** (US): made for the test" in card
    assert "9 images of 5 patients/groups in the training section (benign 5, malignant 4)" in card
    assert "validation fold 1 (3 images)" in card and "Held-out test set: 4 images" in card
    assert "CC BY 4.0" in card and "Someone 2023" in card
    assert "at least **0.310**" in card and "128x128 (bilinear interpolation)" in card
    assert "| test | 4 | 0 | 0.800 (0.750-0.850) | 0.700 | 12.500 | 0.900 (0.800-1.000) | 0.750 | n/a" in card
    assert "| external_busi_all | 4 | 3 | 0.600 (0.550-0.650)" in card and "| argmax |" in card
    metrics = eval_metrics(run)
    assert metrics["test_dice"] == 0.8 and metrics["test_auc"] == 0.9 and metrics["external_busi_all_dice"] == 0.6
    assert "test_specificity" not in metrics   # NaN is left out, never written as a number


def test_card_of_a_synthetic_unevaluated_run_says_so(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval_val").mkdir()
    (run / "eval_val" / "summary.json").write_text("{truncated")      # a broken evaluation is left out
    datalist = _dataset(tmp_path, synthetic=True)
    card = build_model_card(run, {**RUN_CONFIG, "datalist": str(datalist)})
    assert "**Trained on synthetic data**" in card and "Synthetic training data" in card
    assert "Not evaluated before export" in card and "the most probable class (argmax" in card
    assert eval_metrics(run) == {}
    moved = build_model_card(run, {**RUN_CONFIG, "datalist": str(tmp_path / "gone" / "datalist.json")})
    assert "was not readable at export time" in moved
