"""The input layouts of ``bmtl prepare --source nifti|dicom`` (see ``pipeline.data.sources.volumes``): each case's
image volume or DICOM series folder, its label found by name, and the ``case,class`` table."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pipeline.data.datalist import SkipLog
from pipeline.data.io import DataError
from pipeline.data.sources.common import natural_key, read_table
from pipeline.data.volume import DETACHED_DATA_EXTENSIONS, volume_stem

__all__ = ["LABEL_SUFFIXES", "NIFTI_LAYOUT", "DICOM_LAYOUT", "read_classes_csv", "nifti_images", "dicom_images",
           "find_labels"]

LABEL_SUFFIXES = ("_seg", "_label", "_mask")
# not volumes, not worth a skip row: notes and tables, and the pixel data of a detached header (.nhdr, .mhd)
_SIDECARS = (".json", ".txt", ".md", ".csv", ".tsv", ".bval", ".bvec", *DETACHED_DATA_EXTENSIONS)
NIFTI_LAYOUT = "images/<case>.nii.gz + labels/<case>.nii.gz + classes.csv (case,class)"
DICOM_LAYOUT = "images/<case>/ (one DICOM series per folder) + labels/<case>.nii.gz or labels/<case>/ + classes.csv"


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")


# ---------------------------------------------------------------------------------------------------- class table
@dataclass
class _ClassTable:
    path: Path
    classes: dict[str, str]  # case -> class name as written (lower case)
    patients: dict[str, str]
    conflicts: dict[str, list[str]]

    def lookup(self, case: str) -> str | None:
        if case in self.classes:
            return case
        lowered = {c.lower(): c for c in self.classes}
        return lowered.get(case.lower())


def read_classes_csv(path: str | os.PathLike) -> _ClassTable:
    """Read the ``case,class`` table (optional ``patient`` column; headers compared ignoring case and spaces).

    Raises:
        DataError: naming the CSV: missing, unreadable, or without the ``case``/``class`` columns (all missing ones
            are named).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "classes CSV not found: expected a CSV with columns case,class (class: benign, "
                              "malignant or normal); give its path with classes_csv= (--classes-csv)")
    table = read_table(path, {"case": ("case id", "case_id"), "class": ()}, optional={"patient": ("patient id",)})
    classes: dict[str, str] = {}
    patients: dict[str, str] = {}
    conflicts: dict[str, list[str]] = defaultdict(list)
    for row in table.to_dict("records"):
        case, name = row["case"], row["class"].strip().lower()
        if not case:
            continue
        if case in classes and classes[case] != name:
            conflicts[case] += [classes[case], name]
        classes[case] = name
        if row.get("patient"):
            patients[case] = row["patient"]
    return _ClassTable(path, classes, patients, dict(conflicts))


# ----------------------------------------------------------------------------------------------------- discovery
def nifti_images(images_dir: Path, log: SkipLog) -> dict[str, Path]:
    """Case -> volume file (NIfTI or NRRD) in ``images_dir``; folders, other files and duplicate cases skipped."""
    found: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(images_dir.iterdir(), key=natural_key):
        if _hidden(path):
            continue
        if path.is_dir():
            log.skip(DataError(path, "a folder inside images/: the NIfTI layout expects files images/<case>.nii.gz "
                                     "(DICOM series folders: use the 'dicom' source)"))
            continue
        stem = volume_stem(path)
        if stem is None:
            if not path.name.lower().endswith(_SIDECARS):
                log.skip(DataError(path, "not a NIfTI, NRRD or MetaImage volume (.nii, .nii.gz, .nrrd, .nhdr, "
                                         ".mha, .mhd): convert it to NIfTI"))
            continue
        found[stem].append(path)
    return _unique(found, "image", log)


def dicom_images(images_dir: Path, log: SkipLog) -> dict[str, Path]:
    """Case -> series folder in ``images_dir``; files directly inside it skipped."""
    found: dict[str, list[Path]] = {}
    for path in sorted(images_dir.iterdir(), key=natural_key):
        if _hidden(path):
            continue
        if path.is_dir():
            found[path.name] = [path]
        elif volume_stem(path) is not None:
            log.skip(DataError(path, "NIfTI, NRRD or MetaImage file in the DICOM layout: use the 'nifti' "
                                     "source for NIfTI, NRRD and MetaImage volumes"))
        elif not path.name.lower().endswith(_SIDECARS):
            log.skip(DataError(path, "file directly inside images/: the DICOM layout expects one folder per case "
                                     "(images/<case>/ holding the series)"))
    return _unique(found, "image", log)


def _unique(found: dict[str, list[Path]], what: str, log: SkipLog) -> dict[str, Path]:
    out = {}
    for case, paths in found.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            for p in paths:
                log.skip(DataError(p, f"several {what}s for case {case!r} ({names}): keep one"))
        else:
            out[case] = paths[0]
    return out


def _label_case(stem: str, cases: dict[str, Path]) -> str | None:
    lowered = {c.lower(): c for c in cases}
    for candidate in [stem] + [stem[: -len(s)] for s in LABEL_SUFFIXES if stem.lower().endswith(s)]:
        if candidate in cases:
            return candidate
        if candidate.lower() in lowered:
            return lowered[candidate.lower()]
    return None


def find_labels(labels_dir: Path | None, cases: dict[str, Path], allow_dirs: bool,
                log: SkipLog) -> dict[str, list[Path]]:
    """Each case's label files (or DICOM folders with ``allow_dirs``) under ``labels_dir``, matched by name:
    ``<case>`` or ``<case>`` + one of ``LABEL_SUFFIXES`` (case-insensitive); a label without an image is skipped."""
    labels: dict[str, list[Path]] = defaultdict(list)
    if labels_dir is None:
        return labels
    for path in sorted(labels_dir.iterdir(), key=natural_key):
        if _hidden(path):
            continue
        if path.is_dir():
            if not allow_dirs:
                log.skip(DataError(path, "a folder inside labels/: the NIfTI layout expects files "
                                         "labels/<case>.nii.gz"))
                continue
            stem = path.name
        else:
            stem = volume_stem(path)
            if stem is None:
                if not path.name.lower().endswith(_SIDECARS):
                    log.skip(DataError(path, "not a NIfTI, NRRD or MetaImage label (.nii, .nii.gz, .nrrd, .nhdr, "
                                             ".mha, .mhd)"
                                             + (" nor a DICOM series folder" if allow_dirs else "")))
                continue
        case = _label_case(stem, cases)
        if case is None:
            log.skip(DataError(path, f"label without an image: no image for case {stem!r} in images/ (labels are "
                                     f"matched by name: <case>, <case>{', <case>'.join(LABEL_SUFFIXES)})"))
        else:
            labels[case].append(path)
    return labels
