"""``EvaluationReport``: per-image table, summary with bootstrap confidence intervals (``pipeline.handlers.summary``)
and figures of an evaluation."""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import ignite.distributed as idist
from ignite.engine import Engine, Events
from monai.data import MetaTensor, decollate_batch
from monai.metrics import compute_hausdorff_distance
from skimage.transform import resize

from pipeline import plots
from pipeline.atomic import write_csv_atomic, write_json_atomic
from pipeline.html_report import write_html_report
from pipeline.handlers.summary import flat_metrics, summarise
from pipeline.metrics import finite_or_none, gather_by_rank, predicted_classes, segmentation_scores

__all__ = ["EvaluationReport"]

logger = logging.getLogger(__name__)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return finite_or_none(obj)
    return obj


def _mask2d(x: Any) -> np.ndarray:
    """A ``(1, H, W)`` / ``(S, H, W)`` / ``(H, W)`` mask as a 2-D boolean array (lesion = last channel)."""
    a = torch.as_tensor(x).detach().cpu()
    if a.ndim == 3:
        a = a[-1]
    return (a > 0.5).numpy()


def _first_channel(x: Any) -> np.ndarray:
    a = torch.as_tensor(x).detach().cpu().float()
    while a.ndim > 2:
        a = a[0]
    return a.numpy()


class EvaluationReport:
    """Collects per-image results of an evaluator and writes a report into ``output_dir`` when the epoch completes:

    - ``per_image.csv``: id, file, (group, source when the batch has them), true_class, pred_class, ``prob_<class>``
      per class, dice, jaccard, hd95 (pixels; ``hd95_mm`` with a spacing), lesion_area_true_px, lesion_area_pred_px,
      correct;
    - ``summary.json``: segmentation and classification metrics (``pipeline.metrics`` conventions, stated in its
      ``conventions`` entry), bootstrap 95% CIs, confusion matrix with class names, ECE;
    - ``roc.png``, ``confusion_matrix.png``, ``calibration.png``, ``overlays.png``.

    The scalar results also go into ``engine.state.metrics`` as ``<prefix><name>`` (``test_dice``, ``test_auc``,
    ``test_auc_ci_low`` ...), so a ``MLFlowHandler`` attached after this handler logs them. The report is written on
    ``EPOCH_COMPLETED`` (as MONAI's ``MetricsSaver`` does; an evaluator runs one epoch), and collection restarts on
    each ``EPOCH_STARTED``, so a validator run every epoch reports its latest run.

    Expects the evaluator output of ``SupervisedEvaluator(decollate=True)`` after the pipeline's post-processing: a
    list of per-image dicts with ``image`` ((C, H, W); channel 0 is shown), ``pred_seg`` (binary (1, H, W)),
    ``pred_cls`` ((K,) probabilities), ``label_seg`` ((1, H, W)), ``label_cls`` (class index); ``engine.state.batch``
    (the decollated inputs) may hold ``id``, ``group``, ``source``. Without an id, the image's file name is used.

    Memory: per image only scalars and the K probabilities are kept; overlay candidates are downsampled to at most
    ``overlay_size`` pixels on the fly and bounded: the ``n_overlays`` worst Dice so far plus a reservoir sample of
    ``n_overlays`` images.

    Args:
        output_dir: folder of the report (created).
        classes: class names, in class-index order.
        positive: index of the positive class (default: last, "malignant").
        n_overlays: images in ``overlays.png``: half the worst Dice, the rest a seeded random sample.
        n_bootstrap: bootstrap resamples for the 95% CIs (0 disables them).
        seed: seed of the bootstrap and of the random overlay sample.
        spacing_key: where the pixel spacing (mm, row then column) is found: a key of the batch item or of the image's
            meta dict; ``"pixdim"`` reads the MetaTensor's spacing from its affine. Adds HD95 and areas in mm.
        prefix: prefix of the entries in ``engine.state.metrics``.
        n_bins: bins of the ECE and of the reliability diagram.
        overlay_size: longest side of the stored overlay thumbnails.
        extra_keys: batch keys copied into the CSV when present.
        threshold: operating threshold of the positive class for the predicted class (``None``: argmax);
            ``pipeline.handlers.read_operating_threshold`` reads the one training chose on the validation fold.
        left_out: images of the datalist not scored because the model has no such class, ``{class: count}``
            (``pipeline.data.datalist.match_classes``); recorded in the summary.
    """

    def __init__(
        self,
        output_dir: str | PathLike,
        classes: Sequence[str],
        positive: int = -1,
        n_overlays: int = 16,
        n_bootstrap: int = 1000,
        seed: int = 0,
        spacing_key: str | None = None,
        prefix: str = "test_",
        n_bins: int = 10,
        overlay_size: int = 128,
        extra_keys: Sequence[str] = ("group", "source"),
        image_key: str = "image",
        pred_seg_key: str = "pred_seg",
        pred_cls_key: str = "pred_cls",
        label_seg_key: str = "label_seg",
        label_cls_key: str = "label_cls",
        id_key: str = "id",
        threshold: float | None = None,
        left_out: dict[str, int] | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.left_out = {str(k): int(v) for k, v in (left_out or {}).items()}
        self.classes = [str(c) for c in classes]
        if len(self.classes) < 2:
            raise ValueError(f"EvaluationReport needs at least 2 classes, got {self.classes}")
        self.positive = positive % len(self.classes)
        self.threshold = None if threshold is None else float(threshold)
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        self.n_overlays, self.n_bootstrap, self.seed = int(n_overlays), int(n_bootstrap), int(seed)
        self.spacing_key, self.prefix, self.n_bins = spacing_key, prefix, int(n_bins)
        self.overlay_size, self.extra_keys = int(overlay_size), tuple(extra_keys)
        self.image_key, self.pred_seg_key, self.pred_cls_key = image_key, pred_seg_key, pred_cls_key
        self.label_seg_key, self.label_cls_key, self.id_key = label_seg_key, label_cls_key, id_key
        self._summary: dict[str, Any] = {}
        self.reset()

    # ------------------------------------------------------------------ engine wiring
    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def reset(self) -> None:
        self._records: list[dict[str, Any]] = []
        self._worst: list[tuple[float, int, dict[str, Any]]] = []  # heap of (-dice, -index, candidate)
        self._reservoir: list[dict[str, Any]] = []
        self._rng = np.random.default_rng(self.seed)

    def _started(self, engine: Engine) -> None:
        self.reset()

    def _iteration_completed(self, engine: Engine) -> None:
        outputs, batch = engine.state.output, engine.state.batch
        if isinstance(outputs, dict):  # an engine without decollation: batch dicts
            outputs = decollate_batch(outputs)
            batch = decollate_batch(batch) if isinstance(batch, dict) else batch
        items = batch if isinstance(batch, (list, tuple)) and len(batch) == len(outputs) else [{}] * len(outputs)
        for out, item in zip(outputs, items):
            self.add(out, item if isinstance(item, dict) else {})

    def __call__(self, engine: Engine | None = None) -> dict[str, Any]:
        """Compute the summary, write the report (rank 0) and fill ``engine.state.metrics``."""
        records, worst, reservoir = self._gathered()
        if not records:
            logger.warning("EvaluationReport: no image was collected, nothing to report")
            self._summary = {}
            return {}
        self._summary = self._compute(records)
        if engine is not None:
            engine.state.metrics.update(self.flat_metrics())
        if idist.get_rank() == 0:
            self._write(records, worst, reservoir)
        return self._summary

    # ------------------------------------------------------------------ collection
    def add(self, out: dict[str, Any], item: dict[str, Any] | None = None) -> None:
        """Record one image: ``out`` holds the post-processed prediction and labels, ``item`` its batch entry."""
        item = item or {}
        index = len(self._records)
        image = out.get(self.image_key, item.get(self.image_key))
        file = self._file(image, item)
        ident = item.get(self.id_key, out.get(self.id_key))
        if ident is None or (isinstance(ident, str) and not ident):
            ident = Path(file).name if file else f"image_{index:05d}"
        pred = _mask2d(out[self.pred_seg_key])
        truth = _mask2d(out[self.label_seg_key] if self.label_seg_key in out else item[self.label_seg_key])
        probs = torch.as_tensor(out[self.pred_cls_key]).detach().cpu().double().reshape(-1).numpy()
        if probs.size != len(self.classes):
            raise ValueError(f"pred_cls has {probs.size} probabilities, the report has classes {self.classes}")
        label_src = out.get(self.label_cls_key, item.get(self.label_cls_key))
        label = int(torch.as_tensor(label_src).reshape(-1)[0])
        predicted = int(predicted_classes(probs, self.threshold, self.positive)[0])

        seg = segmentation_scores(torch.from_numpy(pred)[None, None], torch.from_numpy(truth)[None, None])
        rec: dict[str, Any] = {"id": str(_scalar(ident)), "file": file}
        for k in self.extra_keys:
            if k in item and k != self.id_key:
                rec[k] = _scalar(item[k])
        rec.update({"true_class": self.classes[label], "pred_class": self.classes[predicted]})
        rec.update({f"prob_{c}": float(p) for c, p in zip(self.classes, probs)})
        rec.update({"dice": float(seg["dice"][0]), "jaccard": float(seg["jaccard"][0]), "hd95": float(seg["hd95"][0])})
        spacing = self._spacing(image, item) if self.spacing_key else None
        if self.spacing_key:
            rec["hd95_mm"] = float("nan")
            if spacing is not None and pred.any() and truth.any():
                rec["hd95_mm"] = float(compute_hausdorff_distance(
                    torch.from_numpy(pred)[None, None], torch.from_numpy(truth)[None, None], include_background=True,
                    percentile=95, spacing=list(spacing)).reshape(-1)[0])
        rec["lesion_area_true_px"] = int(truth.sum())
        rec["lesion_area_pred_px"] = int(pred.sum())
        if self.spacing_key:
            px = float(np.prod(spacing)) if spacing is not None else float("nan")
            rec["lesion_area_true_mm2"] = rec["lesion_area_true_px"] * px
            rec["lesion_area_pred_mm2"] = rec["lesion_area_pred_px"] * px
        rec["correct"] = bool(label == predicted)
        rec["_label"], rec["_pred"] = label, predicted  # indices, dropped from the CSV
        self._records.append(rec)
        if self.n_overlays > 0 and image is not None:
            self._offer(index, rec, _first_channel(image), truth, pred, float(probs[predicted]))

    def _offer(self, index: int, rec: dict[str, Any], image: np.ndarray, truth: np.ndarray, pred: np.ndarray,
               prob: float) -> None:
        """Keep the image as an overlay candidate if it is among the worst Dice so far or drawn by the reservoir."""
        dice = rec["dice"] if math.isfinite(rec["dice"]) else 0.0
        entry = (-dice, -index)
        keep_worst = len(self._worst) < self.n_overlays or entry > (self._worst[0][0], self._worst[0][1])
        slot = None
        if len(self._reservoir) < self.n_overlays:
            slot = len(self._reservoir)
        else:
            j = int(self._rng.integers(0, index + 1))  # reservoir sampling (algorithm R), seeded
            slot = j if j < self.n_overlays else None
        if not keep_worst and slot is None:
            return
        cand = self._thumbnail(index, rec, image, truth, pred, prob)
        if keep_worst:
            if len(self._worst) < self.n_overlays:
                heapq.heappush(self._worst, (-dice, -index, cand))
            else:
                heapq.heapreplace(self._worst, (-dice, -index, cand))
        if slot is not None:
            if slot == len(self._reservoir):
                self._reservoir.append(cand)
            else:
                self._reservoir[slot] = cand

    def _thumbnail(self, index: int, rec: dict[str, Any], image: np.ndarray, truth: np.ndarray, pred: np.ndarray,
                   prob: float) -> dict[str, Any]:
        h, w = truth.shape
        scale = min(1.0, self.overlay_size / max(h, w))
        shape = (max(1, round(h * scale)), max(1, round(w * scale)))
        if image.shape != truth.shape:
            image = resize(image, truth.shape, preserve_range=True, anti_aliasing=True)
        if scale < 1:
            image = resize(image, shape, preserve_range=True, anti_aliasing=True)
            truth_s = resize(truth.astype(np.float32), shape, order=1, anti_aliasing=False)
            pred_s = resize(pred.astype(np.float32), shape, order=1, anti_aliasing=False)
        else:
            truth_s, pred_s = truth.astype(np.float32), pred.astype(np.float32)
        lo, hi = np.percentile(image, [0.5, 99.5]) if image.size else (0.0, 1.0)
        grey = np.clip((image - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
        return {"index": index, "id": rec["id"], "true": rec["true_class"], "pred": rec["pred_class"], "prob": prob,
                "dice": rec["dice"], "correct": rec["correct"], "image": (grey * 255).astype(np.uint8),
                "truth": truth_s.astype(np.float16), "pred_mask": pred_s.astype(np.float16)}

    @staticmethod
    def _file(image: Any, item: dict[str, Any]) -> str:
        meta = getattr(image, "meta", None) or item.get("image_meta_dict") or {}
        name = meta.get("filename_or_obj") if isinstance(meta, dict) else None
        if name is None and isinstance(image, (str, PathLike)):
            name = image
        return str(_scalar(name)) if name is not None else ""

    def _spacing(self, image: Any, item: dict[str, Any]) -> tuple[float, float] | None:
        key = self.spacing_key
        value = None
        if key == "pixdim" and isinstance(image, MetaTensor):
            value = image.pixdim
        elif key in item:
            value = item[key]
        elif isinstance(getattr(image, "meta", None), dict):
            value = image.meta.get(key)
        if value is None:
            return None
        arr = np.asarray(torch.as_tensor(value).detach().cpu(), dtype=np.float64).reshape(-1)
        if key == "pixdim" and arr.size == 8:  # a NIfTI header pixdim: qfac first
            arr = arr[1:]
        if arr.size < 2 or not np.all(np.isfinite(arr[:2])) or np.any(arr[:2] <= 0):
            return None
        return float(arr[0]), float(arr[1])

    # ------------------------------------------------------------------ results
    def per_image(self) -> pd.DataFrame:
        """The per-image table (as written to ``per_image.csv``)."""
        return self._table(self._records)

    def _table(self, records: list[dict[str, Any]]) -> pd.DataFrame:
        df = pd.DataFrame(records)
        return df.drop(columns=[c for c in df.columns if c.startswith("_")])

    def summary(self) -> dict[str, Any]:
        """The summary of the last completed evaluation (as written to ``summary.json``, NaN as None)."""
        return _jsonable(self._summary)

    def flat_metrics(self) -> dict[str, float]:
        """Scalar results as ``engine.state.metrics`` entries: ``<prefix>dice``, ``<prefix>auc``, ``..._ci_low``."""
        return flat_metrics(self._summary, self.prefix)

    def _compute(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return summarise(records, self.classes, positive=self.positive, threshold=self.threshold, n_bins=self.n_bins,
                         n_bootstrap=self.n_bootstrap, seed=self.seed, left_out=self.left_out)

    # ------------------------------------------------------------------ output
    def _write(self, records: list[dict[str, Any]], worst: list[dict[str, Any]],
               reservoir: list[dict[str, Any]]) -> None:
        out = self.output_dir
        out.mkdir(parents=True, exist_ok=True)
        # each file is the previous evaluation's or this one's, never a partial one
        write_csv_atomic(out / "per_image.csv", self._table(records))
        write_json_atomic(out / "summary.json", self.summary(), allow_nan=False, default=None)
        df = pd.DataFrame(records)
        probs = df[[f"prob_{c}" for c in self.classes]].to_numpy(np.float64)
        labels, predicted = df["_label"].to_numpy(int), df["_pred"].to_numpy(int)
        cls = self._summary["classification"]
        sensitivity, specificity = finite_or_none(cls.get("sensitivity")), finite_or_none(cls.get("specificity"))
        decision = f"threshold {self.threshold:.2f}" if self.threshold is not None else "argmax"
        point = None if sensitivity is None or specificity is None else (
            sensitivity, specificity, f"operating point ({decision})")
        plots.plot_roc(probs, labels, self.classes, out / "roc.png", positive=self.positive, operating_point=point)
        plots.plot_confusion(labels, predicted, self.classes, out / "confusion_matrix.png")
        plots.plot_calibration(probs, labels, out / "calibration.png", positive=self.positive, n_bins=self.n_bins,
                               class_name=self.classes[self.positive])
        chosen, n_worst = self._select(worst, reservoir)
        titles = [f"{_short(c['id'])}\ntrue: {c['true']} | pred: {c['pred']} ({c['prob']:.2f})\nDice {c['dice']:.2f}"
                  for c in chosen]
        plots.plot_overlays([c["image"] for c in chosen], [c["truth"].astype(np.float32) for c in chosen],
                            [c["pred_mask"].astype(np.float32) for c in chosen], titles, out / "overlays.png",
                            title_colours=["black" if c["correct"] else "darkred" for c in chosen],
                            title=f"Overlays: {n_worst} worst Dice, {len(chosen) - n_worst} random "
                                  f"(of {len(records)} images; red title = misclassified)")
        write_html_report(out)   # one page over the files above, for people who would rather look than read
        logger.info("EvaluationReport written to %s", out)

    def _select(self, worst: list[dict[str, Any]], reservoir: list[dict[str, Any]]) -> tuple[list[dict], int]:
        """Half the grid from the worst Dice (worst first), the rest from the random sample (in image order)."""
        worst = sorted(worst, key=lambda c: (c["dice"] if math.isfinite(c["dice"]) else 0.0, c["index"]))
        total = min(self.n_overlays, len({c["index"] for c in worst + reservoir}))
        chosen = worst[: max(1, total // 2)] if total else []
        n_worst = len(chosen)
        taken = {c["index"] for c in chosen}
        for c in sorted(reservoir, key=lambda c: c["index"]):
            if len(chosen) >= total:
                break
            if c["index"] not in taken:
                chosen.append(c)
                taken.add(c["index"])
        for c in worst:  # too few distinct random ones: fill from the worst
            if len(chosen) >= total:
                break
            if c["index"] not in taken:
                chosen.insert(n_worst, c)
                taken.add(c["index"])
                n_worst += 1
        return chosen, n_worst

    # ------------------------------------------------------------------ distributed
    def _gathered(self) -> tuple[list[dict], list[dict], list[dict]]:
        """Records and overlay candidates of every rank (under DDP each rank evaluates a shard)."""
        parts = gather_by_rank((self._records, [c for _, _, c in self._worst], self._reservoir))
        if len(parts) == 1:
            return parts[0]
        records, worst_all, reservoir_all = [], [], []
        for rank_records, rank_worst, rank_reservoir in parts:
            offset = len(records)
            records += rank_records
            # a candidate can be in both lists (one object once unpickled): shift each object once
            for c in {id(c): c for c in rank_worst + rank_reservoir}.values():
                c["index"] += offset
            worst_all += rank_worst
            reservoir_all += rank_reservoir
        reservoir_all = [reservoir_all[i] for i in sorted(np.random.default_rng(self.seed).permutation(
            len(reservoir_all))[: self.n_overlays])]
        return records, worst_all, reservoir_all


def _scalar(x: Any) -> Any:
    """A one-element tensor / array / list (what collation leaves) as a plain Python value."""
    if isinstance(x, torch.Tensor):
        return x.reshape(-1)[0].item() if x.numel() == 1 else x.tolist()
    if isinstance(x, np.ndarray):
        return x.reshape(-1)[0].item() if x.size == 1 else x.tolist()
    if isinstance(x, (list, tuple)) and len(x) == 1:
        return _scalar(x[0])
    return x


def _short(text: str, n: int = 30) -> str:
    return text if len(text) <= n else "..." + text[-(n - 3):]
