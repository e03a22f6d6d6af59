"""Cross-validation of a bundle (``bmtl cv``: every fold trained and evaluated, mean ± std, an MLflow parent run)
and the comparison of several cross-validations (``bmtl compare``: one table and one figure)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.atomic import write_csv_atomic, write_text_atomic
from pipeline.metrics import REPORTED_CLASSIFICATION_METRICS, finite_or_none
from pipeline.progress import progress
from pipeline.workflows import run_bundle

__all__ = ["SUMMARY_METRICS", "run_cv", "aggregate_folds", "markdown_table", "compare"]

SUMMARY_METRICS = ("dice", "jaccard", "hd95", *REPORTED_CLASSIFICATION_METRICS)


def _read_summary(eval_dir: Path) -> dict[str, float]:
    """A fold's ``summary.json`` as metric -> value. A metric the fold could not compute (``null`` in the JSON: HD95
    when no image has both a true and a predicted lesion, AUC with one class) is NaN, which ``aggregate_folds``
    leaves out of the mean."""
    summary = json.loads((eval_dir / "summary.json").read_text())
    flat: dict[str, float] = {}
    for section in ("segmentation", "classification"):
        for key, value in summary.get(section, {}).items():
            if isinstance(value, Mapping) and "mean" in value:
                score = finite_or_none(value)
                flat[key] = float("nan") if score is None else score
            elif isinstance(value, (int, float)):
                flat[key] = float(value)
    return flat


def run_cv(
    bundle_dir: str | os.PathLike,
    datalist: str | os.PathLike,
    output_dir: str | os.PathLike,
    folds: int | Sequence[int] = 5,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    quiet: bool = True,
) -> pd.DataFrame:
    """Train and evaluate every fold, then aggregate mean ± std.

    Writes ``fold_<k>/`` (the bundle's outputs), ``cv_folds.csv`` (one row per fold), ``cv_summary.csv``
    (mean and std per metric) and ``cv_summary.md`` into ``output_dir``, and logs an MLflow parent run whose
    children are the folds' runs (sqlite store ``output_dir/mlruns.db`` unless ``MLFLOW_TRACKING_URI`` is set).

    Args:
        bundle_dir: the bundle folder.
        datalist: the prepared ``datalist.json``.
        output_dir: where the folds and the summary go.
        folds: number of folds (0..folds-1) or the fold indices.
        preset: preset name (network); the bundle's default when None.
        overrides: further bundle overrides, e.g. ``{"epochs": 20}``.
        quiet: keep the folds' output off the console (it is always in ``fold_<k>/train.log`` and ``evaluate.log``,
            beside the fold's ``history.csv``, as ``bmtl train`` and ``bmtl evaluate`` keep it).

    Returns:
        the per-fold metrics table.
    """
    from pipeline.data.datalist import load_datalist

    load_datalist(datalist)   # a missing or invalid datalist is named before any fold starts
    output = Path(output_dir).resolve()
    output.mkdir(parents=True, exist_ok=True)
    fold_ids = list(range(folds)) if isinstance(folds, int) else list(folds)
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{output / 'mlruns.db'}"
    name = Path(preset).stem if preset else "default"
    rows = []
    for fold in progress(fold_ids, f"cv {name}", unit="fold"):
        fold_dir = output / f"fold_{fold}"
        args = {"datalist": str(Path(datalist).resolve()), "fold": fold, "output_dir": str(fold_dir),
                "tracking_uri": tracking_uri, "run_name": f"{name}_fold{fold}", **(overrides or {})}
        if preset:
            args["preset"] = preset
        print(f"[cv] {name}: fold {fold} training ...", flush=True)
        train_s = run_bundle(bundle_dir, "training", args, log_file=fold_dir / "train.log", quiet=quiet)
        print(f"[cv] {name}: fold {fold} evaluating ...", flush=True)
        run_bundle(bundle_dir, "evaluating", {**args, "split": "val"},
                   log_file=fold_dir / "evaluate.log", quiet=quiet)
        row = {"fold": fold, "train_seconds": round(train_s, 1), **_read_summary(fold_dir / "eval_val")}
        rows.append(row)
        print(f"[cv] {name}: fold {fold}: " + ", ".join(
            f"{k}={row[k]:.3f}" for k in ("dice", "auc") if k in row), flush=True)
    table = pd.DataFrame(rows)
    write_csv_atomic(output / "cv_folds.csv", table)
    summary = aggregate_folds(table, name)
    write_csv_atomic(output / "cv_summary.csv", summary)
    write_text_atomic(output / "cv_summary.md", markdown_table(summary) + "\n")
    _log_parent_run(tracking_uri, name, summary, [f"{name}_fold{f}" for f in fold_ids], output)
    return table


def aggregate_folds(table: pd.DataFrame, name: str) -> pd.DataFrame:
    row: dict[str, Any] = {"network": name, "folds": len(table)}
    for metric in [m for m in SUMMARY_METRICS if m in table]:
        values = table[metric].astype(float)
        n = int(values.notna().sum())   # the folds that could compute it (NaN: HD95 without any lesion pair)
        row[f"{metric}_mean"] = float(np.nanmean(values)) if n else float("nan")
        row[f"{metric}_std"] = float(np.nanstd(values, ddof=1)) if n > 1 else 0.0
        row[f"{metric}_folds"] = n
    return pd.DataFrame([row])


def _cell(r: pd.Series, metric: str) -> str:
    """``mean ± std`` over the folds; a metric some folds could not compute says over how many it is."""
    n, folds = r.get(f"{metric}_folds", r["folds"]), int(r["folds"])
    if pd.isna(n) or int(n) == folds:
        return f"{r[f'{metric}_mean']:.3f} ± {r[f'{metric}_std']:.3f}"
    if int(n) == 0:
        return "-"
    spread = f" ± {r[f'{metric}_std']:.3f}" if int(n) > 1 else ""
    return f"{r[f'{metric}_mean']:.3f}{spread} ({int(n)} of {folds} folds)"


def markdown_table(summary: pd.DataFrame) -> str:
    metrics = [m for m in SUMMARY_METRICS if f"{m}_mean" in summary]
    lines = ["| network | folds | " + " | ".join(metrics) + " |", "|---|---:|" + "---:|" * len(metrics)]
    for _, r in summary.iterrows():
        cells = [_cell(r, m) for m in metrics]
        lines.append(f"| {r['network']} | {int(r['folds'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _log_parent_run(tracking_uri: str, name: str, summary: pd.DataFrame, child_names: list[str], output: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_name = "breast_mtl_cv"
    experiment = client.get_experiment_by_name(experiment_name)
    # artifacts beside the store, not in the current directory (MLflow's default for an sqlite store)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(
        experiment_name, artifact_location=(output / "mlartifacts").as_uri())
    parent = client.create_run(experiment_id, run_name=f"cv_{name}")
    for key, value in summary.iloc[0].items():
        if isinstance(value, (int, float, np.floating)) and not np.isnan(value):
            client.log_metric(parent.info.run_id, key, float(value))
    client.log_param(parent.info.run_id, "network", name)
    for path in ("cv_folds.csv", "cv_summary.csv", "cv_summary.md"):
        client.log_artifact(parent.info.run_id, str(output / path))
    # the folds' runs live in the bundle's experiments; tag them as children so the MLflow UI nests them
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            if run.info.run_name.split("_eval_")[0] in child_names:
                client.set_tag(run.info.run_id, "mlflow.parentRunId", parent.info.run_id)
    client.set_terminated(parent.info.run_id)


def compare(cv_dirs: Sequence[str | os.PathLike], output: str | os.PathLike | None = None) -> pd.DataFrame:
    """One table from several ``run_cv`` outputs: networks as rows, metrics (mean ± std) as columns.

    Writes ``output`` as CSV, plus the Markdown table (``.md``) and the networks-by-metrics figure (``.png``,
    ``pipeline.plots.plot_comparison``) beside it, when given.

    Raises:
        FileNotFoundError: a folder has no ``cv_summary.csv``.
    """
    frames = []
    for d in cv_dirs:
        path = Path(d) / "cv_summary.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; run `bmtl cv` into {d} first")
        frames.append(pd.read_csv(path))
    table = pd.concat(frames, ignore_index=True)
    if output is not None:
        out = Path(output)
        write_csv_atomic(out, table)
        write_text_atomic(out.with_suffix(".md"), markdown_table(table) + "\n")
        from pipeline.plots import plot_comparison

        plot_comparison(table, SUMMARY_METRICS, out.with_suffix(".png"))
    return table
