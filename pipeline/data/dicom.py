"""DICOM: what a file is (``not_an_image``, ``number_of_frames``), header values read as vendors write them
(``header_number``, ``float_list``, ``pixel_spacing``, ``dicom_spacing``), pixel values (``modality_values``) and the
DICOM files of a folder; ``dicom_series.py`` reads one series folder as a 3D volume with them. Used by ``bmtl prepare
--source dicom`` and by ``bmtl predict``'s discovery and readers.

Header values: pydicom keeps a value it cannot convert (e.g. ``"0,5"`` in a DS, ``"2.5"`` in an IS) as text; the
lenient readers here give None for it (a spacing then stays unknown, never 1 mm by default), and the strict
``header_number`` names the file, the element and the value.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.io import DataError
from pipeline.data.volume import check_size

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
