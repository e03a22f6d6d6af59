"""One DICOM series folder read as a 3D ``Volume`` with its RAS+ affine (``read_dicom_series``): the slices checked to
be one grey volume, placed by their positions (or their instance numbers), their pixels read through the modality
LUT. Used by ``bmtl prepare --source dicom`` and by ``bmtl predict`` for series folders."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.dicom import (
    DECODER_HINT,
    LPS_TO_RAS,
    check_frame_size,
    dicom_files,
    float_list,
    geometry_problem,
    modality_values,
    number_of_frames,
    pixel_spacing,
    slice_spacing,
    spacing_problem,
)
from pipeline.data.io import DataError
from pipeline.data.volume import Volume, check_affine, check_finite

__all__ = ["read_dicom_series"]


def _check_series(folder: Path, found: list[tuple[Path, Any]]) -> None:
    """Refuse what cannot be one grey volume: several series, files without pixels, multi-frame or colour files,
    mixed slice sizes, a slice position or orientation that cannot be read."""
    series = Counter(str(ds.get("SeriesInstanceUID", "")) for _, ds in found)
    if len(series) > 1:
        descriptions = sorted({str(ds.get("SeriesDescription", "?")) for _, ds in found})
        raise DataError(folder, f"folder holds {len(series)} DICOM series ({'; '.join(descriptions[:5])}): put one "
                                "series per folder")
    pixel_keys = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
    no_pixels = [p for p, ds in found if not any(k in ds for k in pixel_keys)]
    if no_pixels:
        raise DataError(folder, f"DICOM series without pixel data: {len(no_pixels)} of {len(found)} file(s) have no "
                                f"PixelData (e.g. {no_pixels[0].name})")
    frames = []
    for path, ds in found:
        try:
            frames.append(number_of_frames(ds))
        except ValueError as e:
            raise DataError(path, f"malformed DICOM header: {e}") from None
    if max(frames) > 1:
        raise DataError(folder, f"multi-frame (enhanced) DICOM ({max(frames)} frames in one file) is not supported: "
                                "convert the series to NIfTI (e.g. with dcm2niix) and use the NIfTI layout")
    for path, ds in found:
        check_frame_size(ds, path)
    if any(int(ds.get("SamplesPerPixel", 1) or 1) != 1 for _, ds in found):
        raise DataError(folder, "colour DICOM images (SamplesPerPixel > 1) are not supported: expected grey MR slices")
    sizes = Counter((int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)) for _, ds in found)
    if len(sizes) > 1:
        shown = ", ".join(f"{c}x{r} ({n} file{'s' if n > 1 else ''})" for (r, c), n in sizes.most_common())
        raise DataError(folder, f"mixed slice sizes in the series (columns x rows): {shown}; expected one size")
    for path, ds in found:   # a position read as absent would place the volume at the origin, silently
        problem = geometry_problem(ds)
        if problem:
            raise DataError(path, f"malformed DICOM header: {problem}; the slices cannot be placed in the patient")


@dataclass
class _Placement:
    """Where the slices go: their order in the array, the directions of the array's axes (LPS), the step from one
    slice to the next and the first slice's position; ``thickness_known`` False when the step is a 1 mm guess."""

    order: np.ndarray
    row_dir: np.ndarray
    col_dir: np.ndarray
    step: np.ndarray
    origin: np.ndarray
    sorted_by: str
    thickness_known: bool = True


def _unit_directions(iop: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    row_dir, col_dir = np.asarray(iop[:3], dtype=float), np.asarray(iop[3:], dtype=float)
    return row_dir / np.linalg.norm(row_dir), col_dir / np.linalg.norm(col_dir)


def _place_by_position(folder: Path, found: list[tuple[Path, Any]], geometry: list[tuple[Any, Any]]) -> _Placement:
    """Slices ordered along the slice normal by ``ImagePositionPatient`` (every slice has position and orientation)."""
    iops = np.array([iop for _, iop in geometry])
    if not np.allclose(iops, iops[0], atol=1e-4):
        raise DataError(folder, "slices have different orientations (ImageOrientationPatient): not one volume")
    row_dir, col_dir = _unit_directions(iops[0])
    normal = np.cross(row_dir, col_dir)
    positions = np.array([pos for pos, _ in geometry])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    steps = np.diff(along[order])
    numbers = [ds.get("InstanceNumber") for _, ds in found]
    if len(order) > 1 and all(isinstance(n, int) for n in numbers):
        ranks = np.array(numbers)[order]
        if np.all(np.diff(ranks) < 0):  # keep the acquisition order when it runs against the normal
            order = order[::-1]
    if steps.size and steps.min() < 1e-3:
        n_dup = int((steps < 1e-3).sum())
        raise DataError(folder, f"{n_dup + 1} or more slices share a position: the folder holds several volumes "
                                "(e.g. DCE phases, echoes or repeats); put one volume per folder")
    if steps.size > 1 and steps.max() - steps.min() > 0.05 * steps.mean():
        raise DataError(folder, f"uneven slice spacing ({steps.min():.3g} to {steps.max():.3g} mm between "
                                "neighbours): missing slices or a gap; a volume needs evenly spaced slices")
    if len(order) > 1:
        step = (positions[order[-1]] - positions[order[0]]) / (len(order) - 1)
        return _Placement(order, row_dir, col_dir, step, positions[order[0]], "position")
    thickness = slice_spacing(found[0][1])
    return _Placement(order, row_dir, col_dir, normal * (thickness or 1.0), positions[order[0]], "position",
                      thickness is not None)


def _place_by_instance_number(folder: Path, found: list[tuple[Path, Any]],
                              geometry: list[tuple[Any, Any]]) -> _Placement:
    """Slices ordered by ``InstanceNumber`` (some lack position or orientation): the first slice's orientation (or
    the identity) and the slice spacing of the header give the geometry."""
    numbers = [ds.get("InstanceNumber") for _, ds in found]
    if any(n is None or n == "" for n in numbers):
        raise DataError(folder, "cannot order the slices: some have no ImagePositionPatient/"
                                "ImageOrientationPatient and no InstanceNumber")
    try:
        numbers = [int(n) for n in numbers]
    except (TypeError, ValueError):   # a malformed IS value is this series' error, not the whole run's
        shown = ", ".join(repr(str(n)) for n in numbers[:5])
        raise DataError(folder, f"cannot order the slices: InstanceNumber values ({shown}) are not all integers "
                                "and the slices have no ImagePositionPatient/ImageOrientationPatient") from None
    if len(set(numbers)) != len(numbers):
        raise DataError(folder, "cannot order the slices: repeated InstanceNumber and no slice positions")
    order = np.argsort(numbers, kind="stable")
    pos0, iop0 = geometry[order[0]]
    row_dir, col_dir = _unit_directions(iop0 if iop0 is not None and len(iop0) == 6 else [1, 0, 0, 0, 1, 0])
    origin = np.array(pos0 if pos0 is not None and len(pos0) == 3 else [0.0, 0.0, 0.0])
    thickness = slice_spacing(found[0][1])
    return _Placement(order, row_dir, col_dir, np.cross(row_dir, col_dir) * (thickness or 1.0), origin,
                      "InstanceNumber", thickness is not None)


def _series_pixels(folder: Path, found: list[tuple[Path, Any]], order: np.ndarray, what: str) -> np.ndarray:
    """The slices' modality values stacked in ``order`` as ``(Columns, Rows, slices)``; a MONOCHROME1 image series
    inverted over the whole volume (float32 for images, float64 otherwise)."""
    planes = []
    for index in order:
        path, ds = found[index]
        try:
            pixels = np.asarray(ds.pixel_array, dtype=np.float64)
        except Exception as e:
            syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
            raise DataError(path, f"cannot decode the pixel data (transfer syntax {syntax}; {type(e).__name__}: {e}); "
                                  f"{DECODER_HINT}") from None
        planes.append(modality_values(pixels, ds, path).T)  # (Columns, Rows)
    data = np.stack(planes, axis=-1)
    if what == "image" and any(str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1" for _, ds in found):
        data = data.max() + data.min() - data   # bright = low values: inverted over the volume, as one image
    data = data.astype(np.float32) if what == "image" else data
    check_finite(data, folder, what)
    return data


def read_dicom_series(folder: str | os.PathLike, what: str = "image") -> Volume:
    """Read one DICOM series (a folder, searched recursively) as a 3D volume with its RAS+ affine.

    Slices are sorted by ``ImagePositionPatient`` projected on the slice normal (the cross product of the two
    ``ImageOrientationPatient`` directions; in descending order when ``InstanceNumber`` runs that way, so the array
    keeps the acquisition order), or by ``InstanceNumber`` when any slice lacks position or orientation
    (then the orientation of the first slice, or the identity, and ``SpacingBetweenSlices``/``SliceThickness`` give the
    geometry). In each slice the DICOM column index becomes array axis 0 and the row index axis 1 (``(Columns, Rows,
    slices)``), so the affine's columns are the row direction times the column spacing, the column direction times the
    row spacing, and the step from one slice to the next. The Modality LUT or ``RescaleSlope``/``RescaleIntercept``
    apply per slice (pydicom's ``apply_modality_lut``, as for a 2D DICOM), and a MONOCHROME1 image series is inverted
    over the whole volume. Files that are not DICOM and DICOMDIR files are ignored.

    Returns:
        a ``Volume`` (float32 for images, float64 otherwise) with ``meta`` holding ``SeriesDescription``,
        ``PatientID``, ``SeriesInstanceUID``, ``n_files`` and ``spacing_known`` (False when ``PixelSpacing`` or the
        slice spacing is absent or unreadable: the affine then assumes 1 mm, which must not be reported as mm).

    Raises:
        DataError: no DICOM file, several series, files without pixel data, multi-frame or colour images, mixed slice
            sizes or orientations, several slices at one position (several volumes in one folder), uneven slice
            spacing, undecodable pixel data, a malformed NumberOfFrames or rescale value, NaN/inf values.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "DICOM series folder not found")
    found = dicom_files(folder)
    _check_series(folder, found)
    geometry = [(float_list(ds, "ImagePositionPatient"), float_list(ds, "ImageOrientationPatient"))
                for _, ds in found]
    first = found[0][1]
    # a PixelSpacing that is absent or cannot be read (e.g. a decimal comma) leaves the spacing unknown: the affine
    # needs one (1 mm), but meta["spacing_known"] says not to report millimetres
    spacings = {tuple(round(v, 4) for v in s) if s else None for s in (pixel_spacing(ds) for _, ds in found)}
    if len(spacings) > 1:
        raise DataError(folder, "mixed pixel spacings in the series "
                                f"({', '.join(sorted(str(s or 'unreadable') for s in spacings))}): not one volume")
    spacing_rc = pixel_spacing(first)
    placed = (_place_by_position(folder, found, geometry)
              if all(pos is not None and len(pos) == 3 and iop is not None and len(iop) == 6 for pos, iop in geometry)
              else _place_by_instance_number(folder, found, geometry))
    spacing_known = spacing_rc is not None and placed.thickness_known
    spacing_rc = spacing_rc or (1.0, 1.0)
    data = _series_pixels(folder, found, placed.order, what)

    lps = np.eye(4)
    lps[:3, 0] = placed.row_dir * spacing_rc[1]  # along a row: the column index grows, spacing between columns
    lps[:3, 1] = placed.col_dir * spacing_rc[0]
    lps[:3, 2] = placed.step
    lps[:3, 3] = placed.origin
    affine = LPS_TO_RAS @ lps
    check_affine(affine, folder)
    meta = {
        "SeriesDescription": str(first.get("SeriesDescription", "")),
        "PatientID": str(first.get("PatientID", "")),
        "SeriesInstanceUID": str(first.get("SeriesInstanceUID", "")),
        "n_files": len(found),
        "sorted_by": placed.sorted_by,
        "spacing_known": spacing_known,
    }
    if not spacing_known:
        meta["spacing_problem"] = spacing_problem(first)
    return Volume(data, affine, folder, meta)
