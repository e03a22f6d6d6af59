"""DICOM: what a file is (``not_an_image``, ``number_of_frames``), header values read as vendors write them
(``header_number``, ``float_list``, ``pixel_spacing``, ``dicom_spacing``), and one series folder read as a 3D
``Volume`` (``read_dicom_series``). Used by ``bmtl prepare --source dicom`` and by ``bmtl predict``'s discovery and
readers.

Header values: pydicom keeps a value it cannot convert (e.g. ``"0,5"`` in a DS, ``"2.5"`` in an IS) as text; the
lenient readers here give None for it (a spacing then stays unknown, never 1 mm by default), and the strict
``header_number`` names the file, the element and the value.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.io import DataError
from pipeline.data.volume import Volume, check_affine, check_finite, check_size

__all__ = [
    "MEDIA_STORAGE_DIRECTORY",
    "DECODER_HINT",
    "number_of_frames",
    "not_an_image",
    "float_list",
    "spacing_problem",
    "geometry_problem",
    "header_number",
    "modality_values",
    "pixel_spacing",
    "slice_spacing",
    "dicom_spacing",
    "check_frame_size",
    "dicom_files",
    "read_dicom_series",
]

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR: an index of the files, not an image
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# pydicom decodes uncompressed, RLE, deflated, JPEG baseline and JPEG 2000 (Pillow) on its own
DECODER_HINT = ("JPEG-LS, 12-bit JPEG Extended and JPEG Lossless need the decoders of `pip install "
                "'breast-mtl[dicom]'` (pylibjpeg-libjpeg)")

# DICOM objects with pixel data that are not images of the patient (dose grids, label maps, ...) and objects
# without pixels (structure sets, plans, reports, presentation states, key objects)
_NOT_IMAGES = {
    "RTDOSE": "an RT dose grid",
    "SEG": "a segmentation object (labels, not an image)",
    "RTSTRUCT": "an RT structure set",
    "RTPLAN": "an RT plan",
    "RTRECORD": "an RT treatment record",
    "SR": "a structured report",
    "PR": "a presentation state",
    "KO": "a key object selection",
    "REG": "a registration object",
    "RWV": "real-world value mapping",
}


def number_of_frames(ds: Any) -> int:
    """The ``NumberOfFrames`` of a DICOM header (1 when absent), read leniently: vendors write values such as
    ``"2.0"``.

    Raises:
        ValueError: a value that is not a whole positive number (the message quotes it).
    """
    try:
        raw = ds.get("NumberOfFrames", None)
    except Exception as e:  # pydicom validates IS values when the element is accessed
        raise ValueError(f"unreadable NumberOfFrames ({e})") from None
    if raw in (None, ""):
        return 1
    try:
        value = float(str(raw).strip())
    except ValueError:
        raise ValueError(f"NumberOfFrames {str(raw)!r} is not a number") from None
    if not value.is_integer() or value < 1:
        raise ValueError(f"NumberOfFrames {str(raw)!r} is not a whole positive number")
    return int(value)


def not_an_image(ds: Any) -> str | None:
    """Why a DICOM object cannot be predicted as an image (None when it can): a non-image object (dose grid,
    segmentation, structure set, ...), a Siemens MOSAIC (slices tiled into one image) or an enhanced multi-frame
    volume."""
    modality = str(ds.get("Modality", "")).upper()
    if modality in _NOT_IMAGES:
        return f"DICOM {modality} object ({_NOT_IMAGES[modality]}), not an image to predict"
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if "MOSAIC" in image_type:
        return ("Siemens MOSAIC image (the slices of a volume tiled into one image): convert it to a series or NIfTI "
                "first (e.g. with dcm2niix)")
    if "PerFrameFunctionalGroupsSequence" in ds and modality != "US":
        return (f"enhanced multi-frame {modality or 'DICOM'} volume: convert it to one file per slice or to NIfTI "
                "first (e.g. with dcm2niix)")
    return None


def check_frame_size(ds: Any, path: str | os.PathLike) -> None:
    """Refuse, before decoding, a frame larger than Pillow lets a raster file be (``2 * Image.MAX_IMAGE_PIXELS``
    pixels: the same bound for DICOM as for PNG/JPEG).

    Raises:
        DataError: a frame that large, or Rows/Columns that are not numbers.
    """
    from PIL import Image

    rows, columns = header_number(ds, "Rows", 0, path), header_number(ds, "Columns", 0, path)
    samples = header_number(ds, "SamplesPerPixel", 1, path)
    check_size((rows, columns, samples), path, "DICOM frame", limit=2 * (Image.MAX_IMAGE_PIXELS or 2**32))


def float_list(ds: Any, keyword: str) -> list[float] | None:
    """The numbers of a (multi-valued) DS/IS element; None when it is absent, empty or cannot be read as numbers."""
    try:
        value = ds.get(keyword)
    except Exception:  # pydicom may convert (and fail) when the element is accessed
        return None
    if value is None or value == "":
        return None
    try:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            return [float(value)]
        return [float(v) for v in value]
    except (TypeError, ValueError):
        return None


def header_number(ds: Any, keyword: str, default: float, path: str | os.PathLike) -> float:
    """A single-valued number of the header (``default`` when absent or empty).

    Raises:
        DataError: a value that is not a number (the message names the element and quotes the value).
    """
    try:
        raw = ds.get(keyword)
    except Exception as e:
        raise DataError(path, f"malformed DICOM header: unreadable {keyword} ({e})") from None
    if raw is None or str(raw).strip() == "":
        return float(default)
    values = float_list(ds, keyword)
    if values is None or len(values) != 1:
        raise DataError(path, f"malformed DICOM header: {keyword} {str(raw)!r} is not a number")
    return values[0]


def pixel_spacing(ds: Any) -> tuple[float, float] | None:
    """``PixelSpacing`` (row spacing, column spacing) in mm; None when absent or unreadable (e.g. a decimal comma)."""
    values = float_list(ds, "PixelSpacing")
    if values is None or len(values) != 2 or not all(np.isfinite(v) and v > 0 for v in values):
        return None
    return (values[0], values[1])


def spacing_problem(ds: Any) -> str:
    """Why the pixel spacing of ``ds`` is unknown, in words that name the element and quote its stored value."""
    try:
        raw = ds.get("PixelSpacing")
    except Exception as e:  # pydicom may convert (and fail) when the element is accessed
        return f"PixelSpacing cannot be read ({e})"
    if raw is None or str(raw).strip() == "":
        return "no PixelSpacing"
    if pixel_spacing(ds) is None:
        stored = raw if isinstance(raw, (str, bytes)) or not hasattr(raw, "__iter__") else "\\".join(map(str, raw))
        return f"PixelSpacing '{stored}' is not two positive numbers (a decimal comma?)"
    return "a single slice without SliceThickness or SpacingBetweenSlices"


def geometry_problem(ds: Any) -> str | None:
    """Why the slice position or orientation of ``ds`` cannot be used although it is there (a value that is not 3
    resp. 6 numbers, e.g. written with a decimal comma), naming the element and quoting its stored value; None when
    both are readable or absent (an absent one is a known gap: the slices are ordered by InstanceNumber)."""
    for keyword, count in (("ImagePositionPatient", 3), ("ImageOrientationPatient", 6)):
        try:
            raw = ds.get(keyword)
        except Exception as e:  # pydicom may convert (and fail) when the element is accessed
            return f"{keyword} cannot be read ({e})"
        if raw is None or str(raw).strip() == "":
            continue
        values = float_list(ds, keyword)
        if values is None or len(values) != count or not np.all(np.isfinite(values)):
            stored = raw if isinstance(raw, (str, bytes)) or not hasattr(raw, "__iter__") else "\\".join(map(str, raw))
            return f"{keyword} '{stored}' is not {count} numbers (a decimal comma?)"
    return None


def modality_values(pixels: np.ndarray, ds: Any, path: str | os.PathLike) -> np.ndarray:
    """Stored pixel values to the modality's values (pydicom's ``apply_modality_lut``: the Modality LUT, else
    RescaleSlope/RescaleIntercept), as float.

    Raises:
        DataError: a rescale value that is not a number (a decimal comma: "0,5"); pydicom would fail without naming
            the element, and a guess would change every pixel.
    """
    import pydicom

    if int(pydicom.__version__.split(".")[0]) < 3:  # pragma: no cover - pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_modality_lut
    else:
        from pydicom.pixels import apply_modality_lut

    if "ModalityLUTSequence" not in ds:   # else the table applies and the rescale values are not used
        for keyword in ("RescaleSlope", "RescaleIntercept"):
            header_number(ds, keyword, 0.0, path)
    return np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)


def slice_spacing(ds: Any) -> float | None:
    """``SpacingBetweenSlices``, else ``SliceThickness``, in mm; None when neither can be read."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        values = float_list(ds, keyword)
        if values is not None and len(values) == 1 and np.isfinite(values[0]) and values[0] > 0:
            return values[0]
    return None


def dicom_spacing(ds: Any) -> tuple[float, float] | None:
    """(row spacing, column spacing) in mm of a 2D image: ``PixelSpacing``, else an ultrasound region calibrated in
    cm; None when neither can be read (no mm figures then)."""
    spacing = pixel_spacing(ds)
    if spacing is not None:
        return spacing
    regions = ds.get("SequenceOfUltrasoundRegions")
    if regions:
        region = regions[0]
        if int(region.get("PhysicalUnitsXDirection", 0) or 0) == 3 and int(
                region.get("PhysicalUnitsYDirection", 0) or 0) == 3:  # 3 = cm
            dx, dy = (float_list(region, key) for key in ("PhysicalDeltaX", "PhysicalDeltaY"))
            dx, dy = abs(dx[0]) if dx else 0.0, abs(dy[0]) if dy else 0.0
            if dx > 0 and dy > 0:
                return (dy * 10.0, dx * 10.0)
    return None


def dicom_files(folder: Path) -> list[tuple[Path, Any]]:
    """Every DICOM file under ``folder`` (recursive, natural order; hidden files, non-DICOM files and DICOMDIR
    indexes left out) with its dataset.

    Raises:
        DataError: an empty folder, no DICOM file, an unreadable DICOM file (named).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    from pipeline.data.sources.common import natural_key

    files = sorted((p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")), key=natural_key)
    if not files:
        raise DataError(folder, "series folder is empty: no file")
    found, not_dicom = [], 0
    for path in files:
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:
            not_dicom += 1
            continue
        except Exception as e:
            raise DataError(path, f"unreadable DICOM file ({type(e).__name__}: {e})") from None
        if str(ds.get("SOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY or path.name.upper() == "DICOMDIR":
            continue
        found.append((path, ds))
    if not found:
        raise DataError(folder, f"no DICOM file in the series folder ({not_dicom} file(s) that are not DICOM)")
    return found


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
    geometry = [(float_list(ds, "ImagePositionPatient"), float_list(ds, "ImageOrientationPatient"))
                for _, ds in found]
    first = found[0][1]
    # a PixelSpacing that is absent or cannot be read (e.g. a decimal comma) leaves the spacing unknown: the affine
    # needs one (1 mm), but meta["spacing_known"] says not to report millimetres
    spacings = {tuple(round(v, 4) for v in s) if s else None for s in (pixel_spacing(ds) for _, ds in found)}
    spacing_rc = pixel_spacing(first)
    spacing_known = spacing_rc is not None
    spacing_rc = spacing_rc or (1.0, 1.0)
    if len(spacings) > 1:
        raise DataError(folder, "mixed pixel spacings in the series "
                                f"({', '.join(sorted(str(s or 'unreadable') for s in spacings))}): not one volume")
    if all(pos is not None and len(pos) == 3 and iop is not None and len(iop) == 6 for pos, iop in geometry):
        iops = np.array([iop for _, iop in geometry])
        if not np.allclose(iops, iops[0], atol=1e-4):
            raise DataError(folder, "slices have different orientations (ImageOrientationPatient): not one volume")
        row_dir, col_dir = iops[0, :3], iops[0, 3:]
        row_dir, col_dir = row_dir / np.linalg.norm(row_dir), col_dir / np.linalg.norm(col_dir)
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
        origin = positions[order[0]]
        if len(order) > 1:
            step = (positions[order[-1]] - positions[order[0]]) / (len(order) - 1)
        else:
            thickness = slice_spacing(first)
            spacing_known = spacing_known and thickness is not None
            step = normal * (thickness or 1.0)
        sorted_by = "position"
    else:
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
        iop0 = iop0 if iop0 is not None and len(iop0) == 6 else [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        row_dir, col_dir = np.array(iop0[:3]), np.array(iop0[3:])
        row_dir, col_dir = row_dir / np.linalg.norm(row_dir), col_dir / np.linalg.norm(col_dir)
        normal = np.cross(row_dir, col_dir)
        origin = np.array(pos0 if pos0 is not None and len(pos0) == 3 else [0.0, 0.0, 0.0])
        thickness = slice_spacing(first)
        spacing_known = spacing_known and thickness is not None
        step = normal * (thickness or 1.0)
        sorted_by = "InstanceNumber"

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

    lps = np.eye(4)
    lps[:3, 0] = row_dir * spacing_rc[1]  # along a row: the column index grows, spacing between columns
    lps[:3, 1] = col_dir * spacing_rc[0]
    lps[:3, 2] = step
    lps[:3, 3] = origin
    affine = LPS_TO_RAS @ lps
    check_affine(affine, folder)
    meta = {
        "SeriesDescription": str(first.get("SeriesDescription", "")),
        "PatientID": str(first.get("PatientID", "")),
        "SeriesInstanceUID": str(first.get("SeriesInstanceUID", "")),
        "n_files": len(found),
        "sorted_by": sorted_by,
        "spacing_known": spacing_known,
    }
    if not spacing_known:
        meta["spacing_problem"] = spacing_problem(first)
    return Volume(data, affine, folder, meta)
