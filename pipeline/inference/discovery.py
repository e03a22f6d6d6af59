"""Input discovery for ``bmtl predict``: the files (and DICOM series folders) under a path, each with its kind
and a unique output name."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.data.dicom import MEDIA_STORAGE_DIRECTORY, float_list, not_an_image, number_of_frames
from pipeline.data.io import IMAGE_EXTENSIONS
from pipeline.data.sources.common import split_mask_name
from pipeline.data.volume import DETACHED_DATA_EXTENSIONS, METAIMAGE_EXTENSIONS, NRRD_EXTENSIONS
from pipeline.prediction_journal import check_output_location

__all__ = ["InputItem", "discover_inputs", "image_inputs", "NIFTI_SUFFIXES", "NRRD_SUFFIXES",
           "METAIMAGE_SUFFIXES", "DICOM_SUFFIXES"]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
NRRD_SUFFIXES = NRRD_EXTENSIONS   # one definition each, with the volume readers'
METAIMAGE_SUFFIXES = METAIMAGE_EXTENSIONS
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


@dataclass
class InputItem:
    """One input: a file, a frame of a multi-frame DICOM file (a cine loop), or a DICOM series folder."""

    path: Path
    kind: str  # raster | dicom | dicom_series | nifti | nrrd | metaimage | unsupported | mask (skipped)
    name: str  # output name stem (relative to the input root, without extension)
    problem: str | None = None
    frame: int | None = None  # the frame of a multi-frame DICOM file (0-based)
    relative: str = ""  # the path relative to the input root (the file's name for a single file): the table's file

    @property
    def shown(self) -> str:
        """How the table names the input: its path relative to the input root (the path itself when unknown)."""
        return self.relative or str(self.path)


def _has_detached_header(path: Path) -> bool:
    """Whether a .raw/.zraw/.raw.gz file sits beside a header of the same name (``case.mhd`` for ``case.raw``)."""
    name = path.name
    stem = name[: -len(next(s for s in DETACHED_DATA_EXTENSIONS if name.lower().endswith(s)))]
    return any((path.parent / (stem + s)).exists() for s in (".mhd", ".nhdr", ".MHD", ".NHDR"))


def _nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _stem(relative: Path) -> str:
    name = relative.name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return str(relative.with_name(name[: -len(suffix)]))
    return str(relative.with_suffix("")) if relative.suffix else str(relative)


def _dicom_header(path: Path, force: bool = False) -> Any | None:
    """The DICOM header of ``path`` (no pixels), or None when it is not a DICOM file (``force``: also a data set
    without the preamble and file meta information, pydicom's ``force``)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True, force=force)
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError, KeyError):
        return None
    except Exception:  # pydicom raises many types for broken headers
        return None


def _is_volume_slice(ds: Any, frames: int) -> bool:
    """A DICOM file that belongs to a slice series (MR/CT-like geometry), not a 2D image of its own."""
    samples = (float_list(ds, "SamplesPerPixel") or [1.0])[0] or 1.0   # lenient: unreadable or 0 is grey
    return (
        ds.get("ImagePositionPatient") is not None
        and ds.get("ImageOrientationPatient") is not None
        and samples == 1
        and frames == 1
        and str(ds.get("Modality", "")).upper() != "US"
    )


def _dicom_items(p: Path, stem: str, ds: Any, frame: int | None) -> list[InputItem]:
    """A DICOM image file as inputs: itself, or one input per frame of a multi-frame file (``frame``: that one)."""
    try:
        frames = number_of_frames(ds)
    except ValueError as e:
        return [InputItem(p, "unsupported", stem, f"malformed DICOM header: {e}")]
    if frames == 1:
        return [InputItem(p, "dicom", stem)]
    if frame is None:
        return [InputItem(p, "dicom", f"{stem}_frame{k:03d}", frame=k) for k in range(frames)]
    if not 0 <= frame < frames:
        return [InputItem(p, "unsupported", stem, f"frame {frame} asked, the file has {frames} frames "
                                                  f"(0 to {frames - 1})")]
    return [InputItem(p, "dicom", f"{stem}_frame{frame:03d}", frame=frame)]


def _files_under(root: Path, skip: Path | None) -> tuple[list[Path], list[Path], list[tuple[Path, OSError]]]:
    """The files under ``root`` (hidden ones and anything under ``skip`` left out), the broken symbolic links, and the
    folders that could not be listed (with the error).

    Symbolic links to folders are followed (data are often organised with them), each real folder once, so a link
    loop ends; pathlib's ``rglob`` would not follow them at all and would drop broken links without a word, and
    ``os.walk`` drops an unreadable folder without a word unless given ``onerror``.
    """
    files, broken, seen, unreadable = [], [], set(), []

    def unlisted(error: OSError) -> None:
        unreadable.append((Path(error.filename) if error.filename else root, error))

    for folder, dirs, names in os.walk(root, followlinks=True, onerror=unlisted):
        real = os.path.realpath(folder)
        if real in seen or (skip is not None and (Path(real) == skip or skip in Path(real).parents)):
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(folder) / name
            if name.startswith("."):
                continue
            if path.is_file():
                files.append(path)
            elif path.is_symlink() and not path.exists():
                broken.append(path)
    return sorted(files), sorted(broken), sorted(unreadable, key=lambda u: str(u[0]))


def _frames_or_unknown(ds: Any) -> int:
    """``NumberOfFrames``, or -1 when it cannot be read."""
    try:
        return number_of_frames(ds)
    except ValueError:
        return -1   # not a series slice: _dicom_items names the problem


def _other_file(p: Path, name: str, frame: int | None, in_folder: bool) -> list[InputItem] | None:
    """The inputs of a file that is no raster, NIfTI, NRRD or MetaImage file: a DICOM image (one input per frame of
    a multi-frame file), none for a DICOMDIR index, an ``unsupported`` item (a non-image DICOM object, an unknown
    type); None for a slice of a DICOM series in a folder (the series is one input)."""
    suffix = p.suffix.lower()
    maybe_dicom = suffix in DICOM_SUFFIXES or not suffix or suffix[1:].isdigit()
    ds = _dicom_header(p) if maybe_dicom else None
    if ds is None and suffix in DICOM_SUFFIXES:
        # a data set written without the 128-byte preamble and file meta (as some RT systems do): read forcibly
        # only to recognise an object that is not an image; anything else is the reader's to name
        forced = _dicom_header(p, force=True)
        if forced is not None and (problem := not_an_image(forced)) is not None:
            return [InputItem(p, "unsupported", name, problem)]
    if ds is None:
        if suffix in DICOM_SUFFIXES:
            return [InputItem(p, "dicom", name)]  # the reader names the problem
        what = f"'{p.suffix}'" if p.suffix else "without extension (and not DICOM)"
        return [InputItem(p, "unsupported", name, f"unsupported file type {what}: expected PNG, JPEG, BMP, TIFF, "
                                                  "DICOM, NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) or MetaImage "
                                                  "(.mha, .mhd)")]
    if str(ds.get("SOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY or p.name.upper() == "DICOMDIR":
        return []  # an index of the files, not an image
    if (problem := not_an_image(ds)) is not None:
        return [InputItem(p, "unsupported", name, problem)]
    if in_folder and _is_volume_slice(ds, _frames_or_unknown(ds)):
        return None
    return _dicom_items(p, name, ds, frame)


def _name_outputs(items: list[InputItem], base: Path) -> None:
    """Give every input a unique output name (``a.png`` and ``a.jpg`` side by side keep both outputs) and its path
    relative to ``base`` (the CSV's ``file`` column)."""
    used: set[str] = set()
    for item in items:
        name = item.name
        if name in used:
            name = f"{name}_{item.path.name.split('.', 1)[-1].replace('.', '_')}"
        k = 2
        while name in used:
            name, k = f"{item.name}_{k}", k + 1
        used.add(name)
        item.name = name
        relative = item.path.relative_to(base)
        item.relative = str(relative) if str(relative) != "." else item.path.name


def discover_inputs(path: str | os.PathLike, exclude: str | os.PathLike | None = None,
                    frame: int | None = None) -> list[InputItem]:
    """The inputs under ``path``: the file itself, or every file of a folder (recursive; hidden files and anything
    under ``exclude``, e.g. the output folder, skipped). Each item's ``relative`` is its path relative to ``path``
    (the file's name when ``path`` is a file).

    Symbolic links to folders are followed (each real folder once); a broken link and a folder that cannot be listed
    (no permission, I/O error) are ``unsupported`` items.
    DICOM files of one series in one folder (slice geometry, two or more files) make one ``dicom_series`` input;
    other DICOM files are 2D images, and a multi-frame one (an ultrasound cine loop) makes one input per frame
    (``frame``: only that frame, 0-based; a file with fewer frames gets an error row). DICOM objects that are not
    images (dose, segmentation, structure set, MOSAIC, enhanced multi-frame volumes: ``not_an_image``) and files of
    other types become ``unsupported`` items (an error row each). In a folder, files named like a lesion mask
    (``*_mask.*``, ``*_mask_1.*``: BUSI's and our own outputs' naming) become ``mask`` items: listed (a ``skipped``
    row each), not predicted; a mask file given on its own is predicted.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a negative ``frame``; ``exclude`` is the input folder or holds it (``check_output_location``).
    """
    if frame is not None and int(frame) < 0:
        raise ValueError(f"frame must be 0 or more (0-based), got {frame}")
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"input {root} not found")
    if exclude is not None:
        check_output_location(root, exclude)
    skip = Path(exclude).resolve() if exclude is not None else None
    files, broken, unreadable = ([root], [], []) if root.is_file() else _files_under(root, skip)
    base = root.parent if root.is_file() else root
    items: list[InputItem] = [InputItem(p, "unsupported", _stem(p.relative_to(base)),
                                        f"broken symbolic link (its target {os.readlink(p)} does not exist)")
                              for p in broken]
    for folder, error in unreadable:   # its files are unknown: one row for the folder, not a silent omission
        name = str(folder.relative_to(base)) if folder != base else folder.name
        why = f"{type(error).__name__}: {error.strerror or error}"
        items.append(InputItem(folder, "unsupported", name, f"unreadable folder, its files are not predicted ({why})"))
    series: dict[Path, list[Path]] = {}
    for p in files:
        rel = p.relative_to(base)
        suffix = p.suffix.lower()
        if root.is_dir() and split_mask_name(p) is not None:   # the pairing rule of `bmtl prepare`
            items.append(InputItem(p, "mask", _stem(rel), "named like a lesion mask (*_mask.*): not predicted; "
                                                          "predict the file on its own to override"))
        elif suffix in IMAGE_EXTENSIONS:
            items.append(InputItem(p, "raster", _stem(rel)))
        elif _nifti(p):
            items.append(InputItem(p, "nifti", _stem(rel)))
        elif suffix in NRRD_SUFFIXES:
            items.append(InputItem(p, "nrrd", _stem(rel)))
        elif suffix in METAIMAGE_SUFFIXES:
            items.append(InputItem(p, "metaimage", _stem(rel)))
        elif root.is_dir() and p.name.lower().endswith(DETACHED_DATA_EXTENSIONS) and _has_detached_header(p):
            continue
        else:
            found = _other_file(p, _stem(rel), frame, in_folder=root.is_dir())
            if found is None:
                series.setdefault(p.parent, []).append(p)  # read_dicom_series refuses a folder of several series
            else:
                items.extend(found)
    for folder, members in series.items():
        if len(members) == 1:
            items.append(InputItem(members[0], "dicom", _stem(members[0].relative_to(base))))
        else:
            rel = folder.relative_to(base) if folder != base else Path(folder.name)
            items.append(InputItem(folder, "dicom_series", str(rel)))
    items.sort(key=lambda i: (str(i.path), -1 if i.frame is None else i.frame))
    _name_outputs(items, base)
    return items


def image_inputs(path: str | os.PathLike, kind: str) -> list[dict[str, str]]:
    """``{"image": file}`` for every input of ``kind`` under ``path`` that is one 2D image: the data of a bundle's
    declarative ``run`` workflow, which reads each file with the bundle's ``LoadImaged`` and so takes 2D images only
    (``"raster"``: PNG/JPEG/BMP/TIFF; ``"nifti"``: 2D NIfTI images, as ``bmtl prepare`` writes MRI slices). 3D
    volumes, DICOM and everything else are left to ``bmtl predict`` (a NIfTI file left out is logged).

    Raises:
        ValueError: ``kind`` is not ``"raster"`` or ``"nifti"``.
    """
    import logging

    import nibabel as nib

    if kind not in ("raster", "nifti"):
        raise ValueError(f"kind must be 'raster' or 'nifti', got {kind!r}")
    files = []
    for item in discover_inputs(path):
        if item.kind != kind:
            continue
        if kind == "nifti":
            try:
                ndim = len(nib.load(str(item.path)).shape)
            except Exception as e:   # nibabel raises many types for broken headers
                ndim = f"unreadable ({type(e).__name__}: {e})"
            if ndim != 2:
                logging.getLogger(__name__).warning("%s: not a 2D NIfTI image (%s dimensions): left to `bmtl "
                                                    "predict`", item.path, ndim)
                continue
        files.append({"image": str(item.path)})
    return files
