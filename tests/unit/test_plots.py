from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from pipeline import plots
from pipeline.metrics import expected_calibration_error


def assert_nontrivial_png(path, min_bytes=5000):
    assert path.exists(), path
    assert path.stat().st_size > min_bytes, f"{path} is only {path.stat().st_size} bytes"
    pixels = imread(path)
    assert pixels.std() > 0.02, f"{path} looks blank"


@pytest.mark.parametrize("n_classes", [2, 3])
def test_roc_confusion_calibration(tmp_path, n_classes):
    rng = np.random.default_rng(n_classes)
    classes = ["normal", "benign", "malignant"][-n_classes:]
    labels = rng.integers(0, n_classes, 60)
    logits = rng.normal(size=(60, n_classes)) + 2.0 * np.eye(n_classes)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert_nontrivial_png(plots.plot_roc(probs, labels, classes, tmp_path / "roc.png"))
    assert_nontrivial_png(plots.plot_confusion(labels, probs.argmax(1), classes, tmp_path / "cm.png"))
    ece = plots.plot_calibration(probs, labels, tmp_path / "cal.png", class_name="malignant")
    assert ece == pytest.approx(expected_calibration_error(probs, labels))
    assert_nontrivial_png(tmp_path / "cal.png")


def test_roc_marks_the_operating_point(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    probs = np.stack([1 - (p := np.clip(0.3 * labels + rng.random(60) * 0.7, 0, 1)), p], 1)
    plain = plots.plot_roc(probs, labels, ["benign", "malignant"], tmp_path / "plain.png")
    marked = plots.plot_roc(probs, labels, ["benign", "malignant"], tmp_path / "marked.png",
                            operating_point=(0.8, 0.7, "operating point (threshold 0.40)"))
    assert_nontrivial_png(marked)
    assert (np.asarray(Image.open(plain)) != np.asarray(Image.open(marked))).any()


def test_roc_with_one_class_still_draws(tmp_path):
    probs = np.array([[0.8, 0.2], [0.6, 0.4]])
    assert_nontrivial_png(plots.plot_roc(probs, np.array([0, 0]), ["benign", "malignant"], tmp_path / "roc.png"))
    plots.plot_calibration(probs, np.array([0, 0]), tmp_path / "cal.png")
    assert (tmp_path / "cal.png").exists()


def test_overlays(tmp_path):
    rng = np.random.default_rng(0)
    images, truths, preds, titles = [], [], [], []
    for i in range(5):
        img = rng.normal(size=(40, 32 + 8 * i))
        t = np.zeros_like(img)
        p = np.zeros_like(img)
        t[5:20, 0:12] = 1  # touches the border: contour still closed
        p[8:22, 3:15] = 1
        images.append(img)
        truths.append(t if i != 3 else None)
        preds.append(p)
        titles.append(f"img {i}\ntrue: benign | pred: malignant (0.71)\nDice 0.50")
    path = plots.plot_overlays(images, truths, preds, titles, tmp_path / "ov.png", ncols=3)
    assert_nontrivial_png(path)
    assert (plots.plot_overlays([], [], [], [], tmp_path / "empty.png")).exists()


def test_learning_curves_with_gaps(tmp_path):
    history = pd.DataFrame({"epoch": [1, 2, 3, 4], "train_loss": [1.2, 0.9, 0.7, 0.65],
                            "lr": [1e-3, 1e-3, 5e-4, 1e-4], "val_mean_dice": [np.nan, 0.5, np.nan, 0.7],
                            "val_auc": [np.nan, 0.6, np.nan, 0.8], "val_hd95": [np.nan, 12.0, np.nan, 8.0]})
    assert_nontrivial_png(plots.plot_learning_curves(history, tmp_path / "lc.png"))
    assert_nontrivial_png(plots.plot_learning_curves(history.drop(columns="lr").to_dict("records"),
                                                     tmp_path / "lc2.png"))


def test_best_epoch_is_the_kept_checkpoints_and_marked_on_the_curves(tmp_path):
    history = pd.DataFrame({"epoch": [1, 2, 3, 4, 5], "train_loss": [1.0, 0.8, 0.6, 0.5, 0.45],
                            "lr": [1e-3, 9e-4, 5e-4, 1e-4, 0.0], "val_score": [0.5, np.nan, 0.8, 0.8, 0.7]})
    assert plots.best_epoch(history) == 3   # the first of ties: the saver keeps the earlier checkpoint
    assert plots.best_epoch(history.drop(columns="val_score")) is None
    assert plots.best_epoch(history.assign(val_score=np.nan)) is None
    assert_nontrivial_png(plots.plot_learning_curves(history, tmp_path / "curves.png"))


def test_comparison_figure_draws_the_metrics_present(tmp_path):
    table = pd.DataFrame({"network": ["a", "b"], "folds": [3, 3], "dice_mean": [0.8, 0.7], "dice_std": [0.02, np.nan],
                          "hd95_mean": [12.0, 15.0], "hd95_std": [1.0, 2.0]})
    assert_nontrivial_png(plots.plot_comparison(table, ["dice", "auc", "hd95"], tmp_path / "cmp.png"))
    with pytest.raises(ValueError, match="none of the metrics"):
        plots.plot_comparison(table, ["auc"], tmp_path / "none.png")


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions save, kept for inspection (they are written as usual)."""
    figures = []
    save = plots._save

    def keep(fig, path):
        figures.append(fig)
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def test_learning_curves_are_panels_with_the_validation_loss_and_the_kept_epoch(tmp_path, drawn):
    history = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.0, 0.8, 0.6], "val_loss": [1.1, 0.7, 0.9],
                            "lr": [1e-3, 5e-4, 1e-4], "val_dice": [0.4, 0.7, 0.6], "val_auc": [0.6, 0.8, 0.7],
                            "val_score": [0.5, 0.75, 0.65]})
    plots.plot_learning_curves(history, tmp_path / "lc.png")
    axes = drawn[-1].axes
    assert [ax.get_ylabel() for ax in axes] == ["Loss", "Segmentation\n(validation)", "Classification\n(validation)",
                                                "Learning rate"]
    loss_lines = {line.get_label(): line for line in axes[0].get_lines()}
    assert {"train_loss", "val_loss"} <= set(loss_lines) and loss_lines["val_loss"].get_linestyle() == "--"
    for ax in axes:   # epoch 2 (best val_score) marked on every panel
        assert any(list(line.get_xdata()) == [2, 2] for line in ax.get_lines())


def test_overlay_contours_use_the_colour_blind_safe_colours_and_styles(tmp_path, drawn):
    mask = np.zeros((32, 32))
    mask[8:20, 8:20] = 1
    plots.plot_overlays([np.random.default_rng(0).normal(size=(32, 32))], [mask], [np.roll(mask, 3, axis=1)], ["a"],
                        tmp_path / "ov.png")
    lines = drawn[-1].axes[0].get_lines()
    styles = {(line.get_color(), line.get_linestyle()) for line in lines}
    assert (plots.TRUTH_COLOUR, "-") in styles and (plots.PRED_COLOUR, "--") in styles


def test_roc_draws_its_bootstrap_band(tmp_path, drawn):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    p1 = np.clip(labels * 0.6 + rng.uniform(0, 0.4, 60), 0, 1)
    plots.plot_roc(np.stack([1 - p1, p1], 1), labels, ["benign", "malignant"], tmp_path / "roc.png", n_bootstrap=50)
    ax = drawn[-1].axes[0]
    bands = [c for c in ax.collections if "bootstrap band" in str(c.get_label())]
    assert len(bands) == 1
    plots.plot_roc(np.stack([1 - p1, p1], 1), labels, ["benign", "malignant"], tmp_path / "roc0.png", n_bootstrap=0)
    assert not [c for c in drawn[-1].axes[0].collections if "bootstrap band" in str(c.get_label())]
