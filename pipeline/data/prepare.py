"""``prepare``: a dataset in its original layout -> validated datalist with folds (see ``pipeline.data.datalist``)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from pipeline.data.datalist import PreparedDataset, SkipLog, keep_classes, summarize, write_prepared
from pipeline.data.io import DataError
from pipeline.data.splits import assign_device_folds, assign_folds, hold_out_test

__all__ = ["SOURCES", "prepare", "prepared_summary"]

# source name -> "module:function"; each converter is ``convert(input_dir, output_dir, log, **options)``
SOURCES: dict[str, str] = {
    "busi": "pipeline.data.sources.busi:convert",
    "busbra": "pipeline.data.sources.busbra:convert",
    "udiat": "pipeline.data.sources.udiat:convert",
    "folder": "pipeline.data.sources.folder:convert",
    "nifti": "pipeline.data.sources.volumes:convert_nifti",
    "dicom": "pipeline.data.sources.volumes:convert_dicom",
}


def _converter(source: str):
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of: {', '.join(SOURCES)}")
    module, func = SOURCES[source].split(":")
    return getattr(importlib.import_module(module), func)


def _fill_groups_from_duplicates(items: list[dict[str, Any]], output_dir: Path) -> None:
    """Items without a patient id get their duplicate cluster as group, so duplicates never straddle folds."""
    missing = [item for item in items if item.get("group") in (None, "")]
    if not missing:
        return
    from pipeline.data.dedup import cluster_ids

    paths = [Path(item["image"]) if Path(item["image"]).is_absolute() else output_dir / item["image"]
             for item in missing]
    for item, cluster in zip(missing, cluster_ids(paths)):
        item["group"] = f"cluster_{cluster:05d}"


def prepare(
    source: str,
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    strict: bool = False,
    n_folds: int = 5,
    seed: int = 0,
    test_fold: int | None = None,
    test_devices: list[str] | None = None,
    val_devices: list[str] | None = None,
    classes: list[str] | None = None,
    **options: Any,
) -> tuple[PreparedDataset, dict[str, Path]]:
    """Convert ``input_dir`` (layout of ``source``) into ``output_dir`` and write the datalist files.

    Args:
        source: one of ``SOURCES``.
        input_dir: the dataset in its original layout.
        output_dir: where the prepared images, masks, ``datalist.json``, ``dataset.json`` and ``skipped.csv`` go.
        strict: stop at the first bad input instead of skipping it.
        n_folds: folds of the stratified group k-fold (kept as-is when the source ships official folds).
        seed: seed of the fold assignment.
        test_fold: hold this fold out as the ``test`` section (the source's official fold, BUS-BRA's fold 1 being
            0, else fold ``test_fold`` of our own ``n_folds``-fold split); the other patients are split anew into
            ``n_folds`` folds, so fold ``k`` is a validation split drawn from the training patients.
        test_devices: hold these scanners out as the ``test`` section (prefixes of the ``device`` names, e.g.
            ``["Toshiba", "U-Systems"]``: a cross-scanner split); the other patients are split anew as above.
        val_devices: make fold 0 the patients of these scanners and split the others into folds 1 to
            ``n_folds - 1`` (validating on fold 0 then scores a scanner not trained on: leave-one-domain-out
            validation, for recipes meant for other hospitals); replaces official folds.
        classes: keep only the items of these classes (e.g. ``["benign", "malignant"]`` from BUSI's three); the
            number left out per class goes into ``dataset.json`` (``classes_left_out``).
        options: source-specific options of the converter (e.g. ``labels``, ``axis``, ``negative_slices``).

    Raises:
        ValueError: unknown source; ``classes`` names a class the source does not have or keeps fewer than two.
        DataError: the input folder is missing, or nothing usable remains (skipped items are listed in
            ``skipped.csv`` first), or (strict) the first bad input.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    convert = _converter(source)
    if not input_dir.is_dir():
        raise DataError(input_dir, "input folder not found")
    output_dir.mkdir(parents=True, exist_ok=True)
    log = SkipLog(strict=strict)
    prepared: PreparedDataset = convert(input_dir, output_dir, log, **options)
    if not prepared.items:
        log.write_csv(output_dir / "skipped.csv")
        raise DataError(
            input_dir,
            f"no usable item found for source {source!r} ({len(log)} skipped, see {output_dir / 'skipped.csv'})",
        )
    if classes:
        _keep_classes(prepared, classes, output_dir)
    _fill_groups_from_duplicates(prepared.items, output_dir)
    _label_synthetic(prepared, input_dir)
    if test_fold is not None or test_devices:
        if test_fold is not None and any(item.get("fold") is None for item in prepared.items):
            assign_folds(prepared.items, n_folds=n_folds, seed=seed)  # no official folds: the test fold is ours
        prepared.items, held_out = hold_out_test(prepared.items, test_fold=test_fold, test_devices=test_devices)
        prepared.test = prepared.test + held_out
        prepared.extra["test_split"] = (f"fold {test_fold}" if test_fold is not None
                                        else "devices " + ", ".join(test_devices))
    if val_devices:
        assign_device_folds(prepared.items, val_devices, n_folds=n_folds, seed=seed)
        prepared.extra["validation_split"] = "fold 0: devices " + ", ".join(val_devices)
    else:
        assign_folds(prepared.items, n_folds=n_folds, seed=seed)
    paths = write_prepared(prepared, output_dir)
    return prepared, paths


def _label_synthetic(prepared: PreparedDataset, input_dir: Path) -> None:
    """Data made by ``bmtl synth`` is called synthetic everywhere: not the real dataset whose layout it copies."""
    from pipeline.data.synthetic import read_synthetic_marker

    marker = read_synthetic_marker(input_dir)
    if marker is None:
        return
    prepared.name = f"synthetic_{str(marker.get('modality', prepared.modality)).lower()}"
    prepared.description = str(marker.get("description", "synthetic data"))
    prepared.license = str(marker.get("license", ""))
    prepared.citation = ""
    prepared.extra["synthetic"] = True
    prepared.extra["generator"] = {k: marker[k] for k in ("generator", "n", "seed", "layout") if k in marker}


def _keep_classes(prepared: PreparedDataset, classes: list[str], output_dir: Path) -> None:
    """``--classes``: keep only those classes' items and delete the files the converter wrote for the others."""
    def files(p: PreparedDataset) -> set[Path]:
        return {Path(item[k]) for item in p.items + p.test for k in ("image", "label") if item.get(k)}

    before = files(prepared)
    prepared.extra["classes_left_out"] = keep_classes(prepared, classes)
    for path in before - files(prepared):
        path = path if path.is_absolute() else output_dir / path
        if output_dir.resolve() in path.resolve().parents:   # only what the converter wrote, never an input
            path.unlink(missing_ok=True)


def prepared_summary(prepared: PreparedDataset) -> dict[str, Any]:
    """``summarize`` of a just-prepared dataset."""
    datalist = {"classes": prepared.classes, "training": prepared.items, "test": prepared.test}
    return summarize(datalist, n_skipped=len(prepared.skipped))
