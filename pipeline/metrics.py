"""Metrics of both heads, following the conventions in docs/ARCHITECTURE.md.

Segmentation (MONAI metrics, per image, lesion channel, prediction thresholded at 0.5): Dice and Jaccard with
``ignore_empty=False`` -- an image with an empty truth scores 1 when the prediction is empty too, else 0 (how
"normal" images count) -- and HD95 over images whose truth and prediction are both non-empty.
Classification (scikit-learn): AUC of the positive class (malignant) vs rest, macro one-vs-rest AUC for 3 classes,
accuracy, balanced accuracy, macro F1, sensitivity and specificity of the positive class, confusion matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ignite.metrics import Metric
from monai.metrics import DiceMetric, HausdorffDistanceMetric, MeanIoU
from sklearn import metrics as skm

__all__ = [
    "segmentation_scores",
    "classification_scores",
    "ClassificationMetrics",
    "CLASSIFICATION_METRICS",
    "positive_vs_rest",
    "joint_score",
]

CLASSIFICATION_METRICS = (
    "auc", "auc_macro_ovr", "accuracy", "balanced_accuracy", "f1_macro", "sensitivity", "specificity",
)


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


def classification_scores(probs: np.ndarray, labels: np.ndarray, positive: int = -1) -> dict[str, Any]:
    """Classification metrics from ``(N, K)`` probabilities and ``(N,)`` integer labels.

    Args:
        probs: class probabilities (softmax of the logits).
        labels: true class indices.
        positive: index of the positive class for AUC, sensitivity and specificity (default: the last class,
            "malignant" in both class lists of the datalist contract).

    Returns:
        the metrics in ``CLASSIFICATION_METRICS`` (NaN where undefined, e.g. AUC with one class present) plus
        ``confusion_matrix`` (K x K list, rows = truth).
    """
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels).astype(int).reshape(-1)
    n_classes = probs.shape[1]
    positive = positive % n_classes
    predicted = probs.argmax(1)
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


class ClassificationMetrics(Metric):
    """Ignite metric collecting class probabilities and labels over an epoch; ``compute`` returns every metric of
    ``classification_scores`` (except the confusion matrix) as a dict, which Ignite stores as separate entries of
    ``engine.state.metrics`` (named ``prefix + name``).

    Args:
        output_transform: engine output -> ``(probs, labels)``; each a batch tensor or a list of per-image tensors
            (probabilities ``(K,)``, labels scalar or one-element).
        positive: index of the positive class (default: last).
        prefix: prepended to each metric name, e.g. ``"val_"``.
    """

    def __init__(
        self, output_transform: Callable = lambda x: x, positive: int = -1, prefix: str = "", device: str = "cpu"
    ) -> None:
        self.positive, self.prefix = positive, prefix
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
        probs = np.concatenate(self._gather(self._probs))
        labels = np.concatenate(self._gather(self._labels))
        scores = classification_scores(probs, labels, positive=self.positive)
        return {f"{self.prefix}{k}": scores[k] for k in CLASSIFICATION_METRICS}

    @staticmethod
    def _gather(parts: list[np.ndarray]) -> list[np.ndarray]:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return parts
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, parts)
        return [p for rank_parts in gathered for p in rank_parts]


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
