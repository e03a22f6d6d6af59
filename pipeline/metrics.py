"""Metrics of both heads, following the conventions in docs/ARCHITECTURE.md.

Segmentation (MONAI metrics, per image, lesion channel, prediction thresholded at 0.5): Dice and Jaccard with
``ignore_empty=False`` -- an image with an empty truth scores 1 when the prediction is empty too, else 0 (how
"normal" images count) -- and HD95 over images whose truth and prediction are both non-empty.
Classification (scikit-learn): AUC of the positive class (malignant) vs rest, macro one-vs-rest AUC for 3 classes,
accuracy, balanced accuracy, macro F1, sensitivity and specificity of the positive class, confusion matrix; the
expected calibration error of the positive-class probability (MONAI's ``CalibrationErrorMetric``).
The predicted class is the argmax of the probabilities or, with an operating threshold (chosen on the validation
fold by ``choose_operating_threshold``), the positive class wherever its probability reaches the threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.metrics import Metric
from monai.metrics import DiceMetric, HausdorffDistanceMetric, MeanIoU
from scipy.stats import rankdata
from sklearn import metrics as skm

__all__ = [
    "segmentation_scores",
    "classification_scores",
    "resampled_classification_scores",
    "ClassificationMetrics",
    "CLASSIFICATION_METRICS",
    "REPORTED_CLASSIFICATION_METRICS",
    "choose_operating_threshold",
    "gather_arrays",
    "gather_by_rank",
    "finite_or_none",
    "predicted_classes",
    "decision_margin",
    "positive_vs_rest",
    "positive_class_probability",
    "expected_calibration_error",
    "roc_confidence_band",
    "joint_score",
]

CLASSIFICATION_METRICS = (
    "auc", "auc_macro_ovr", "accuracy", "balanced_accuracy", "f1_macro", "sensitivity", "specificity",
)
#: what tables, reports and cross-validation summaries show: the malignant-vs-rest AUC only (the macro one-vs-rest
#: AUC stays in ``summary.json``, where it differs only with more than two classes)
REPORTED_CLASSIFICATION_METRICS = tuple(k for k in CLASSIFICATION_METRICS if k != "auc_macro_ovr")


def segmentation_scores(pred: torch.Tensor, truth: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-image Dice, Jaccard and HD95 (pixels) of binary ``(B, 1, H, W)`` prediction vs truth.

    HD95 is NaN where truth or prediction is empty.
    """
    pred, truth = torch.as_tensor(pred).float(), torch.as_tensor(truth).float()
    dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(pred, truth)
    iou = MeanIoU(include_background=True, reduction="none", ignore_empty=False)(pred, truth)
    both = (pred.flatten(1).sum(1) > 0) & (truth.flatten(1).sum(1) > 0)
    hd95 = torch.full((pred.shape[0],), float("nan"))
    if both.any():
        hd = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
        hd95[both] = hd(pred[both], truth[both]).view(-1).float()
    return {"dice": dice.view(-1).numpy(), "jaccard": iou.view(-1).numpy(), "hd95": hd95.numpy()}


def predicted_classes(probs: np.ndarray, threshold: float | None = None, positive: int = -1) -> np.ndarray:
    """The predicted class of each row of ``(N, K)`` probabilities.

    Args:
        probs: class probabilities.
        threshold: operating threshold on the positive class's probability: the positive class where it is reached,
            else the most probable other class. ``None``: the argmax.
        positive: index of the positive class (default: last).

    Raises:
        ValueError: ``threshold`` is outside (0, 1).
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 1:
        probs = probs[None]
    predicted = probs.argmax(1)
    if threshold is None:
        return predicted
    threshold = float(threshold)
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    positive = positive % probs.shape[1]
    others = probs.copy()
    others[:, positive] = -np.inf
    return np.where(probs[:, positive] >= threshold, positive, others.argmax(1))


def decision_margin(probs: np.ndarray, threshold: float | None = None, positive: int = -1) -> np.ndarray:
    """How far each row of ``(N, K)`` probabilities is from changing its ``predicted_classes`` decision, in
    probability: ``|p_positive - threshold|`` with an operating threshold, else half the gap between the two most
    probable classes (the same ``|p - 0.5|`` for two classes). 0 on the boundary; at most 0.5 without a threshold.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 1:
        probs = probs[None]
    if threshold is not None:
        return np.abs(probs[:, positive % probs.shape[1]] - float(threshold))
    top = np.sort(probs, axis=1)
    return (top[:, -1] - top[:, -2]) / 2.0 if probs.shape[1] > 1 else np.full(len(probs), 0.5)


def choose_operating_threshold(positive_probs: np.ndarray, is_positive: np.ndarray) -> float | None:
    """The positive-class probability threshold maximising Youden's J (sensitivity + specificity - 1).

    The threshold is placed halfway between the lowest positive-class probability it accepts and the next lower one,
    not on a probability itself, so that a model whose probabilities move slightly (another machine, another runtime)
    decides the validation images the same way. This is what scikit-learn's ``TunedThresholdClassifierCV`` does with
    ``scoring="balanced_accuracy"`` (J and balanced accuracy have the same optimum), for a model it did not train.

    Returns:
        the threshold in (0, 1), or ``None`` when one class is absent (no threshold can be chosen).
    """
    scores = np.asarray(positive_probs, dtype=np.float64).reshape(-1)
    truth = np.asarray(is_positive).astype(bool).reshape(-1)
    if truth.all() or not truth.any():
        return None
    fpr, tpr, thresholds = skm.roc_curve(truth, scores, drop_intermediate=False)
    best = int(np.argmax(tpr - fpr))
    chosen = float(min(thresholds[best], 1.0))
    lower = scores[scores < chosen]
    below = float(lower.max()) if lower.size else 0.0
    return float(np.clip(0.5 * (chosen + below), 1e-6, 1.0 - 1e-6))


def classification_scores(probs: np.ndarray, labels: np.ndarray, positive: int = -1,
                          threshold: float | None = None) -> dict[str, Any]:
    """Classification metrics from ``(N, K)`` probabilities and ``(N,)`` integer labels.

    Args:
        probs: class probabilities (softmax of the logits).
        labels: true class indices.
        positive: index of the positive class for AUC, sensitivity and specificity (default: the last class,
            "malignant" in both class lists of the datalist contract).
        threshold: operating threshold of the positive class for the decision metrics (``predicted_classes``);
            ``None``: argmax. AUC does not depend on it.

    Returns:
        the metrics in ``CLASSIFICATION_METRICS`` (NaN where undefined, e.g. AUC with one class present) plus
        ``confusion_matrix`` (K x K list, rows = truth).
    """
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels).astype(int).reshape(-1)
    n_classes = probs.shape[1]
    positive = positive % n_classes
    predicted = predicted_classes(probs, threshold, positive)
    is_pos, pred_pos = labels == positive, predicted == positive
    present = np.unique(labels)

    def auc_or_nan(fn: Callable[[], float]) -> float:
        try:
            return float(fn())
        except ValueError:  # one class only: AUC is undefined
            return float("nan")

    def ratio(num: int, den: int) -> float:
        return float(num / den) if den else float("nan")

    auc = auc_or_nan(lambda: skm.roc_auc_score(is_pos, probs[:, positive])) if present.size > 1 else float("nan")
    if n_classes > 2 and present.size == n_classes:
        macro = auc_or_nan(lambda: skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    else:
        macro = auc
    return {
        "auc": auc,
        "auc_macro_ovr": macro,
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(labels, predicted)) if present.size > 1 else float(
            "nan"),
        "f1_macro": float(skm.f1_score(labels, predicted, average="macro", labels=list(range(n_classes)),
                                       zero_division=0)),
        "sensitivity": ratio(int((is_pos & pred_pos).sum()), int(is_pos.sum())),
        "specificity": ratio(int((~is_pos & ~pred_pos).sum()), int((~is_pos).sum())),
        "confusion_matrix": skm.confusion_matrix(labels, predicted, labels=list(range(n_classes))).tolist(),
    }


def resampled_classification_scores(probs: np.ndarray, labels: np.ndarray, resamples: np.ndarray, positive: int = -1,
                                    threshold: float | None = None) -> dict[str, np.ndarray]:
    """``classification_scores`` of many resamples of the same images at once (the bootstrap's inner loop).

    The values are those of ``classification_scores`` on ``probs[r], labels[r]`` for each row ``r`` of
    ``resamples`` (tested equal), computed with NumPy from per-resample confusion counts and, for the AUCs, the
    Mann-Whitney rank statistic (ties count half, as in scikit-learn's ROC area). Why not scikit-learn in a loop: its
    input checks cost ~20 ms a call, 15-22 s for the 1,000 resamples of one evaluation's confidence intervals.

    Args:
        probs: ``(N, K)`` class probabilities.
        labels: ``(N,)`` true class indices.
        resamples: ``(B, M)`` indices into the N images, one resample per row.
        positive: index of the positive class (default: last).
        threshold: operating threshold of the positive class (``predicted_classes``); ``None``: argmax.

    Returns:
        each metric of ``CLASSIFICATION_METRICS`` as a ``(B,)`` array, NaN where ``classification_scores`` gives NaN.
    """
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels).astype(int).reshape(-1)
    resamples = np.asarray(resamples, dtype=np.int64)
    n_classes = probs.shape[1]
    positive = positive % n_classes
    n_resamples, n = resamples.shape
    truth, predicted = labels[resamples], predicted_classes(probs, threshold, positive)[resamples]
    cell = np.arange(n_resamples)[:, None] * n_classes**2 + truth * n_classes + predicted
    confusion = np.bincount(cell.ravel(), minlength=n_resamples * n_classes**2).reshape(
        n_resamples, n_classes, n_classes).astype(np.float64)          # rows: truth
    hits, true_count, predicted_count = (np.diagonal(confusion, axis1=1, axis2=2), confusion.sum(2),
                                         confusion.sum(1))
    present = true_count > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(present, hits / true_count, np.nan)
        balanced = np.where(present.sum(1) > 1, np.nanmean(recall, axis=1), np.nan)
        f1 = np.where(true_count + predicted_count > 0, 2 * hits / (true_count + predicted_count), 0.0)
        negatives = n - true_count[:, positive]
        specificity = (negatives - predicted_count[:, positive] + hits[:, positive]) / negatives

    def rank_auc(scores: np.ndarray, is_pos: np.ndarray) -> np.ndarray:
        ranks = rankdata(scores, axis=1)                                  # ties: the mean rank
        n_pos = is_pos.sum(1)
        n_neg = scores.shape[1] - n_pos
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = ((ranks * is_pos).sum(1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)

    auc = rank_auc(probs[resamples, positive], truth == positive)
    macro = auc
    if n_classes > 2:   # every class present: the mean one-vs-rest AUC, NaN where rows do not sum to 1 (as sklearn)
        per_class = np.stack([rank_auc(probs[resamples, k], truth == k) for k in range(n_classes)], axis=1).mean(1)
        sums_to_one = np.isclose(1.0, probs.sum(1))[resamples].all(1)
        macro = np.where(present.all(1), np.where(sums_to_one, per_class, np.nan), auc)
    return {
        "auc": auc,
        "auc_macro_ovr": macro,
        "accuracy": hits.sum(1) / n,
        "balanced_accuracy": balanced,
        "f1_macro": f1.mean(1),
        "sensitivity": recall[:, positive],
        "specificity": specificity,
    }


class ClassificationMetrics(Metric):
    """Ignite metric collecting class probabilities and labels over an epoch; ``compute`` returns every metric of
    ``classification_scores`` (except the confusion matrix) as a dict, which Ignite stores as separate entries of
    ``engine.state.metrics`` (named ``prefix + name``).

    Args:
        output_transform: engine output -> ``(probs, labels)``; each a batch tensor or a list of per-image tensors
            (probabilities ``(K,)``, labels scalar or one-element).
        positive: index of the positive class (default: last).
        prefix: prepended to each metric name, e.g. ``"val_"``.
        threshold: operating threshold of the positive class (``predicted_classes``); ``None``: argmax.
    """

    def __init__(
        self, output_transform: Callable = lambda x: x, positive: int = -1, prefix: str = "", device: str = "cpu",
        threshold: float | None = None,
    ) -> None:
        self.positive, self.prefix, self.threshold = positive, prefix, threshold
        self._probs: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._probs, self._labels = [], []

    def update(self, output: Sequence[Any]) -> None:
        probs, labels = output
        if isinstance(probs, (list, tuple)):
            probs = torch.stack([torch.as_tensor(p).reshape(-1) for p in probs])
        if isinstance(labels, (list, tuple)):
            labels = torch.stack([torch.as_tensor(y).reshape(-1)[0] for y in labels])
        self._probs.append(torch.as_tensor(probs).detach().float().cpu().numpy())
        self._labels.append(torch.as_tensor(labels).detach().cpu().numpy().reshape(-1))

    def compute(self) -> dict[str, float]:
        if not self._probs:
            raise RuntimeError("ClassificationMetrics: no output was collected before compute()")
        # Under DDP each rank holds its own shard: gather so every rank scores the whole set.
        probs = np.concatenate(gather_arrays(self._probs))
        labels = np.concatenate(gather_arrays(self._labels))
        scores = classification_scores(probs, labels, positive=self.positive, threshold=self.threshold)
        return {f"{self.prefix}{k}": scores[k] for k in CLASSIFICATION_METRICS}


def gather_by_rank(obj: Any) -> list[Any]:
    """``obj`` (a container: list, tuple or dict) of every rank, in rank order, on every rank; ``[obj]`` outside
    ``torch.distributed``. Ignite's ``all_gather`` pickles a container (``all_gather_object``), so the parts may
    differ in length across ranks."""
    if not isinstance(obj, (list, tuple, dict)):
        raise TypeError(f"gather_by_rank gathers a list, tuple or dict, got {type(obj).__name__}")
    if idist.get_world_size() == 1:
        return [obj]
    return list(idist.all_gather(obj))


def gather_arrays(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Every rank's arrays, in rank order, on every rank (of any length); ``parts`` itself outside
    ``torch.distributed``."""
    return [p for rank_parts in gather_by_rank(parts) for p in rank_parts]


def finite_or_none(value: Any) -> float | None:
    """``value`` (or a summary entry's ``"mean"``) as a finite float, else ``None``: strict JSON has no NaN, and a
    metric that could not be computed (no CI, no HD95, one class only) is reported as missing, never as a number."""
    if isinstance(value, Mapping):
        value = value.get("mean")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def positive_vs_rest(output: Sequence[Mapping[str, Any]], positive: int = -1) -> tuple[list, list]:
    """Engine output transform for MONAI's ``ROCAUC``: (positive-class probabilities, 0/1 labels) per image."""
    probs, labels = [], []
    for item in output:
        p = torch.as_tensor(item["pred_cls"]).reshape(-1)
        idx = positive % p.numel()
        probs.append(p[idx : idx + 1].float())
        labels.append((torch.as_tensor(item["label_cls"]).reshape(-1)[:1] == idx).float())
    return probs, labels


def joint_score(dice: Any, auc: Any) -> float:
    """Model-selection score: the mean of mean Dice and positive-class AUC (Dice alone when AUC is undefined)."""
    dice, auc = float(dice), float(auc)
    return dice if np.isnan(auc) else 0.5 * (dice + auc)


def positive_class_probability(probs: Any, labels: Any, positive: int) -> tuple[np.ndarray, np.ndarray]:
    """``(N,)`` probability of the positive class and ``(N,)`` 0/1 truth, from either ``(N, K)`` probabilities and
    class indices, or already ``(N,)`` positive-class probabilities and 0/1 labels."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels).reshape(-1).astype(int)
    if probs.ndim == 2:
        pos = positive % probs.shape[1]
        return probs[:, pos], (labels == pos).astype(int)
    return probs.reshape(-1), (labels > 0).astype(int)


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 10, positive: int = -1) -> float:
    """Expected calibration error of the positive-class probability (10 equal-width bins by default).

    ECE = sum over bins of (bin count / N) * |mean predicted probability - fraction of positives| (Guo et al. 2017),
    computed with MONAI's ``CalibrationErrorMetric``.

    Args:
        probs: ``(N, K)`` class probabilities, or ``(N,)`` probabilities of the positive class.
        labels: ``(N,)`` class indices (with 2-D ``probs``) or 0/1 positive-class truth (with 1-D ``probs``).
        n_bins: number of equal-width bins on [0, 1].
        positive: index of the positive class when ``probs`` is 2-D (default: the last class).

    Returns:
        the ECE in [0, 1]; NaN when there are no images.
    """
    p, y = positive_class_probability(probs, labels, positive)
    if p.size == 0:
        return float("nan")
    from monai.metrics import CalibrationErrorMetric

    metric = CalibrationErrorMetric(num_bins=n_bins, calibration_reduction="expected", metric_reduction="mean")
    value = metric(y_pred=torch.tensor(p).view(1, 1, -1), y=torch.tensor(y).view(1, 1, -1))
    return float(value.mean())


def roc_confidence_band(scores: Any, positives: Any, n_bootstrap: int = 200, seed: int = 0,
                        level: float = 0.95, grid: int = 101) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise percentile-bootstrap band of a ROC curve: images resampled with replacement, each resample's ROC
    (scikit-learn's ``roc_curve``) read at fixed false positive rates, the ``level`` interval of the sensitivities.

    Args:
        scores: ``(N,)`` positive-class probabilities.
        positives: ``(N,)`` 0/1 truth.
        n_bootstrap: resamples (those with one class only are skipped).
        seed: the resampling's seed (the same band every time).
        level: the band's coverage.
        grid: number of false positive rates on [0, 1].

    Returns:
        ``(fpr, low, high)``, each ``(grid,)``; ``low``/``high`` are NaN when no resample had both classes.
    """
    from sklearn.metrics import roc_curve

    scores, positives = np.asarray(scores, dtype=np.float64).reshape(-1), np.asarray(positives).reshape(-1) > 0
    fpr_grid = np.linspace(0.0, 1.0, grid)
    rng = np.random.default_rng(seed)
    curves = []
    for _ in range(int(n_bootstrap)):
        idx = rng.integers(0, scores.size, scores.size)
        if scores.size == 0 or positives[idx].all() or not positives[idx].any():
            continue
        fpr, tpr, _ = roc_curve(positives[idx], scores[idx])
        curves.append(np.interp(fpr_grid, fpr, tpr))
    if not curves:
        return fpr_grid, np.full(grid, np.nan), np.full(grid, np.nan)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(np.stack(curves), [tail, 100.0 - tail], axis=0)
    return fpr_grid, low, high
