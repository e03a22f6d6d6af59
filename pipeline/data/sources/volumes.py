"""Converters for MRI volumes (NIfTI or DICOM) with lesion masks: 3D volumes -> 2D slices for the datalist.

Input layouts
-------------
NIfTI (``prepare("nifti", ...)``, ``bmtl prepare --source nifti``)::

    <input>/images/<case>.nii.gz     one 3D volume per case (``.nii``, NRRD ``.nrrd``/``.nhdr`` and MetaImage
                                     ``.mha``/``.mhd`` too; MetaImage needs the ``itk`` extra)
    <input>/labels/<case>.nii.gz     its lesion mask on the same voxel grid; ``<case>_seg``, ``<case>_label`` and
                                     ``<case>_mask`` are accepted too (``.nii`` or ``.nii.gz``)
    <input>/classes.csv              columns ``case,class`` (class: benign | malignant | normal, any case); an
                                     optional ``patient`` column gives the patient of each case (default: the case)

DICOM (``prepare("dicom", ...)``)::

    <input>/images/<case>/           one folder per case holding ONE series, any file names (sub-folders are read
                                     too); slices are ordered by ImagePositionPatient projected on the slice normal,
                                     or by InstanceNumber when the position or orientation is missing
    <input>/labels/<case>.nii.gz     the mask as NIfTI on the image's grid, or
    <input>/labels/<case>/           the mask as a DICOM series on the image's grid (same suffixes as above)
    <input>/classes.csv

``classes_csv`` points elsewhere for the class table. Classes are ``["benign", "malignant"]``, or
``["normal", "benign", "malignant"]`` when the CSV uses ``normal`` for any case. A ``normal`` case may come without a
label (its masks are empty); a benign or malignant case needs a label with at least one lesion voxel.

Geometry and what "axial" means
-------------------------------
A volume is read with its voxel-to-world affine in RAS+ millimetres (NIfTI: the sform, else the qform, as nibabel
reads it; DICOM: built from ImageOrientationPatient, ImagePositionPatient, PixelSpacing and the distance between
slices, converted from DICOM's LPS). Image and label are then both brought to the closest canonical RAS+ orientation
(as ``nibabel.as_closest_canonical`` does: array axes are only permuted and flipped, never resampled, and the affine is
updated so every voxel keeps its world position). In that array space

* axis 0 runs from the patient's left to right (index grows towards Right): slices along it are **sagittal**,
* axis 1 runs from posterior to anterior: slices along it are **coronal**,
* axis 2 runs from inferior to superior (feet to head): slices along it are **axial** (the default, ``axis=2``).

For an oblique acquisition "axial" is the array axis closest to the feet-head direction. The slice index ``idx`` in file
names and in the item's ``slice`` counts along the chosen axis of the RAS-reoriented array (from inferior for axial);
it differs from the index in the original file when that file stores the axis reversed.

A slice along ``axis`` keeps the other two axes in order, e.g. an axial slice is the array ``vol[:, :, idx]`` of shape
``(n_left_right, n_posterior_anterior)``. It is written as a 2D NIfTI whose 4x4 affine has the volume's columns of the
two in-plane axes (in-plane spacing and directions), the volume's column of the slicing axis as third column (the slice
normal times the slice spacing, so the 2D file still records the slice thickness and orientation) and the world
position of the slice's voxel ``(0, 0)`` as origin: pixel ``(u, v)`` of the slice and voxel ``(u, v, idx)`` (axes in
volume order) of the volume map to the same world coordinate.

Slices, intensities and items
-----------------------------
From every usable volume: every slice that holds lesion voxels, plus ``negative_slices`` lesion-free slices chosen
reproducibly (a generator seeded by ``seed`` and the case name): candidates are lesion-free slices with tissue in them
(at least 1% of the pixels above 0.1 after normalisation) at least two slices away from the lesion; they are split into
``negative_slices`` contiguous runs and one slice is drawn from each run, so the picks spread over the volume. When too
few slices are two away, the farthest lesion-free ones are taken; a volume with fewer lesion-free slices gives fewer.
A normal case gives ``negative_slices`` slices and nothing else.

Intensities are normalised per volume: the 1st and 99th percentiles of all voxels map to 0 and 1, values outside are
clipped, float32 (if the two percentiles coincide, the minimum and maximum are used). Masks are uint8 0/1.

Written files: ``output_dir/images/<case>_s<idx>.nii.gz`` and ``output_dir/masks/<case>_s<idx>.nii.gz`` (``idx`` with
three digits). Items: ``{"id", "image": "images/...", "label": "masks/...", "cls", "group": the patient (the case
unless the CSV has a patient column), "source": "nifti" | "dicom", "original": the volume's path, "slice": idx,
"axis": axis}``. A lesion-free slice of a benign or malignant volume carries the volume's class in ``cls``: ``cls``
is the diagnosis of the patient's lesion, and the slice's empty mask says that this slice does not show it (the
datalist contract only ties "normal" to an empty mask, not the other way round). Consumers that want slice-level
"no lesion" labels can read them from the empty masks.

Bad inputs are recorded in the ``SkipLog`` with their path and problem and the conversion goes on (``strict`` raises
instead): unreadable files, an image without label or a label without image, shape or geometry mismatch between image
and label, 4D volumes, NaN/inf voxels, non-binary labels, cases missing from the class table or with an unknown class,
DICOM series without pixel data, with mixed slice sizes, several volumes in one folder or uneven slice spacing. A
missing class table, one without the ``case``/``class`` columns, and an input with nothing to convert raise.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from pipeline.atomic import atomic_path
from pipeline.data.datalist import PreparedDataset, SkipLog
from pipeline.data.dicom_series import read_dicom_series
from pipeline.data.io import DataError
from pipeline.data.volume import (
    Volume,
    normalise_percentile,
    read_volume,
    slice_affine,
    to_canonical,
)
from pipeline.data.sources.common import KNOWN_CLASSES, IdMaker, check_not_empty, find_child, natural_key
from pipeline.data.sources.volume_layout import (
    DICOM_LAYOUT,
    LABEL_SUFFIXES,
    NIFTI_LAYOUT,
    dicom_images,
    find_labels,
    nifti_images,
    read_classes_csv,
)
from pipeline.progress import progress

__all__ = [
    "PLANES",
    "choose_negative_slices",
    "convert_nifti",
    "convert_dicom",
]

PLANES = {0: "sagittal", 1: "coronal", 2: "axial"}


# ------------------------------------------------------------------------------------------------------- labels
def _binary(data: np.ndarray, path: Path) -> np.ndarray:
    """The lesion mask of a label volume holding 0 and at most one other value."""
    values = np.unique(data)
    if values.size > 2 or (values.size == 2 and values[0] != 0):
        shown = ", ".join(f"{v:g}" for v in values[:6].astype(float)) + (", ..." if values.size > 6 else "")
        raise DataError(path, f"label is not binary: it has {values.size} distinct values ({shown}); expected 0 and "
                              "one other value (a multi-label segmentation: merge the lesion labels first)")
    return data != 0


def choose_negative_slices(
    n_slices: int,
    lesion_slices: Sequence[int],
    n: int,
    rng: np.random.Generator,
    usable: Sequence[bool] | None = None,
    min_gap: int = 2,
) -> list[int]:
    """Pick ``n`` lesion-free slices, spread over the volume and away from the lesion (sorted).

    Candidates are usable lesion-free slices at least ``min_gap`` slices from every lesion slice; they are split into
    ``n`` contiguous runs and one slice is drawn from each. With fewer than ``n`` such candidates all of them are taken
    plus the farthest of the nearer lesion-free slices; fewer than ``n`` come back when fewer are lesion-free.
    """
    if n <= 0:
        return []
    lesion = sorted(set(int(k) for k in lesion_slices))
    free = [k for k in range(n_slices) if k not in set(lesion) and (usable is None or usable[k])]
    if not free:
        return []
    distance = {k: min((abs(k - lk) for lk in lesion), default=n_slices) for k in free}
    far = [k for k in free if distance[k] >= min_gap]
    if len(far) >= n:
        return sorted(int(rng.choice(run)) for run in np.array_split(np.array(far), n))
    near = sorted((k for k in free if k not in far), key=lambda k: (-distance[k], k))
    return sorted(far + near[: n - len(far)])


# ------------------------------------------------------------------------------------------------------ converting
def _write_nifti_2d(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    img = nib.Nifti1Image(array, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm")
    # bulk output: atomic against a kill, no flush per file; the temporary name keeps .nii/.nii.gz for nibabel
    with atomic_path(path, fsync=False) as tmp:
        nib.save(img, str(tmp))


def _read_any(path: Path, what: str) -> Volume:
    return read_dicom_series(path, what) if path.is_dir() else read_volume(path, what)


def _check_pair(image: Volume, label: Volume, label_path: Path, raw_shapes: tuple) -> None:
    if image.data.shape != label.data.shape:
        raise DataError(label_path, f"label shape {raw_shapes[1]} differs from its image's shape {raw_shapes[0]}"
                                    + (" (compared in RAS orientation)" if raw_shapes[0] != image.data.shape else ""))
    tolerance = 0.01 * float(image.spacing.min())
    diff = float(np.abs(image.affine - label.affine).max())
    if diff > tolerance:
        raise DataError(label_path, f"label geometry differs from its image's (affines differ by up to {diff:.3g} mm): "
                                    "resample the label onto the image's voxel grid")


def _convert_case(
    case: str,
    case_id: str,
    image_path: Path,
    label_path: Path | None,
    class_name: str,
    group: str,
    ctx: dict[str, Any],
) -> list[dict[str, Any]]:
    """Read, check, slice and write one case; returns its items (nothing is written when a check fails)."""
    axis, output_dir = ctx["axis"], ctx["output_dir"]
    raw_image = _read_any(image_path, "image")
    if raw_image.meta.get("spacing_known") is False:   # never written as 1 x 1 mm slices that look measured
        raise DataError(image_path, f"pixel spacing unknown: {raw_image.meta.get('spacing_problem', 'unreadable')}; "
                                    "the prepared slices would claim 1 x 1 mm: fix the header and prepare again")
    if label_path is None:
        if class_name != "normal":
            raise DataError(image_path, f"no label for this {class_name} image: expected labels/{case}.nii.gz (or "
                                        f"{', '.join(case + s for s in LABEL_SUFFIXES)}"
                                        + (f", or a DICOM series folder labels/{case}/)" if ctx["kind"] == "dicom"
                                           else ")"))
        raw_label = Volume(np.zeros(raw_image.data.shape, dtype=np.uint8), raw_image.affine.copy(), image_path)
    else:
        raw_label = _read_any(label_path, "label")
    image, label = to_canonical(raw_image), to_canonical(raw_label)
    shown_label = label_path or image_path
    _check_pair(image, label, shown_label, (raw_image.data.shape, raw_label.data.shape))
    mask = _binary(label.data, shown_label)
    n_lesion = int(mask.sum())
    if class_name == "normal" and n_lesion:
        raise DataError(shown_label, f"case {case!r} is 'normal' in the classes CSV but its label has {n_lesion} "
                                     "lesion voxels: fix the class or clear the label")
    if class_name != "normal" and not n_lesion:
        raise DataError(shown_label, f"label is empty (no lesion voxel) but case {case!r} is {class_name!r}: a "
                                     "lesion-free case must be classed 'normal'")
    try:
        norm = normalise_percentile(image.data)
    except ValueError as e:
        raise DataError(image_path, str(e)) from None

    other = tuple(a for a in range(3) if a != axis)
    lesion_slices = np.nonzero(mask.any(axis=other))[0].tolist()
    usable = ((norm > 0.1).mean(axis=other) >= 0.01).tolist()
    rng = np.random.default_rng([ctx["seed"], zlib.crc32(case.encode("utf-8"))])
    negatives = choose_negative_slices(norm.shape[axis], lesion_slices, ctx["negative_slices"], rng, usable)

    (output_dir / "images").mkdir(parents=True, exist_ok=True)
    (output_dir / "masks").mkdir(parents=True, exist_ok=True)
    items = []
    cls = ctx["classes"].index(class_name)
    for index in sorted(set(lesion_slices) | set(negatives)):
        item_id = f"{case_id}_s{index:03d}"
        image_rel, label_rel = f"images/{item_id}.nii.gz", f"masks/{item_id}.nii.gz"
        affine2d = slice_affine(image.affine, axis, index)
        _write_nifti_2d(output_dir / image_rel, np.take(norm, index, axis=axis), affine2d)
        _write_nifti_2d(output_dir / label_rel, np.take(mask, index, axis=axis).astype(np.uint8), affine2d)
        items.append({
            "id": item_id,
            "image": image_rel,
            "label": label_rel,
            "cls": cls,
            "group": group,
            "source": ctx["kind"],
            "original": str(image_path),
            "slice": int(index),
            "axis": axis,
        })
    return items


def _check_options(axis: Any, negative_slices: Any) -> tuple[int, int]:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or int(axis) not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2 (2 = axial in RAS orientation), got {axis!r}")
    if isinstance(negative_slices, bool) or not isinstance(negative_slices, (int, np.integer)) or negative_slices < 0:
        raise ValueError(f"negative_slices must be a non-negative integer, got {negative_slices!r}")
    return int(axis), int(negative_slices)


def _case_record(case: str, image_path: Path, table: Any, found: list[Path], classes: list[str]
                 ) -> tuple[str, Path | None, str]:
    """A case's class, label file (``None``: no lesion) and patient from the classes CSV and the labels found.

    Raises:
        DataError: the case is missing from the CSV or has conflicting or unknown classes, or several labels.
    """
    row = table.lookup(case)
    if row is None:
        raise DataError(image_path, f"case {case!r} is not in the classes CSV {table.path}: add a row '{case},<class>'")
    if row in table.conflicts:
        raise DataError(image_path, f"case {case!r} has conflicting classes in {table.path} "
                                    f"({', '.join(sorted(set(table.conflicts[row])))})")
    class_name = table.classes[row]
    if class_name not in classes:
        raise DataError(image_path, f"unknown class {class_name!r} for case {case!r} in {table.path}; "
                                    f"expected one of {', '.join(KNOWN_CLASSES)}")
    if len(found) > 1:
        raise DataError(image_path, f"several labels for case {case!r} ({', '.join(p.name for p in found)}): keep one")
    return class_name, found[0] if found else None, table.patients.get(row, case)


def _convert(
    kind: str,
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    log: SkipLog,
    classes_csv: str | os.PathLike | None,
    axis: int,
    negative_slices: int,
    seed: int,
    find_images: Callable[[Path, SkipLog], dict[str, Path]],
) -> PreparedDataset:
    axis, negative_slices = _check_options(axis, negative_slices)
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    layout = NIFTI_LAYOUT if kind == "nifti" else DICOM_LAYOUT
    check_not_empty(input_dir)
    images_dir = find_child(input_dir, "images", want_dir=True)
    if images_dir is None:
        raise DataError(input_dir, f"nothing usable: no images/ folder; expected the {kind} layout {layout}")
    cases = find_images(images_dir, log)
    labels_dir = find_child(input_dir, "labels", want_dir=True)
    labels = find_labels(labels_dir, cases, allow_dirs=kind == "dicom", log=log)
    if not cases:
        what = "NIfTI volume (.nii/.nii.gz)" if kind == "nifti" else "DICOM series folder"
        raise DataError(images_dir, f"nothing usable: no {what} in images/; expected the {kind} layout {layout}")

    table = read_classes_csv(Path(classes_csv) if classes_csv is not None else input_dir / "classes.csv")
    classes = list(KNOWN_CLASSES) if "normal" in table.classes.values() else ["benign", "malignant"]
    ctx = {"kind": kind, "axis": axis, "negative_slices": negative_slices, "seed": seed, "output_dir": output_dir,
           "classes": classes}
    ids = IdMaker()
    items: list[dict[str, Any]] = []
    n_volumes = 0
    for case in progress(sorted(cases, key=natural_key), f"prepare {kind}", unit="volume"):
        image_path = cases[case]
        try:
            class_name, label, group = _case_record(case, image_path, table, labels.get(case, []), classes)
            case_items = _convert_case(case, ids(case), image_path, label, class_name, group, ctx)
        except DataError as e:
            log.skip(e)
            continue
        items.extend(case_items)
        n_volumes += 1

    plane = PLANES[axis]
    description = (
        f"Breast MRI volumes ({kind.upper() if kind == 'dicom' else 'NIfTI'}) from {input_dir}, sliced along axis "
        f"{axis} ({plane} in RAS orientation): every lesion slice plus up to {negative_slices} lesion-free slice(s) "
        "per volume; intensities normalised per volume (1st-99th percentile -> [0, 1]); 2D NIfTI slices keep the world "
        "geometry."
    )
    return PreparedDataset(
        name=input_dir.resolve().name or kind,
        modality="MR",
        classes=classes,
        items=items,
        skipped=log,
        description=description,
        extra={
            "source_format": kind,
            "slicing": {
                "axis": axis,
                "plane": plane,
                "orientation": "closest canonical RAS+",
                "negative_slices": negative_slices,
                "seed": seed,
                "normalisation": "per volume, 1st-99th percentile -> [0, 1], clipped, float32",
                "volumes": n_volumes,
            },
        },
    )


def convert_nifti(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    log: SkipLog,
    *,
    classes_csv: str | os.PathLike | None = None,
    axis: int = 2,
    negative_slices: int = 2,
    seed: int = 0,
) -> PreparedDataset:
    """Convert NIfTI volumes + labels (layout in the module docstring) into 2D NIfTI slices and datalist items.

    Args:
        input_dir: the dataset folder (``images/``, ``labels/``, ``classes.csv``).
        output_dir: where ``images/`` and ``masks/`` with the slices go.
        log: records skipped inputs (raises in strict mode).
        classes_csv: the ``case,class`` table (default ``input_dir/classes.csv``).
        axis: slicing axis of the RAS-reoriented volume: 2 axial (default), 1 coronal, 0 sagittal.
        negative_slices: lesion-free slices kept per volume.
        seed: seed of the choice of lesion-free slices.

    Returns:
        the ``PreparedDataset`` (modality ``MR``); ``prepare`` assigns the folds.

    Raises:
        DataError: empty input, no ``images/`` folder or no volume in it, classes CSV missing or without the
            ``case``/``class`` columns; in strict mode, the first bad input.
        ValueError: bad ``axis`` or ``negative_slices``.
    """
    return _convert("nifti", input_dir, output_dir, log, classes_csv, axis, negative_slices, seed, nifti_images)


# the same keyword-only signature as convert_nifti, spelled out on purpose: users and the CLI call both by name, and
# **kwargs would hide the options from help() and type checkers
def convert_dicom(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    log: SkipLog,
    *,
    classes_csv: str | os.PathLike | None = None,
    axis: int = 2,
    negative_slices: int = 2,
    seed: int = 0,
) -> PreparedDataset:
    """Convert DICOM series (``images/<case>/``) + labels (NIfTI or DICOM series) into 2D NIfTI slices and items.

    Same options, outputs and errors as ``convert_nifti``; see the module docstring for the layout and how a series is
    read (``read_dicom_series``).
    """
    return _convert("dicom", input_dir, output_dir, log, classes_csv, axis, negative_slices, seed, dicom_images)
