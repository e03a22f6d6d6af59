"""Figures of an evaluation or a training run, from plain numpy / pandas inputs.

Every function takes arrays (no engine, no tensors) and an output path, writes one PNG and returns the path (or a
number it computed), so the figures can be drawn by the evaluation report, by a comparison of runs or by inference
alone. Figures are built on ``matplotlib.figure.Figure`` (Agg canvas), never through ``pyplot``: nothing here
changes the global backend or leaks open figures in a long training run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from skimage import measure
from sklearn.calibration import calibration_curve
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

from pipeline.atomic import atomic_path
from pipeline.metrics import expected_calibration_error, positive_class_probability, roc_confidence_band

__all__ = [
    "plot_roc",
    "plot_confusion",
    "plot_calibration",
    "plot_overlays",
    "plot_gradcam_grid",
    "plot_learning_curves",
    "best_epoch",
    "plot_comparison",
    "show_grey",
    "show_heat",
]

# Okabe-Ito colours (told apart with every common colour-vision deficiency), and the line style differs too
TRUTH_COLOUR = "#56B4E9"   # sky blue, solid
PRED_COLOUR = "#E69F00"    # orange, dashed
TRUTH_STYLE, PRED_STYLE = "-", "--"
DPI = 110


def _save(fig: Figure, path: str | PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:  # a viewer or a kill never sees half a PNG
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=DPI, bbox_inches="tight", facecolor="white")
    return path


def plot_roc(probs: Any, labels: Any, classes: Sequence[str], path: str | PathLike, positive: int = -1,
             title: str | None = None, operating_point: tuple[float, float, str] | None = None,
             n_bootstrap: int = 200) -> Path:
    """ROC curve of the positive class vs rest (AUC in the legend) with its pointwise 95% bootstrap band
    (``metrics.roc_confidence_band``); with 3+ classes also one curve per class (one-vs-rest, thin dashed lines).

    Args:
        probs: ``(N, K)`` class probabilities.
        labels: ``(N,)`` true class indices.
        classes: the K class names.
        path: output PNG.
        positive: index of the positive class (default: last).
        title: figure title (default: "ROC: <positive> vs rest").
        operating_point: ``(sensitivity, specificity, label)`` of the class decision, marked on the curve.
        n_bootstrap: resamples of the band (0: no band).
    """
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels).reshape(-1).astype(int)
    n_classes = probs.shape[1]
    pos = positive % n_classes
    fig = Figure(figsize=(6, 5.5))
    ax = fig.add_subplot()
    present = set(np.unique(labels).tolist())
    if n_classes > 2:
        for k in range(n_classes):
            if k == pos or k not in present or len(present) < 2:
                continue
            RocCurveDisplay.from_predictions(labels == k, probs[:, k], name=f"{classes[k]} vs rest", ax=ax,
                                             curve_kwargs={"linestyle": "--", "linewidth": 1.2, "alpha": 0.8})
    if pos in present and len(present) > 1:
        RocCurveDisplay.from_predictions(labels == pos, probs[:, pos], name=f"{classes[pos]} vs rest", ax=ax,
                                         curve_kwargs={"linewidth": 2.5, "color": "tab:red"},
                                         plot_chance_level=True)
        if n_bootstrap > 0:
            fpr, low, high = roc_confidence_band(probs[:, pos], labels == pos, n_bootstrap=n_bootstrap)
            ax.fill_between(fpr, low, high, color="tab:red", alpha=0.15, linewidth=0,
                            label=f"95% bootstrap band ({n_bootstrap} resamples)")
        if operating_point is not None:
            sensitivity, specificity, label = operating_point
            ax.plot(1.0 - specificity, sensitivity, marker="o", markersize=9, color="black", linestyle="none",
                    label=label)
    else:
        ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
        ax.text(0.5, 0.5, f"ROC undefined:\nthe test set lacks positives ({classes[pos]}) or negatives",
                ha="center", va="center", fontsize=11, transform=ax.transAxes,
                bbox={"facecolor": "lightyellow", "edgecolor": "grey"})
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("False positive rate (1 - specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    ax.set_title(title or f"ROC: {classes[pos]} vs rest (n={labels.size})")
    ax.grid(alpha=0.3)
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize=9)
    return _save(fig, path)


def plot_confusion(labels: Any, predicted: Any, classes: Sequence[str], path: str | PathLike,
                   title: str | None = None) -> Path:
    """Confusion matrix with class names: counts (left) and row-normalised, i.e. recall per true class (right)."""
    labels, predicted = np.asarray(labels).reshape(-1).astype(int), np.asarray(predicted).reshape(-1).astype(int)
    ids = list(range(len(classes)))
    fig = Figure(figsize=(5.2 * 2 + 0.8, 4.8))
    axes = fig.subplots(1, 2, gridspec_kw={"wspace": 0.35})
    for ax, normalize, fmt, name in ((axes[0], None, "d", "counts"), (axes[1], "true", ".2f", "row-normalised")):
        ConfusionMatrixDisplay.from_predictions(labels, predicted, labels=ids, display_labels=list(classes),
                                                normalize=normalize, values_format=fmt, cmap="Blues", ax=ax,
                                                colorbar=False, text_kw={"fontsize": 12})
        ax.set_title(name)
        ax.set_xlabel("Predicted class")
        ax.set_ylabel("True class")
    fig.suptitle(title or f"Confusion matrix (n={labels.size}, rows = truth)", fontsize=13)
    return _save(fig, path)


def plot_calibration(probs: Any, labels: Any, path: str | PathLike, positive: int = -1, n_bins: int = 10,
                     class_name: str | None = None) -> float:
    """Reliability diagram of the positive-class probability (``sklearn.calibration.calibration_curve``, equal-width
    bins) above a histogram of those probabilities; the ECE is in the title.

    Args:
        probs: ``(N, K)`` class probabilities, or ``(N,)`` positive-class probabilities.
        labels: class indices (2-D ``probs``) or 0/1 truth (1-D ``probs``).
        path: output PNG.
        positive: positive class index (2-D ``probs``).
        n_bins: equal-width bins, for the diagram and the ECE.
        class_name: name of the positive class, for the labels.

    Returns:
        the expected calibration error (see ``expected_calibration_error``).
    """
    p, y = positive_class_probability(probs, labels, positive)
    ece = expected_calibration_error(p, y, n_bins=n_bins)
    name = class_name or "positive class"
    fig = Figure(figsize=(6, 7))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
    if p.size and 0 < y.sum() < y.size:
        frac_pos, mean_pred = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
        top.plot(mean_pred, frac_pos, marker="o", linewidth=2, color="tab:blue", label="model")
    elif p.size:
        top.text(0.5, 0.5, "only one class present", ha="center", va="center", transform=top.transAxes)
    top.set_xlim(-0.01, 1.01)
    top.set_ylim(-0.01, 1.01)
    top.set_ylabel(f"Fraction of {name}")
    top.set_title(f"Reliability diagram, {name}\nECE = {ece:.3f} ({n_bins} equal-width bins, n={p.size})")
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=9)
    bottom.hist(p, bins=np.linspace(0, 1, n_bins + 1), color="tab:blue", edgecolor="white")
    bottom.set_xlabel(f"Predicted probability of {name}")
    bottom.set_ylabel("Images")
    bottom.grid(alpha=0.3)
    _save(fig, path)
    return ece


def _contours(ax: Any, mask: np.ndarray, colour: str, linewidth: float = 1.3, linestyle: str = "-") -> None:
    """Draw the 0.5 iso-contours of a 2-D mask; padded so that lesions touching the border get closed contours."""
    if mask is None or not np.any(np.asarray(mask) > 0.5):
        return
    padded = np.pad(np.asarray(mask, dtype=np.float32), 1)
    for c in measure.find_contours(padded, 0.5):
        ax.plot(c[:, 1] - 1, c[:, 0] - 1, color=colour, linewidth=linewidth, linestyle=linestyle)


def show_grey(ax: Any, image: np.ndarray) -> Any:
    """Draw a grey image on ``ax`` with a 1-99 percentile window (every figure of the project shows images so)."""
    img = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(img, [1, 99]) if img.size else (0.0, 1.0)
    return ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")


def show_heat(ax: Any, heat: np.ndarray) -> Any:
    """Draw a Grad-CAM map in [0, 1] on ``ax`` over what is there (jet, half transparent, scale fixed to 0-1)."""
    return ax.imshow(np.clip(np.asarray(heat, dtype=np.float32), 0, 1), cmap="jet", vmin=0.0, vmax=1.0, alpha=0.5,
                     interpolation="bilinear")


def plot_gradcam_grid(images: Sequence[np.ndarray], heats: Sequence[np.ndarray], titles: Sequence[str],
                      path: str | PathLike, ncols: int = 4, title: str | None = None,
                      title_colours: Sequence[str] | None = None) -> Path:
    """A grid of Grad-CAM maps (jet, half transparent, scale 0-1) over their grey images, one colour bar.

    Args:
        images: 2-D arrays (the network's input; a 1-99 percentile grey window).
        heats: 2-D maps in [0, 1] of the same size as their image.
        titles: one title per image.
        path: output PNG.
        ncols: grid columns.
        title: figure title.
        title_colours: optional colour per image title.
    """
    fig, axes = _image_grid(images, titles, ncols, title_colours, extra_width=0.8)
    shown = [show_heat(ax, heat) for ax, heat in zip(axes, heats)]
    if shown:
        fig.colorbar(shown[0], ax=axes.tolist(), shrink=0.6, label="Grad-CAM (0-1)")
    fig.suptitle(title or "Grad-CAM", fontsize=12)
    return _save(fig, path)


def _image_grid(images: Sequence[np.ndarray], titles: Sequence[str], ncols: int,
                title_colours: Sequence[str] | None, extra_width: float = 0.0) -> tuple[Figure, np.ndarray]:
    """A figure with one grey image per panel (1-99 percentile window) and its title; the axes, flattened."""
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig = Figure(figsize=(3.1 * ncols + extra_width, 3.6 * nrows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= n:
            continue
        show_grey(ax, images[i])
        colour = title_colours[i] if title_colours is not None else "black"
        ax.set_title(titles[i], fontsize=8.5, color=colour, parse_math=False)  # file names are data
    if n == 0:
        axes[0].text(0.5, 0.5, "no images", ha="center", va="center")
    return fig, axes


def plot_overlays(images: Sequence[np.ndarray], truths: Sequence[np.ndarray | None],
                  preds: Sequence[np.ndarray | None], titles: Sequence[str], path: str | PathLike,
                  ncols: int = 4, title: str | None = None, title_colours: Sequence[str] | None = None) -> Path:
    """A grid of grey images with the truth contour (green) and the predicted contour (red).

    Args:
        images: 2-D arrays (any size; shown with a 1-99 percentile grey window).
        truths: 2-D truth masks of the same size as their image (or ``None``, e.g. at inference).
        preds: 2-D predicted masks (or ``None``).
        titles: one title per image.
        path: output PNG.
        ncols: grid columns.
        title: figure title.
        title_colours: optional colour per image title (e.g. dark red for a misclassified image).
    """
    fig, axes = _image_grid(images, titles, ncols, title_colours)
    for i, ax in enumerate(axes[: len(images)]):
        # the truth is drawn wider, under the prediction: where they coincide both colours stay visible
        _contours(ax, truths[i], TRUTH_COLOUR, linewidth=2.6, linestyle=TRUTH_STYLE)
        _contours(ax, preds[i], PRED_COLOUR, linewidth=1.6, linestyle=PRED_STYLE)
    handles = [Line2D([], [], color=TRUTH_COLOUR, linewidth=2, linestyle=TRUTH_STYLE, label="truth"),
               Line2D([], [], color=PRED_COLOUR, linewidth=2, linestyle=PRED_STYLE, label="prediction")]
    fig.legend(handles=handles, loc="outside upper right", ncol=2, fontsize=10, frameon=False)
    fig.suptitle(title or "Segmentation overlays", fontsize=12)
    return _save(fig, path)


def best_epoch(history: pd.DataFrame, score_key: str = "val_score", epoch_key: str = "epoch") -> int | None:
    """The epoch with the highest ``score_key`` (the first of ties, as the best-checkpoint saver keeps it); None
    without any score."""
    if score_key not in history or epoch_key not in history or history[score_key].notna().sum() == 0:
        return None
    return int(history.loc[history[score_key].idxmax(), epoch_key])


SEGMENTATION_CURVE_WORDS = ("dice", "jaccard", "iou")   # metric columns drawn on the segmentation panel


def plot_learning_curves(history: pd.DataFrame | Sequence[dict[str, Any]], path: str | PathLike,
                         loss_keys: Sequence[str] | None = None, metric_keys: Sequence[str] | None = None,
                         epoch_key: str = "epoch", lr_key: str = "lr", title: str | None = None,
                         score_key: str = "val_score") -> Path:
    """Learning curves in panels sharing the epoch axis: the losses (training and validation, with their seg and cls
    terms when recorded), the segmentation metrics (Dice, Jaccard), the classification metrics (AUC, accuracy, ...),
    and the learning rate when it is recorded. Epochs without validation are NaN and leave gaps. The epoch whose
    checkpoint is kept (best ``score_key``, ``best_epoch``) is marked by a vertical line on every panel.

    Args:
        history: one row per epoch (a DataFrame or a list of dicts).
        path: output PNG.
        loss_keys: columns drawn on the loss panel (default: every column whose name contains "loss").
        metric_keys: columns drawn on the metric panels (default: every other numeric column, except the epoch and
            the learning rate, whose values all lie in [0, 1] -- Dice, AUC, accuracy ...; distances like HD95 are
            left out unless named); those named like ``SEGMENTATION_CURVE_WORDS`` go to the segmentation panel.
        epoch_key: column of the epoch number.
        lr_key: column of the learning rate.
        title: figure title.
        score_key: the column that chose the kept checkpoint.
    """
    df = pd.DataFrame(list(history) if not isinstance(history, pd.DataFrame) else history)
    if df.empty:
        df = pd.DataFrame({epoch_key: []})
    x = df[epoch_key] if epoch_key in df else pd.Series(np.arange(1, len(df) + 1))
    skip = (epoch_key, lr_key, "epoch_seconds", "val_seconds")  # timing is not a curve to read against the metrics
    numeric = [c for c in df.columns if c not in skip and pd.api.types.is_numeric_dtype(df[c])]
    if loss_keys is None:
        loss_keys = [c for c in numeric if "loss" in c.lower()]
    if metric_keys is None:
        metric_keys = []
        for c in numeric:
            values = df[c].dropna()
            if c not in loss_keys and len(values) and values.between(0, 1).all():
                metric_keys.append(c)
    seg_keys = [c for c in metric_keys if any(w in c.lower() for w in SEGMENTATION_CURVE_WORDS)]
    cls_keys = [c for c in metric_keys if c not in seg_keys]
    panels: list[tuple[str, list[str]]] = [("Loss", list(loss_keys))]
    panels += [(name, keys) for name, keys in (("Segmentation", seg_keys), ("Classification", cls_keys)) if keys]
    has_lr = lr_key in df and df[lr_key].notna().any()
    heights = [3] * len(panels) + ([1.2] if has_lr else [])
    fig = Figure(figsize=(8, 1.2 + 2.1 * sum(heights) / 3))
    axes = list(np.atleast_1d(fig.subplots(len(heights), 1, sharex=True, gridspec_kw={"height_ratios": heights})))
    for ax, (name, keys) in zip(axes, panels):
        for i, c in enumerate(keys):
            validation = c.startswith("val_")
            ax.plot(x, df[c], marker="o" if validation else ".", markersize=4, linewidth=1.8,
                    linestyle="--" if validation and name == "Loss" else "-", color=f"C{i}", label=c)
        if name != "Loss":
            ax.set_ylim(0, 1.02)
        ax.set_ylabel(name if name == "Loss" else f"{name}\n(validation)")
        ax.grid(alpha=0.3)
        if keys:
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    if has_lr:
        ax_lr = axes[-1]
        ax_lr.plot(x, df[lr_key], color="black", linewidth=1.5)
        lr = df[lr_key].dropna()
        if len(lr) and (lr > 0).all() and lr.max() / lr.min() > 10:
            ax_lr.set_yscale("log")
        ax_lr.set_ylabel("Learning rate")
        ax_lr.grid(alpha=0.3)
    axes[-1].set_xlabel("Epoch")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title or "Learning curves", fontsize=12)
    best = best_epoch(df, score_key, epoch_key)
    if best is not None:
        for panel in axes:
            panel.axvline(best, color="grey", linestyle=":", linewidth=1.5)
        axes[0].annotate(f"kept: epoch {best}", xy=(best, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                         textcoords="offset points", fontsize=9, color="dimgrey")
    if len(x):
        axes[0].set_xlim(float(np.nanmin(x)) - 0.5, float(np.nanmax(x)) + 0.5)
    return _save(fig, path)


def plot_comparison(table: pd.DataFrame, metrics: Sequence[str], path: str | PathLike,
                    title: str | None = None) -> Path:
    """Networks by metrics: one panel per metric, a bar per network (row of ``table``) at its ``<metric>_mean``
    with a ``<metric>_std`` error bar (over cross-validation folds), the value written beside it.

    Args:
        table: one row per network, a ``network`` column and ``<metric>_mean`` / ``<metric>_std`` columns (``bmtl
            compare``'s table); metrics without a mean column are left out.
        metrics: the metrics to draw, in order.

    Raises:
        ValueError: ``table`` has none of ``metrics``.
    """
    drawn = [m for m in metrics if f"{m}_mean" in table]
    if not drawn:
        raise ValueError(f"table: none of the metrics {list(metrics)} has a <metric>_mean column")
    names = [str(n) for n in table["network"]]
    ncols = min(3, len(drawn))
    nrows = math.ceil(len(drawn) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 0.45 * len(names) * nrows + 1.4 * nrows + 0.6))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    y = np.arange(len(names))
    for ax, metric in zip(axes, drawn):
        means = table[f"{metric}_mean"].astype(float).to_numpy()
        stds = (table[f"{metric}_std"].astype(float).fillna(0.0).to_numpy() if f"{metric}_std" in table
                else np.zeros_like(means))
        ax.barh(y, means, xerr=stds, color="#0072B2", alpha=0.85, capsize=3)
        for k, (m, sd) in enumerate(zip(means, stds)):
            if np.isfinite(m):
                label = f"{m:.1f}" if metric == "hd95" else f"{m:.3f}"
                ax.annotate(label, (m + sd, k), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
        ax.set_yticks(y, names)
        ax.invert_yaxis()   # the first network on top, as in the table
        ax.set_title(metric + (" (px, lower is better)" if metric == "hd95" else ""))
        if metric != "hd95":
            ax.set_xlim(0, 1.1)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[len(drawn):]:
        ax.set_visible(False)
    fig.suptitle(title or "Networks compared (mean ± sd over folds)", fontsize=12)
    fig.tight_layout()
    return _save(fig, path)
