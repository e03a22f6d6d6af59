"""``predictions.csv`` of ``bmtl predict``: its columns, the row of a predicted input (the class and lesion measures
from its slices), the row of a failed one, and the table written atomically with the run's exit code."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import write_rows_atomic
from pipeline.data.io import DataError
from pipeline.inference.discovery import InputItem
from pipeline.inference.outputs import text
from pipeline.metrics import decision_margin, predicted_classes

__all__ = ["CSV_COLUMNS", "EXIT_CODES", "CaseSummary", "PredictionResult", "table_columns", "base_row", "error_row",
           "case_row", "write_table"]

logger = logging.getLogger(__name__)

_FIXED_COLUMNS = ["file", "frame", "type", "status", "error", "predicted_class", "low_confidence"]
_MEASURE_COLUMNS = ["lesion_area_px", "lesion_area_mm2", "lesion_voxels", "lesion_volume_mm3", "n_slices", "height",
                    "width", "spacing_mm", "spacing_note", "refined", "mask", "overlay", "heatmap"]
CSV_COLUMNS = (*_FIXED_COLUMNS, "prob_<class> (one per class)", *_MEASURE_COLUMNS)
EXIT_ALL_OK, EXIT_NONE, EXIT_SOME_FAILED = 0, 1, 3   # 2 is the command line's usage error
EXIT_CODES = ("0: every input was predicted (files named like masks are skipped and listed, not failures); "
              "3: some inputs failed (status=error rows in predictions.csv); 1: no input was predicted")


@dataclass
class PredictionResult:
    """What ``predict`` did: the table (one row per input), where it is, and the exit code (``EXIT_CODES``)."""

    rows: list[dict[str, Any]]
    csv_path: Path
    output_dir: Path
    runtime: str
    device: str
    n_ok: int = 0
    n_failed: int = 0
    columns: list[str] = field(default_factory=list)
    n_skipped: int = 0

    def path(self, row: dict[str, Any], column: str = "mask") -> Path | None:
        """The file a row's ``mask``, ``overlay`` or ``heatmap`` column names (relative to ``output_dir`` in the
        table, so the folder can be moved), or None when the row has none."""
        return self.output_dir / str(row[column]) if row.get(column) else None

    @property
    def exit_code(self) -> int:
        """0: every input predicted (skipped mask files aside); 3: some failed; 1: none was predicted."""
        if self.n_ok == 0:
            return EXIT_NONE
        return EXIT_SOME_FAILED if self.n_failed else EXIT_ALL_OK


@dataclass
class CaseSummary:
    """One input's slices (one for a 2D image) reduced to what the table reports.

    The class is the mean of the probabilities of the slices with lesion pixels (all slices when none has any); the
    slice shown (``best``) is the one with the largest lesion (the middle one when none has any)."""

    masks: list[np.ndarray]
    areas: np.ndarray
    probs: np.ndarray
    predicted: int
    margin: float
    best: int
    refined: bool

    @classmethod
    def from_slices(cls, results: Sequence[tuple[np.ndarray, np.ndarray, bool]],
                    cls_threshold: float | None) -> CaseSummary:
        """``results``: per slice, the mask, the class probabilities and whether refinement changed it."""
        masks = [r[0] for r in results]
        areas = np.array([int(m.sum()) for m in masks])
        probs = np.stack([r[1] for r in results])
        with_lesion = areas > 0
        mean_probs = probs[with_lesion].mean(0) if with_lesion.any() else probs.mean(0)
        return cls(masks=masks, areas=areas, probs=mean_probs,
                   predicted=int(predicted_classes(mean_probs, cls_threshold)[0]),
                   margin=float(decision_margin(mean_probs, cls_threshold)[0]),
                   best=int(np.argmax(areas)) if with_lesion.any() else len(masks) // 2,
                   refined=any(bool(r[2]) for r in results))


def table_columns(classes: Sequence[str]) -> list[str]:
    """The table's columns for a model with ``classes`` (one probability column each)."""
    return [*_FIXED_COLUMNS, *(f"prob_{c}" for c in classes), *_MEASURE_COLUMNS]


def base_row(item: InputItem, classes: Sequence[str]) -> dict[str, Any]:
    """An input's row with only its file (relative to the input root), frame and type filled in."""
    row: dict[str, Any] = {c: "" for c in table_columns(classes)}
    row.update(file=text(item.shown), frame="" if item.frame is None else item.frame, type=item.kind)
    return row


def error_row(item: InputItem, classes: Sequence[str], error: Exception | str) -> dict[str, Any]:
    """The ``status=error`` row of an input that failed: the problem of a ``DataError``, else the exception."""
    row = base_row(item, classes)
    if isinstance(error, DataError):
        problem = error.problem
    elif isinstance(error, Exception):
        problem = f"{type(error).__name__}: {error}"
    else:
        problem = str(error)
    row.update(status="error", error=problem.encode("utf-8", "backslashreplace").decode("utf-8"))
    logger.info("%s: %s", item.path, problem)
    return row


def case_row(item: InputItem, classes: Sequence[str], summary: CaseSummary, spacing: Sequence[float] | None,
             thickness: float | None, confidence_margin: float, spacing_problem: str | None = None) -> dict[str, Any]:
    """The ``status=ok`` row of a predicted input: class, probabilities, lesion area (in mm² and mm³ where the
    spacing is known; ``spacing_note`` says why not for a file whose format carries a spacing that could not be
    read, e.g. a DICOM ``PixelSpacing`` with decimal commas); the file columns (mask, overlay, heatmap) are the
    caller's."""
    masks, areas, best = summary.masks, summary.areas, summary.best
    row = base_row(item, classes)
    row.update(status="ok", predicted_class=classes[summary.predicted], refined=summary.refined,
               low_confidence=summary.margin < confidence_margin,
               n_slices=len(masks), height=masks[best].shape[0], width=masks[best].shape[1],
               lesion_area_px=int(areas[best] if len(masks) > 1 else areas[0]))
    for c, p in zip(classes, summary.probs):
        row[f"prob_{c}"] = round(float(p), 6)
    if spacing is None and spacing_problem:
        row["spacing_note"] = f"spacing unknown ({spacing_problem}): no mm figures"
    if spacing is not None:
        row["spacing_mm"] = "x".join(f"{s:.4g}" for s in spacing)
        row["lesion_area_mm2"] = round(float(row["lesion_area_px"]) * spacing[0] * spacing[1], 3)
    if len(masks) > 1:
        row["lesion_voxels"] = int(areas.sum())
        if spacing is not None and thickness is not None:
            row["lesion_volume_mm3"] = round(float(areas.sum()) * spacing[0] * spacing[1] * thickness, 3)
    return row


def write_table(rows: list[dict[str, Any]], out: Path, classes: Sequence[str], runtime: str,
                device: str) -> PredictionResult:
    """``out/predictions.csv``, replaced atomically (a rerun killed while writing keeps the previous complete
    table), and the run's result."""
    path = out / "predictions.csv"
    columns = table_columns(classes)
    write_rows_atomic(path, columns, rows, extrasaction="ignore")
    n_ok = sum(r["status"] == "ok" for r in rows)
    n_skipped = sum(r["status"] == "skipped" for r in rows)
    return PredictionResult(rows=rows, csv_path=path, output_dir=out, runtime=runtime, device=device,
                            n_ok=n_ok, n_failed=len(rows) - n_ok - n_skipped, columns=columns, n_skipped=n_skipped)
