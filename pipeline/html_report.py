"""One self-contained HTML page per evaluation (``eval_<split>/report.html``): the metric table with 95 % CIs, the
learning curves of the run, ROC with the operating point, calibration, confusion matrix, the worst cases with
overlays and Grad-CAM maps, and what the model is. Plots are embedded (base64 PNG), so the file can be mailed or
opened from MLflow.

It only assembles what the evaluation already wrote (``summary.json``, ``per_image.csv``, the PNGs; and, one folder
up, the run's ``learning_curves.png`` and ``run_config.json``): nothing is recomputed here.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.atomic import write_text_atomic
from pipeline.metrics import finite_or_none

__all__ = ["write_html_report", "write_datasets_report", "REPORT_FILE", "SECTIONS"]

REPORT_FILE = "report.html"
#: (section id, title, image file relative to the evaluation folder) in page order; a missing image is skipped
SECTIONS = (
    ("learning-curves", "Learning curves", "../learning_curves.png"),
    ("roc", "ROC curve (the operating point marked)", "roc.png"),
    ("calibration", "Calibration", "calibration.png"),
    ("confusion", "Confusion matrix", "confusion_matrix.png"),
    ("overlays", "Overlays: the worst cases and a random sample", "overlays.png"),
    ("gradcam", "Grad-CAM of the worst cases: where the classifier looked", "gradcam_worst.png"),
)
_SEGMENTATION = (("dice", "Dice"), ("jaccard", "Jaccard"), ("hd95", "HD95"))
_CLASSIFICATION = (("auc", "AUC (malignant vs rest)"), ("accuracy", "Accuracy"),
                   ("balanced_accuracy", "Balanced accuracy"), ("sensitivity", "Sensitivity"),
                   ("specificity", "Specificity"), ("f1_macro", "F1 (macro)"), ("ece", "ECE"))
_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.3em .7em;text-align:left}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}.note{color:#555;font-size:.9em}"""


def _fmt(value: Any, digits: int = 3) -> str:
    number = finite_or_none(value)
    return "n/a" if number is None else f"{number:.{digits}f}"


def _ci(ci: Any) -> str:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(finite_or_none(c) is not None for c in ci):
        return f"{_fmt(ci[0])} to {_fmt(ci[1])}"
    return ""


def _metric_rows(summary: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    seg, cls = summary.get("segmentation", {}), summary.get("classification", {})
    for key, name in _SEGMENTATION:
        entry = seg.get(key)
        if isinstance(entry, dict):
            unit = f" ({entry['unit']})" if entry.get("unit") else ""
            rows.append((name + unit, _fmt(entry), _ci(entry.get("ci95"))))
    for key, name in _CLASSIFICATION:
        if key in cls:
            rows.append((name, _fmt(cls[key]), _ci(cls.get("ci95", {}).get(key))))
    return rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _page(title: str, parts: list[str]) -> str:
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>" + "\n".join(parts) + "</body></html>\n")


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def write_html_report(eval_dir: str | Path, title: str | None = None, n_worst: int = 10) -> Path:
    """Write ``eval_dir/report.html`` from the evaluation's files; returns its path.

    Args:
        eval_dir: an evaluation folder (``summary.json``, ``per_image.csv`` and the plots of ``EvaluationReport``).
        title: the page title (default: the run and the split).
        n_worst: rows of the worst-cases table (lowest Dice first).

    Raises:
        FileNotFoundError: ``eval_dir`` has no ``summary.json``.
    """
    eval_dir = Path(eval_dir)
    summary_path = eval_dir / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(f"{summary_path} not found: run the evaluation first")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    run_config_path = eval_dir.parent / "run_config.json"
    run_config = json.loads(run_config_path.read_text(encoding="utf-8")) if run_config_path.is_file() else {}
    title = title or f"{eval_dir.parent.name}: {eval_dir.name.removeprefix('eval_')} evaluation"
    cls = summary.get("classification", {})
    threshold = cls.get("operating_threshold")
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p class='note'>{summary.get('n_images', '?')} images; classes "
             f"{html.escape(', '.join(map(str, summary.get('classes', []))))}; written "
             f"{datetime.datetime.now().astimezone().isoformat(timespec='minutes')}. Research use only, not a medical "
             "device.</p>",
             "<h2 id='metrics'>Metrics (95 % bootstrap CIs)</h2>",
             _table(["metric", "value", "95 % CI"], [list(r) for r in _metric_rows(summary)]),
             "<p class='note'>Predicted class: "
             + (f"malignant where its probability reaches the operating threshold {_fmt(threshold)} chosen on the "
                "validation fold" if finite_or_none(threshold) is not None else "the most probable class")
             + ". Dice and Jaccard at each image's own size; an empty truth scores 1 when the prediction is empty."
             "</p>"]
    if run_config:
        about = [[k, json.dumps(run_config[k]) if isinstance(run_config[k], (dict, list)) else str(run_config[k])]
                 for k in ("preset", "network_name", "image_size", "keep_aspect", "classes", "datalist", "fold", "seed")
                 if k in run_config]
        parts += ["<h2 id='model'>Model</h2>", _table(["", ""], about)]
    for section, heading, file in SECTIONS:
        path = (eval_dir / file).resolve()
        if path.is_file():
            parts += [f"<h2 id='{section}'>{html.escape(heading)}</h2>", _image(path, heading)]
    per_image = eval_dir / "per_image.csv"
    if per_image.is_file():
        table = pd.read_csv(per_image, keep_default_na=False)
        columns = [c for c in ("id", "true_class", "pred_class", "dice", "hd95", "lesion_area_true_px",
                               "lesion_area_pred_px", "file") if c in table.columns]
        worst = table.assign(_dice=pd.to_numeric(table.get("dice"), errors="coerce")).sort_values("_dice").head(n_worst)
        rows = [[_fmt(v) if c in ("dice", "hd95") else v for c, v in zip(columns, r)] for r in worst[columns].values]
        parts += ["<h2 id='worst'>Worst cases (lowest Dice)</h2>", _table(columns, rows)]
    return write_text_atomic(eval_dir / REPORT_FILE, _page(title, parts))


def write_datasets_report(folder: str | Path, title: str, table: pd.DataFrame, split: str) -> Path:
    """Write ``folder/datasets_<split>.html``, the cross-dataset report: one row per evaluated dataset (the rows of
    ``datasets_<split>.csv``: metrics with their 95 % bootstrap CIs) and a link to each evaluation's own report.

    Args:
        folder: the run (or output) folder holding the ``eval_<name>`` folders.
        title: the page title (the run's or the bundle's name).
        table: one row per evaluation, columns ``evaluation``, ``images``, ``left_out``, the metrics and their
            ``<metric>_ci_low`` / ``<metric>_ci_high``.
        split: the evaluated split, in the file name.
    """
    folder = Path(folder)
    metrics = [(key, name) for key, name in (*_SEGMENTATION, *_CLASSIFICATION) if key in table.columns]
    header = ["evaluation", "images", "left out", *(name for _, name in metrics), "report"]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in table.to_dict("records"):
        cells = [html.escape(str(row["evaluation"])), _fmt(row.get("images"), 0), _fmt(row.get("left_out"), 0)]
        for key, _ in metrics:
            ci = _ci([row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")])
            cells.append(html.escape(_fmt(row.get(key)) + (f" ({ci})" if ci else "")))
        report = Path(f"eval_{row['evaluation']}") / REPORT_FILE
        cells.append(f"<a href='{html.escape(report.as_posix())}'>report</a>" if (folder / report).is_file() else "")
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    parts = [f"<h1>{html.escape(title)}: {len(table)} datasets ({html.escape(split)})</h1>",
             "<p class='note'>Research use only, not a medical device. <code>val</code> is the validation fold (it "
             "chose the checkpoint and the class threshold: optimistic), <code>test</code> the held-out test set, "
             "<code>external_&lt;dataset&gt;_*</code> a dataset the model was not trained on; 'left out': images of a "
             "class the model does not have. CIs: percentile bootstrap over images.</p>",
             f"<h2 id='datasets'>Metrics per dataset (95 % bootstrap CIs)</h2><table><tr>{head}</tr>{''.join(body)}"
             "</table>"]
    return write_text_atomic(folder / f"datasets_{split}.html", _page(f"{title}: datasets ({split})", parts))
