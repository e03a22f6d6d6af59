"""The model card of an exported bundle (``docs/model_card.md``) and its numeric ``eval_metrics`` (``metadata.json``).

Everything comes from the training run and what lies beside it: ``run_config.json``, the datalist it was trained on
and the ``dataset.json`` that ``bmtl prepare`` wrote next to it (name, description, licence, citation, synthetic or
real), ``models/operating_point.json`` and every evaluation in the run folder (``eval_*/summary.json``). Nothing is
claimed that these files do not say: a run never evaluated gets a card that says so.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.metrics import finite_or_none

__all__ = ["build_model_card", "eval_metrics", "evaluation_table", "training_data"]

INTENDED_USE = ("Research use only. Not a medical device: not for diagnosis, screening or any clinical decision, and "
                "not validated for any of them.")
#: summary.json entries copied into metadata.json's eval_metrics, as ``<evaluation>_<metric>``
_SEGMENTATION = ("dice", "jaccard", "hd95")
_CLASSIFICATION = ("auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "ece")


def _evaluations(run: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(name, summary)`` of each ``run/eval_<name>/summary.json``, sorted by name."""
    found = []
    for path in sorted(run.glob("eval_*/summary.json")):
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue   # an evaluation being rewritten or broken is left out, not guessed at
        if isinstance(summary, dict) and "segmentation" in summary:
            found.append((path.parent.name[len("eval_"):], summary))
    return found


def eval_metrics(run: str | Path) -> dict[str, float]:
    """Numeric metrics of every evaluation of ``run``, named ``<evaluation>_<metric>`` (e.g. ``test_dice``,
    ``val_auc``), as the model zoo's ``metadata.json`` has them."""
    metrics: dict[str, float] = {}
    for name, summary in _evaluations(Path(run)):
        values = {**{k: summary["segmentation"].get(k) for k in _SEGMENTATION},
                  **{k: summary.get("classification", {}).get(k) for k in _CLASSIFICATION}}
        for key, value in values.items():
            number = finite_or_none(value)
            if number is not None:
                metrics[f"{name}_{key}"] = round(number, 4)
    return metrics


def _dataset_info(datalist_path: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The datalist's summary counts and the ``dataset.json`` beside it (each None when unreadable)."""
    from pipeline.data.datalist import load_datalist, summarize

    if not datalist_path:
        return None, None
    path = Path(datalist_path)
    try:
        datalist = load_datalist(path)
    except (OSError, ValueError):
        return None, None
    counts = {**summarize(datalist), "name": datalist.get("name", ""), "modality": datalist.get("modality", "")}
    try:
        dataset = json.loads((path.parent / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        dataset = None
    return counts, dataset if isinstance(dataset, dict) else None


def training_data(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """What the run was trained on, for ``metadata.json``: the dataset's name, whether it is synthetic, the images of
    its training folds (validation fold included) per class and its test images (empty when the datalist cannot be
    read any more)."""
    counts, dataset = _dataset_info(str(run_config.get("datalist", "")))
    if counts is None:
        return {}
    synthetic = bool((dataset or {}).get("synthetic")) or str(counts.get("name", "")).startswith("synthetic")
    return {"name": counts.get("name", ""), "synthetic": synthetic, "images": counts["items"],
            "per_class": counts["per_class"], "test_images": counts["test_items"],
            "validation_fold": run_config.get("fold")}


def _ci(entry: Mapping[str, Any] | None, ci: Any) -> str:
    value = finite_or_none(entry)
    if value is None:
        return "n/a"
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(finite_or_none(c) is not None for c in ci):
        return f"{value:.3f} ({float(ci[0]):.3f}-{float(ci[1]):.3f})"
    return f"{value:.3f}"


def evaluation_table(evaluations: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Markdown lines of one table over evaluation summaries (``(name, summary.json content)`` pairs)."""
    if not evaluations:
        return ["Not evaluated before export. Run `bmtl evaluate --run RUN --split test` (and `--datalist OTHER` for "
                "data from other sites), then export again: the card lists every evaluation in the run folder."]
    lines = ["| evaluation | images | left out | Dice (95 % CI) | Jaccard | HD95 (px) | AUC (95 % CI) | sensitivity | "
             "specificity | balanced accuracy | ECE | class threshold |",
             "|---|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for name, s in evaluations:
        seg, cls = s["segmentation"], s.get("classification", {})
        ci = cls.get("ci95", {})
        threshold = cls.get("operating_threshold")
        lines.append(" | ".join([
            f"| {name}", str(s.get("n_images", "")), str(sum(s.get("left_out", {}).get("per_class", {}).values())),
            _ci(seg.get("dice"), seg.get("dice", {}).get("ci95")),
            _ci(seg.get("jaccard"), None), _ci(seg.get("hd95"), None), _ci(cls.get("auc"), ci.get("auc")),
            _ci(cls.get("sensitivity"), ci.get("sensitivity")), _ci(cls.get("specificity"), ci.get("specificity")),
            _ci(cls.get("balanced_accuracy"), None), _ci(cls.get("ece"), None),
            "argmax" if threshold is None else f"{float(threshold):.3f}"]) + " |")
    lines += ["", "Names: `val` is the validation fold (it chose the checkpoint and the class threshold, so it is "
              "optimistic), `test` the datalist's held-out test set, `external_<dataset>_*` a dataset the model "
              "was not trained on; 'left out': images of a class the model does not have (not scored). Dice/Jaccard "
              "per image at the image's own size; HD95 over images where truth and prediction are both non-empty; "
              "CIs: percentile bootstrap over images."]
    return lines


def build_model_card(run: str | Path, run_config: Mapping[str, Any], cls_threshold: float | None = None,
                     bundle_name: str = "") -> str:
    """The model card (Markdown) of ``run`` as exported with ``cls_threshold``.

    Args:
        run: the training run folder.
        run_config: its ``run_config.json``.
        cls_threshold: the operating threshold pinned by the export (``None``: argmax).
        bundle_name: the bundle's ``metadata.json`` name.
    """
    run = Path(run)
    classes = [str(c) for c in run_config["classes"]]
    counts, dataset = _dataset_info(str(run_config.get("datalist", "")))
    synthetic = training_data(run_config).get("synthetic", False)
    evaluations = _evaluations(run)
    size = "x".join(str(int(s)) for s in run_config["image_size"])
    fold = run_config.get("fold")
    lines = [f"# Model card: {bundle_name or run_config.get('bundle', 'bundle')}", "",
             f"Written by `bmtl export` on {datetime.date.today().isoformat()} from the training run "
             f"`{run.name}`; the figures below are read from that run's files, nothing else.", ""]
    if synthetic:
        lines += ["> **Trained on synthetic data** made by `bmtl synth`: this model demonstrates the pipeline and says "
                  "nothing about real images. Do not use it on patients' images.", ""]
    lines += ["## Intended use", "", INTENDED_USE,
              f"Input: one 2D {'ultrasound image' if run_config.get('modality', 'US') == 'US' else 'MRI slice'} "
              "(PNG/JPEG/TIFF, DICOM or NIfTI through `bmtl predict`) with at most one lesion of interest. Output: a "
              f"lesion mask at the image's own size and the probabilities of {', '.join(classes)}.", "",
              "## Model", "",
              f"- Network `{run_config['network_name']}` (preset `{run_config.get('preset', '')}`), "
              f"{int(run_config.get('in_channels', 1))} input channel(s), input {size} pixels.",
              f"- Classes: {', '.join(classes)}; positive class for AUC, sensitivity and the threshold: "
              f"**{classes[-1]}**.",
              "- Weights: `models/model.pt`, the epoch with the best validation score (mean of Dice and AUC); "
              "TorchScript/ONNX copies checked against it (`models/export_report.json`).", "",
              "## Training data", ""]
    if counts is None:
        lines += [f"The datalist `{run_config.get('datalist', '')}` was not readable at export time: the training "
                  "data cannot be described here.", ""]
    else:
        per_class = ", ".join(f"{c} {n}" for c, n in counts["per_class"].items())
        val_n = counts["per_fold"].get(str(fold), "?")
        description = f": {dataset['description']}" if dataset and dataset.get("description") else ""
        lines += [f"- Dataset: **{counts['name']}** ({counts['modality']}){description}",
                  f"- {counts['items']} images of {counts['groups']} patients/groups in the training section "
                  f"({per_class}); validation fold {fold} ({val_n} images) chose the checkpoint and the threshold, "
                  "the other folds trained.",
                  f"- Held-out test set: {counts['test_items']} images, never used in training.",
                  f"- Seed {run_config.get('seed', '')}."]
        if dataset and dataset.get("license"):
            lines.append(f"- Licence of the data: {dataset['license']}")
        if dataset and dataset.get("citation"):
            lines.append(f"- Citation: {dataset['citation']}")
        lines.append("")
    threshold_text = (f"**{classes[-1]}** wherever its probability is at least **{cls_threshold:.3f}** (chosen on "
                      "the validation fold by Youden's J, `configs/deploy.yaml` `cls_threshold`), else the most "
                      "probable other class" if cls_threshold is not None else
                      "the most probable class (argmax; no operating threshold was chosen for this checkpoint)")
    lines += ["## Preprocessing and decisions", "",
              "- The image as grey levels, intensities scaled to [0, 1] between its 0.5th and 99.5th percentiles, "
              f"resized to {size} ({run_config.get('resize_mode', 'area')} interpolation).",
              f"- Lesion: probability mapped back to the image's own size by the inverse resize, threshold "
              f"{float(run_config.get('seg_threshold', 0.5)):g}, largest connected component, holes filled; flip "
              "test-time augmentation as configured in `configs/inference.yaml`.",
              f"- Class: {threshold_text}.", "",
              "## Evaluation", "", *evaluation_table(evaluations), "",
              "## Known limits", "",
              "- Performance on images from other scanners, hospitals, populations or acquisition settings is unknown "
              "unless an `external_*` evaluation above measures it; expect it to be lower.",
              "- One lesion per image: the largest connected component is kept; several lesions are not separated.",
              "- The class probabilities are not guaranteed calibrated (ECE above); the threshold was chosen on a "
              "small validation fold and its sensitivity/specificity trade-off may shift on other data.",
              "- Trained and evaluated at low resolution for CPU budgets: fine margins (spiculation) may be lost."]
    if synthetic:
        lines.append("- Synthetic training data: no figure above says anything about real images.")
    return "\n".join(lines) + "\n"
