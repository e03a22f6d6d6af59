from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor

from pipeline.handlers import EvaluationReport
from pipeline.metrics import CLASSIFICATION_METRICS, classification_scores, predicted_classes, segmentation_scores
from pipeline.metrics import expected_calibration_error
from tests.unit.test_plots import assert_nontrivial_png

CLASSES_2 = ["benign", "malignant"]
CLASSES_3 = ["normal", "benign", "malignant"]


def _square(r0, r1, c0, c1, size=32):
    m = torch.zeros(1, size, size)
    m[:, r0:r1, c0:c1] = 1
    return m


def _cases(n_classes):
    """(truth, pred, probs, label) per image; Dice known by construction."""
    empty = torch.zeros(1, 32, 32)
    benign, malignant, normal = n_classes - 2, n_classes - 1, 0
    cases = [
        (_square(8, 16, 8, 16), _square(8, 16, 8, 16), [0.2, 0.8], malignant),  # perfect mask, correct
        (_square(8, 16, 8, 16), _square(8, 16, 12, 20), [0.7, 0.3], benign),  # Dice 0.5
        (empty, empty, [0.6, 0.4], benign),  # empty / empty -> 1
        (empty, _square(0, 4, 0, 4), [0.4, 0.6], benign),  # empty truth, prediction -> 0, misclassified
        (_square(4, 28, 4, 28), _square(10, 20, 10, 20), [0.55, 0.45], malignant),  # misclassified
        (_square(20, 30, 2, 12), _square(20, 30, 2, 12), [0.1, 0.9], malignant),
        (_square(0, 10, 20, 32), _square(2, 10, 20, 30), [0.8, 0.2], benign),  # touches the border
    ]
    if n_classes == 3:
        cases = [(t, p, [0.0] + pr, y) for t, p, pr, y in cases]
        cases += [(empty, empty, [0.7, 0.2, 0.1], normal), (empty, empty, [0.5, 0.4, 0.1], normal),
                  (empty, _square(5, 9, 5, 9), [0.3, 0.6, 0.1], normal)]
        cases = [(t, p, (np.array(pr) * 0.9 + 0.1 / 3).tolist(), y) for t, p, pr, y in cases]
    return cases


def _data(n_classes, batch_size=3, channels=1, with_id=True, spacing=None):
    """Batches in the decollated evaluator format: a list of (items, outputs) pairs."""
    batches, items, outputs = [], [], []
    cases = _cases(n_classes)
    for i, (truth, pred, probs, label) in enumerate(cases):
        image = MetaTensor(torch.rand(channels, 32, 32) + truth, meta={"filename_or_obj": f"/data/images/case_{i}.png"})
        item = {"image": image, "label": truth, "cls": torch.tensor(label), "group": f"patient{i // 2}",
                "source": "synthetic", "device": "scannerA"}
        if with_id:
            item["id"] = f"id{i}"
        if spacing is not None:
            item["spacing"] = torch.tensor(spacing)
        items.append(item)
        outputs.append({"image": image, "pred_seg": pred, "pred_cls": torch.tensor(probs),
                        "label_seg": truth, "label_cls": torch.tensor([label])})
        if len(items) == batch_size or i == len(cases) - 1:
            batches.append((items, outputs))
            items, outputs = [], []
    return batches, cases


def _run(report, batches):
    def step(engine, batch):
        items, outputs = batch
        engine.state.batch = items  # what SupervisedEvaluator(decollate=True) leaves
        return outputs

    engine = Engine(step)
    report.attach(engine)
    engine.run(batches, max_epochs=1)
    return engine


def _reference(cases):
    truth = torch.stack([c[0] for c in cases])
    pred = torch.stack([c[1] for c in cases])
    probs = np.array([c[2] for c in cases])
    labels = np.array([c[3] for c in cases])
    return segmentation_scores(pred, truth), classification_scores(probs, labels), probs, labels


def _close(a, b):
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or math.isnan(b)
    return a == pytest.approx(b, abs=1e-6)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_report_files_and_values(tmp_path, n_classes):
    classes = CLASSES_2 if n_classes == 2 else CLASSES_3
    batches, cases = _data(n_classes)
    report = EvaluationReport(tmp_path, classes, n_bootstrap=200, n_overlays=6)
    engine = _run(report, batches)
    seg, cls, probs, labels = _reference(cases)

    df = pd.read_csv(tmp_path / "per_image.csv")
    expected_columns = (["id", "file", "group", "source", "true_class", "pred_class"]
                        + [f"prob_{c}" for c in classes]
                        + ["dice", "jaccard", "hd95", "lesion_area_true_px", "lesion_area_pred_px", "correct"])
    assert list(df.columns) == expected_columns
    assert len(df) == len(cases)
    assert df["id"].tolist() == [f"id{i}" for i in range(len(cases))]
    assert df["file"].iloc[0] == "/data/images/case_0.png"
    np.testing.assert_allclose(df["dice"][:4], [1.0, 0.5, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(df["dice"], seg["dice"], atol=1e-6)
    np.testing.assert_allclose(df["jaccard"], seg["jaccard"], atol=1e-6)
    np.testing.assert_allclose(df["hd95"], seg["hd95"], atol=1e-6)  # NaN where one side is empty
    assert df["true_class"].tolist() == [classes[y] for y in labels]
    assert df["pred_class"].tolist() == [classes[k] for k in probs.argmax(1)]
    assert df["correct"].tolist() == (probs.argmax(1) == labels).tolist()
    np.testing.assert_allclose(df[[f"prob_{c}" for c in classes]], probs, atol=1e-6)
    assert df["lesion_area_true_px"].tolist() == [int(c[0].sum()) for c in cases]
    assert df["lesion_area_pred_px"].tolist() == [int(c[1].sum()) for c in cases]

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == report.summary()
    assert summary["n_images"] == len(cases)
    s_seg, s_cls = summary["segmentation"], summary["classification"]
    assert s_seg["dice"]["mean"] == pytest.approx(seg["dice"].mean())
    assert s_seg["dice"]["std"] == pytest.approx(seg["dice"].std(ddof=1))
    assert s_seg["jaccard"]["mean"] == pytest.approx(seg["jaccard"].mean())
    both = ~np.isnan(seg["hd95"])
    assert s_seg["hd95"]["n"] == both.sum() and s_seg["hd95"]["mean"] == pytest.approx(seg["hd95"][both].mean())
    for k, c in enumerate(classes):
        assert s_seg["per_class"][c]["dice"] == pytest.approx(seg["dice"][labels == k].mean())
        assert s_seg["per_class"][c]["n"] == (labels == k).sum()
    for name in CLASSIFICATION_METRICS:
        assert _close(s_cls[name], cls[name]), name
    assert s_cls["confusion_matrix"]["matrix"] == cls["confusion_matrix"]
    assert s_cls["confusion_matrix"]["classes"] == classes
    assert s_cls["ece"] == pytest.approx(expected_calibration_error(probs, labels))
    for name in ("auc", "accuracy", "balanced_accuracy", "f1_macro", "sensitivity", "specificity"):
        lo, hi = s_cls["ci95"][name]
        assert lo <= s_cls[name] <= hi, name
    for name in ("dice", "jaccard"):
        lo, hi = s_seg[name]["ci95"]
        assert lo <= s_seg[name]["mean"] <= hi and lo < hi
    assert "empty" in summary["conventions"] and "pixels" in summary["conventions"]
    assert ("auc_macro_ovr" in s_cls["ci95"]) == (n_classes == 3)

    m = engine.state.metrics
    assert m["test_dice"] == pytest.approx(seg["dice"].mean())
    assert m["test_auc"] == pytest.approx(cls["auc"])
    assert m["test_accuracy"] == pytest.approx(cls["accuracy"])
    assert m["test_auc_ci_low"] <= m["test_auc"] <= m["test_auc_ci_high"]
    assert m["test_ece"] == pytest.approx(s_cls["ece"])
    assert f"test_dice_{classes[0]}" in m

    for png in ("roc.png", "confusion_matrix.png", "calibration.png", "overlays.png"):
        assert_nontrivial_png(tmp_path / png)


def test_id_falls_back_to_file_name_and_channel_zero(tmp_path):
    batches, cases = _data(2, channels=3, with_id=False, batch_size=4)
    report = EvaluationReport(tmp_path, CLASSES_2, n_bootstrap=0, n_overlays=4, prefix="val_")
    engine = _run(report, batches)
    df = pd.read_csv(tmp_path / "per_image.csv")
    assert df["id"].tolist() == [f"case_{i}.png" for i in range(len(cases))]
    assert "ci95" not in report.summary()["classification"]
    assert "val_dice" in engine.state.metrics and not any(k.startswith("test_") for k in engine.state.metrics)
    assert (tmp_path / "overlays.png").exists()


def test_plain_tensors_without_meta(tmp_path):
    report = EvaluationReport(tmp_path, CLASSES_2, n_bootstrap=0)
    truth = _square(8, 16, 8, 16)
    report.add({"image": torch.rand(1, 32, 32), "pred_seg": truth, "pred_cls": torch.tensor([0.3, 0.7]),
                "label_seg": truth, "label_cls": 1})
    report.add({"image": torch.rand(1, 32, 32), "pred_seg": truth, "pred_cls": torch.tensor([0.6, 0.4]),
                "label_seg": truth, "label_cls": torch.tensor(0)})
    summary = report()
    df = report.per_image()
    assert df["id"].tolist() == ["image_00000", "image_00001"] and df["file"].tolist() == ["", ""]
    assert summary["classification"]["accuracy"] == 1.0
    assert (tmp_path / "per_image.csv").exists()


def test_spacing_gives_mm(tmp_path):
    batches, cases = _data(2, spacing=(0.5, 0.5))
    report = EvaluationReport(tmp_path, CLASSES_2, n_bootstrap=0, spacing_key="spacing")
    _run(report, batches)
    df = pd.read_csv(tmp_path / "per_image.csv")
    np.testing.assert_allclose(df["hd95_mm"], df["hd95"] * 0.5, atol=1e-5)
    np.testing.assert_allclose(df["lesion_area_true_mm2"], df["lesion_area_true_px"] * 0.25)
    assert report.summary()["segmentation"]["hd95_mm"]["unit"] == "mm"


def test_rerun_resets_and_overlay_memory_is_bounded(tmp_path):
    # 30 larger images: candidates stay bounded and downsampled; the worst Dice ones are shown first
    rng = np.random.default_rng(0)
    batches = []
    for b in range(10):
        items, outputs = [], []
        for j in range(3):
            i = 3 * b + j
            truth = torch.zeros(1, 200, 300)
            truth[:, 50:150, 50:150] = 1
            pred = torch.zeros(1, 200, 300)
            shift = int(rng.integers(0, 100))
            pred[:, 50:150, 50 + shift:150 + shift] = 1
            p = float(rng.uniform())
            items.append({"id": f"img{i}"})
            outputs.append({"image": torch.rand(2, 200, 300), "pred_seg": pred, "pred_cls": torch.tensor([1 - p, p]),
                            "label_seg": truth, "label_cls": int(rng.integers(0, 2))})
        batches.append((items, outputs))
    report = EvaluationReport(tmp_path, CLASSES_2, n_bootstrap=50, n_overlays=4)
    engine = _run(report, batches)
    assert len(report._worst) <= 4 and len(report._reservoir) <= 4
    cands = [c for _, _, c in report._worst] + report._reservoir
    assert all(max(c["image"].shape) <= 128 and c["image"].dtype == np.uint8 for c in cands)
    chosen, n_worst = report._select([c for _, _, c in report._worst], report._reservoir)
    dice = pd.read_csv(tmp_path / "per_image.csv")["dice"].to_numpy()
    assert len(chosen) == 4 and n_worst == 2
    assert sorted(c["dice"] for c in chosen[:n_worst]) == pytest.approx(np.sort(dice)[:2], abs=1e-6)
    engine.run(batches, max_epochs=2)  # a second epoch starts over
    assert len(pd.read_csv(tmp_path / "per_image.csv")) == 30
    assert report.summary()["n_images"] == 30


def test_ece_reflects_calibration(tmp_path):
    truth = _square(8, 16, 8, 16)

    def run(probs_pos, labels, out):
        report = EvaluationReport(out, CLASSES_2, n_bootstrap=0, n_overlays=2)
        for p, y in zip(probs_pos, labels):
            report.add({"image": torch.rand(1, 32, 32), "pred_seg": truth, "pred_cls": torch.tensor([1 - p, p]),
                        "label_seg": truth, "label_cls": y})
        return report()["classification"]["ece"]

    calibrated = run([0.25] * 8 + [0.75] * 8, [1, 1] + [0] * 6 + [1] * 6 + [0, 0], tmp_path / "a")
    overconfident = run([0.95] * 10, [1, 0] * 5, tmp_path / "b")
    assert calibrated == pytest.approx(0.0, abs=1e-6)
    assert overconfident == pytest.approx(0.45, abs=1e-5)


def test_batch_dicts_without_decollation(tmp_path):
    batches, cases = _data(2, batch_size=7)
    items, outputs = batches[0]
    collated = ({"id": [it["id"] for it in items]},
                {k: torch.stack([torch.as_tensor(o[k]) for o in outputs])
                 for k in ("pred_seg", "pred_cls", "label_seg")} | {"label_cls": torch.tensor([c[3] for c in cases])})
    report = EvaluationReport(tmp_path, CLASSES_2, n_bootstrap=0, n_overlays=0)
    _run(report, [collated])
    df = report.per_image()
    assert df["id"].tolist() == [f"id{i}" for i in range(7)]
    np.testing.assert_allclose(df["dice"][:4], [1.0, 0.5, 1.0, 0.0], atol=1e-6)


@pytest.mark.parametrize("killed", ["per_image.csv", "summary.json", "roc.png"])
def test_report_files_are_replaced_atomically(tmp_path, kill_before_rename, killed):
    """A kill between writing a new report file and renaming it keeps the previous evaluation's complete file."""
    batches, _ = _data(2)
    engine = _run(EvaluationReport(tmp_path, CLASSES_2, n_bootstrap=0, n_overlays=2), batches)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    kill_before_rename(killed)
    with pytest.raises(OSError, match="killed before the rename"):
        engine.run(batches[:1], max_epochs=1)  # a new evaluation of fewer images
    assert (tmp_path / killed).read_bytes() == before[killed]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)  # no temporary left
    if killed != "per_image.csv":  # the files written before the failed one are the new evaluation's
        assert len(pd.read_csv(tmp_path / "per_image.csv")) == 3


@pytest.mark.parametrize("n_classes", [2, 3])
def test_report_decides_with_the_operating_threshold(tmp_path, n_classes):
    classes = CLASSES_2 if n_classes == 2 else CLASSES_3
    batches, cases = _data(n_classes)
    probs = np.array([c[2] for c in cases])
    labels = np.array([c[3] for c in cases])
    threshold = 0.4   # lower than argmax's effective 0.5: the malignant image at 0.45 (x0.9 + 0.033 for 3) flips
    report = EvaluationReport(tmp_path, classes, n_bootstrap=50, n_overlays=2, threshold=threshold)
    _run(report, batches)
    df = pd.read_csv(tmp_path / "per_image.csv")
    expected = predicted_classes(probs, threshold)
    assert df["pred_class"].tolist() == [classes[k] for k in expected]
    assert (expected != probs.argmax(1)).any()   # the threshold changes some decision here
    summary = json.loads((tmp_path / "summary.json").read_text())
    cls = classification_scores(probs, labels, threshold=threshold)
    assert summary["classification"]["operating_threshold"] == threshold
    assert summary["classification"]["sensitivity"] == pytest.approx(cls["sensitivity"])
    assert summary["classification"]["sensitivity"] > classification_scores(probs, labels)["sensitivity"]
    with pytest.raises(ValueError, match="threshold must be in"):
        EvaluationReport(tmp_path, classes, threshold=0.0)
