"""The summary of an evaluation (``summary.json``): segmentation and classification metrics of the per-image records
with percentile-bootstrap 95 % confidence intervals, and the same as flat metrics for the engine and MLflow."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pipeline.metrics import (
    CLASSIFICATION_METRICS,
    REPORTED_CLASSIFICATION_METRICS,
    classification_scores,
    expected_calibration_error,
    resampled_classification_scores,
)

__all__ = ["CONVENTIONS", "CI_CLASSIFICATION", "CI_SEGMENTATION", "summarise", "bootstrap_intervals", "flat_metrics",
           "format_metrics"]

CONVENTIONS = (
    "Segmentation: Dice and Jaccard per image on the lesion channel, prediction thresholded at 0.5; an image with an "
    "empty truth mask scores 1 when the prediction is empty too, else 0 (this is how normal images count); reported "
    "as mean +/- sample std over all images and per true class. HD95 (95th percentile Hausdorff distance) in pixels "
    "(and in mm where the pixel spacing is known), over the images whose truth and prediction are both non-empty "
    "(their number is given). Classification: predicted class = argmax of the softmax probabilities or, with an "
    "operating threshold (chosen on the validation fold, given in the summary), the positive class wherever its "
    "probability reaches the threshold; AUC = ROC AUC "
    "of the positive class vs rest (macro one-vs-rest AUC too with 3 classes); accuracy, balanced accuracy, macro F1; "
    "sensitivity and specificity of the positive class; confusion matrix with rows = true class. ECE = expected "
    "calibration error of the positive-class probability over 10 equal-width bins. 95% CI: percentile bootstrap "
    "over images (resampled with replacement, seeded), resamples where a metric is undefined are left out."
)

#: summary entries that get a bootstrap confidence interval
CI_CLASSIFICATION = CLASSIFICATION_METRICS
CI_SEGMENTATION = ("dice", "jaccard")


def _stats(values: np.ndarray) -> dict[str, Any]:
    s = pd.Series(np.asarray(values, dtype=np.float64)).dropna()
    return {"mean": s.mean() if len(s) else float("nan"), "std": s.std() if len(s) > 1 else float("nan"),
            "median": s.median() if len(s) else float("nan"), "n": int(len(s))}


def summarise(records: Sequence[Mapping[str, Any]], classes: Sequence[str], positive: int = -1,
              threshold: float | None = None, n_bins: int = 10, n_bootstrap: int = 1000, seed: int = 0,
              left_out: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The summary of an evaluation (``summary.json``) from its per-image records.

    Args:
        records: one per image: ``dice``, ``jaccard``, ``hd95`` (``hd95_mm`` where the spacing is known),
            ``prob_<class>`` for each class and ``_label`` (the true class index).
        classes: the model's classes, in output order.
        positive: index of the positive class (default the last: malignant).
        threshold: the operating threshold of the positive class (None: argmax).
        n_bins: bins of the expected calibration error.
        n_bootstrap: percentile-bootstrap resamples for the 95 % CIs (0: none).
        seed: seed of the resampling.
        left_out: images per class the model does not have (reported, not scored).
    """
    df = pd.DataFrame(records)
    probs = df[[f"prob_{c}" for c in classes]].to_numpy(np.float64)
    labels = df["_label"].to_numpy(int)
    dice, jaccard = df["dice"].to_numpy(np.float64), df["jaccard"].to_numpy(np.float64)
    pos_name = classes[positive]

    seg: dict[str, Any] = {"dice": _stats(dice), "jaccard": _stats(jaccard)}
    hd = _stats(df["hd95"].to_numpy(np.float64))
    hd.update(unit="pixels", n_excluded=len(df) - hd["n"],
              note="images whose truth and prediction are both non-empty")
    seg["hd95"] = hd
    if "hd95_mm" in df:
        hd_mm = _stats(df["hd95_mm"].to_numpy(np.float64))
        hd_mm.update(unit="mm", note="images with a known spacing and non-empty truth and prediction")
        seg["hd95_mm"] = hd_mm
    seg["per_class"] = {}
    for k, c in enumerate(classes):
        sel = labels == k
        if sel.any():
            seg["per_class"][c] = {"n": int(sel.sum()), "dice": float(dice[sel].mean()),
                                   "dice_std": _stats(dice[sel])["std"], "jaccard": float(jaccard[sel].mean()),
                                   "jaccard_std": _stats(jaccard[sel])["std"]}

    scores = classification_scores(probs, labels, positive=positive, threshold=threshold)
    cls: dict[str, Any] = {k: scores[k] for k in CLASSIFICATION_METRICS}
    cls["positive_class"] = pos_name
    cls["operating_threshold"] = threshold  # None: argmax
    cls["confusion_matrix"] = {"classes": list(classes), "rows": "true class", "columns": "predicted class",
                               "matrix": scores["confusion_matrix"]}
    cls["ece"] = expected_calibration_error(probs, labels, n_bins=n_bins, positive=positive)
    cls["ece_bins"] = n_bins
    cls["n_per_class"] = {c: int((labels == k).sum()) for k, c in enumerate(classes)}

    summary: dict[str, Any] = {"n_images": len(df), "classes": list(classes), "positive_class": pos_name,
                               "segmentation": seg, "classification": cls}
    if left_out:
        summary["left_out"] = {"per_class": left_out,
                               "reason": "classes the model does not have (matched by name), not scored"}
    if n_bootstrap > 0:
        ci = bootstrap_intervals(probs, labels, dice, jaccard, len(classes), positive, threshold, n_bootstrap, seed)
        for name in CI_SEGMENTATION:
            seg[name]["ci95"] = ci[name]
        cls["ci95"] = {k: ci[k] for k in CI_CLASSIFICATION if k in ci}
        summary["bootstrap"] = {"n_resamples": n_bootstrap, "seed": seed, "level": 0.95,
                                "method": "percentile bootstrap over images, resampled with replacement"}
    summary["conventions"] = CONVENTIONS
    return summary


def bootstrap_intervals(probs: np.ndarray, labels: np.ndarray, dice: np.ndarray, jaccard: np.ndarray,
                        n_classes: int, positive: int, threshold: float | None, n_bootstrap: int,
                        seed: int) -> dict[str, list[float]]:
    """Percentile bootstrap 95% CIs: the same images resampled for every metric, so the CIs are consistent."""
    n = len(labels)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_bootstrap, n))
    names = [k for k in CI_CLASSIFICATION if k != "auc_macro_ovr" or n_classes > 2]
    chunk = max(1, 2_000_000 // max(n, 1))   # resamples scored at once: a few (chunk, n) arrays, whatever n is
    parts = [resampled_classification_scores(probs, labels, idx[i:i + chunk], positive=positive, threshold=threshold)
             for i in range(0, n_bootstrap, chunk)]
    values = {k: np.concatenate([part[k] for part in parts]) for k in names}
    values["dice"], values["jaccard"] = dice[idx].mean(1), jaccard[idx].mean(1)
    ci = {}
    for k, v in values.items():
        v = v[np.isfinite(v)]
        ci[k] = [float(x) for x in np.percentile(v, [2.5, 97.5])] if v.size else [float("nan")] * 2
    return ci


def flat_metrics(summary: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The scalar results of ``summary`` as flat metrics (``engine.state.metrics``, MLflow): ``<prefix>dice``,
    ``<prefix>auc``, ``<prefix>auc_ci_low`` ...; empty for an empty summary."""
    s, p = summary, prefix
    if not s:
        return {}
    seg, cls = s["segmentation"], s["classification"]
    out: dict[str, float] = {}
    for name in ("dice", "jaccard"):
        out[p + name] = seg[name]["mean"]
        out[p + name + "_std"] = seg[name]["std"]
    out[p + "hd95"] = seg["hd95"]["mean"]
    if "hd95_mm" in seg:
        out[p + "hd95_mm"] = seg["hd95_mm"]["mean"]
    for c, v in seg["per_class"].items():
        out[f"{p}dice_{c}"] = v["dice"]
        out[f"{p}jaccard_{c}"] = v["jaccard"]
    for name in CLASSIFICATION_METRICS:
        out[p + name] = cls[name]
    out[p + "ece"] = cls["ece"]
    intervals = {name: seg[name]["ci95"] for name in CI_SEGMENTATION if "ci95" in seg[name]}
    intervals.update(cls.get("ci95", {}))
    for name, (lo, hi) in intervals.items():
        out[f"{p}{name}_ci_low"], out[f"{p}{name}_ci_high"] = lo, hi
    return {k: float(v) if v is not None else float("nan") for k, v in out.items()}


def format_metrics(summary: Mapping[str, Any], split: str = "validation") -> str:
    """The metric table of an evaluation ``summary.json`` (value and bootstrap 95% CI)."""
    rows = [("metric", "value", "95% CI")]
    seg, cls = summary["segmentation"], summary["classification"]
    for key in ("dice", "jaccard"):
        ci = seg[key].get("ci95") or [float("nan")] * 2
        rows.append((key, f"{seg[key]['mean']:.3f}", f"{ci[0]:.3f}-{ci[1]:.3f}"))
    if seg["hd95"].get("mean") is not None:
        rows.append(("hd95 (px)", f"{seg['hd95']['mean']:.1f}", ""))
    for key in REPORTED_CLASSIFICATION_METRICS:
        value = cls.get(key)
        ci = (cls.get("ci95") or {}).get(key)
        rows.append((key, "n/a" if value is None else f"{value:.3f}",
                     f"{ci[0]:.3f}-{ci[1]:.3f}" if ci and None not in ci else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return f"{summary['n_images']} {split} images\n" + "\n".join(lines)
