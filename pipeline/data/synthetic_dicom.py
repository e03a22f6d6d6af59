"""A volume written as a DICOM MR image series (one file per slice, with its patient geometry): the DICOM layout of
``make_mr_dataset(fmt="dicom")`` and the series the tests read back."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import atomic_path
from pipeline.data.dicom import LPS_TO_RAS

__all__ = ["write_dicom_series", "MR_IMAGE_STORAGE"]

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"

# every slice's constant attributes: a synthetic fat-suppressed 3D gradient-echo breast series, 16-bit grey
_SERIES_DEFAULTS: dict[str, Any] = {
    "SpecificCharacterSet": "ISO_IR 100", "ImageType": ["DERIVED", "SECONDARY", "OTHER"],
    "SOPClassUID": MR_IMAGE_STORAGE, "Modality": "MR", "Manufacturer": "breast-mtl synthetic",
    "StudyDate": "20240101", "SeriesDate": "20240101", "ContentDate": "20240101",
    "StudyTime": "120000", "SeriesTime": "120000", "ContentTime": "120000",
    "AccessionNumber": "", "ReferringPhysicianName": "", "StudyDescription": "Breast MRI (synthetic)",
    "PatientBirthDate": "", "PatientSex": "F", "PatientPosition": "HFP", "BodyPartExamined": "BREAST",
    "ScanningSequence": "GR", "SequenceVariant": "SP", "ScanOptions": "FS", "MRAcquisitionType": "3D",
    "RepetitionTime": "4.5", "EchoTime": "2.0", "EchoTrainLength": 1, "FlipAngle": "10",
    "PositionReferenceIndicator": "", "StudyID": "1", "SeriesNumber": 1,
    "SamplesPerPixel": 1, "PhotometricInterpretation": "MONOCHROME2",
    "BitsAllocated": 16, "BitsStored": 16, "HighBit": 15, "PixelRepresentation": 0,
}


def _ds(value: float) -> str:
    """A decimal string that fits DICOM's 16-character DS limit."""
    for digits in (10, 9, 8, 7, 6):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{value:.5g}"


def _to_uint16(data: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Stored uint16 pixels plus (slope, intercept) such that ``stored * slope + intercept`` is the data."""
    lo, hi = float(data.min()), float(data.max())
    integral = bool(np.all(data == np.round(data)))
    if integral and lo >= 0 and hi <= 65535:
        slope, intercept = 1.0, 0.0
    elif integral and hi - lo <= 65535:
        slope, intercept = 1.0, lo
    else:
        intercept = float(_ds(lo))
        slope = float(_ds((hi - intercept) / 65535)) if hi > lo else 1.0
        while slope > 0 and (hi - intercept) / slope > 65535:  # the rounded slope must still cover the range
            slope = float(_ds(slope * (1 + 1e-6)))
    stored = np.clip(np.round((data - intercept) / slope), 0, 65535).astype(np.uint16)
    return stored, slope, intercept


def write_dicom_series(
    volume: np.ndarray,
    out_dir: str | os.PathLike,
    affine: np.ndarray | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    series_description: str = "synthetic MR",
    *,
    file_prefix: str = "IM",
    **kw: Any,
) -> Path:
    """Write a 3D volume as a DICOM MR series (MR Image Storage, explicit VR little endian), one file per slice.

    The volume's geometry is given like a NIfTI's: ``affine`` maps voxel ``(i, j, k)`` to RAS world mm (DICOM's LPS
    patient frame is derived from it). Slice ``k`` becomes file ``{file_prefix}{k+1:04d}.dcm`` with ``InstanceNumber``
    ``k + 1``; in each slice ``i`` is the column index and ``j`` the row index (``Columns = shape[0]``, ``Rows =
    shape[1]``), so ``ImageOrientationPatient`` holds the directions of the ``i`` and ``j`` axes,
    ``ImagePositionPatient`` the world position of voxel ``(0, 0, k)``, ``PixelSpacing`` ``[spacing_j, spacing_i]``.
    Reading the series back with its geometry (``pipeline.data.dicom_series.read_dicom_series``) gives the same
    world coordinates as the NIfTI written with the same affine.

    Pixels are stored as uint16: integer volumes within 0..65535 as they are, other integer volumes with a
    ``RescaleIntercept``, float volumes with ``RescaleSlope``/``RescaleIntercept`` (16-bit quantisation).

    Args:
        volume: 3D array ``(i, j, k)``, finite.
        out_dir: the series folder (created).
        affine: 4x4 RAS voxel-to-world affine; its first two columns must be orthogonal (DICOM cannot store shear
            within a slice). Default: ``diag(spacing)``.
        spacing: voxel size in mm, used only when ``affine`` is None.
        series_description: ``SeriesDescription``.
        file_prefix: file name prefix.
        kw: more DICOM attributes by keyword, set on every slice (e.g. ``PatientID="case_001"``,
            ``StudyInstanceUID=...``); they override the defaults.

    Returns:
        ``out_dir``.

    Raises:
        ValueError: not a finite 3D volume, a bad affine, or an unknown DICOM keyword in ``kw``.
    """
    from pydicom.uid import generate_uid

    data, affine = _checked_volume(volume, affine, spacing, kw)
    geometry = _SliceGeometry(affine)
    stored, slope, intercept = _to_uint16(data)
    patient = str(kw.get("PatientID", "ANONYMOUS"))
    digest = hashlib.sha1(data.tobytes() + affine.tobytes() + series_description.encode()).hexdigest()
    series_uid = generate_uid(entropy_srcs=["series", patient, series_description, digest])
    series = {
        **_SERIES_DEFAULTS,
        "StudyInstanceUID": generate_uid(entropy_srcs=["study", patient]),
        "FrameOfReferenceUID": generate_uid(entropy_srcs=["frame", patient]),
        "SeriesInstanceUID": series_uid,
        "SeriesDescription": series_description,
        "PatientName": patient,
        "PatientID": patient,
        "ImageOrientationPatient": [_ds(v) for v in (*geometry.row_dir, *geometry.col_dir)],
        "PixelSpacing": [_ds(geometry.dy), _ds(geometry.dx)],  # (between rows, between columns)
        "SliceThickness": _ds(geometry.dz),
        "SpacingBetweenSlices": _ds(geometry.dz),
        "Rows": int(data.shape[1]),
        "Columns": int(data.shape[0]),
    }
    if slope != 1.0 or intercept != 0.0:
        series.update(RescaleSlope=_ds(slope), RescaleIntercept=_ds(intercept), RescaleType="US")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for k in range(data.shape[2]):
        sop_uid = generate_uid(entropy_srcs=["instance", series_uid, str(k)])
        position = geometry.position(k)
        ds = _dataset(sop_uid, {**series, "SOPInstanceUID": sop_uid, "InstanceNumber": k + 1,
                                "ImagePositionPatient": [_ds(v) for v in position],
                                "SliceLocation": _ds(float(geometry.normal @ position)), **kw})
        pixels = np.ascontiguousarray(stored[:, :, k].T)  # (Rows, Columns) = (j, i)
        ds.PixelData = pixels.astype("<u2").tobytes()
        ds["PixelData"].VR = "OW"
        with atomic_path(out / f"{file_prefix}{k + 1:04d}.dcm", fsync=False) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
    return out


def _checked_volume(volume: np.ndarray, affine: np.ndarray | None, spacing: Sequence[float],
                    kw: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The volume as float64 and its affine, checked (see ``write_dicom_series``)."""
    from pydicom.datadict import tag_for_keyword

    data = np.asarray(volume)
    if data.ndim != 3:
        raise ValueError(f"write_dicom_series expects a 3D volume, got shape {data.shape}")
    data = data.astype(np.float64)
    if not np.isfinite(data).all():
        raise ValueError("volume holds NaN or infinite values")
    affine = np.diag([*map(float, spacing), 1.0]) if affine is None else np.asarray(affine, dtype=float)
    if affine.shape != (4, 4) or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ValueError("affine must be a finite, invertible 4x4 matrix")
    unknown = [k for k in kw if tag_for_keyword(k) is None]
    if unknown:
        raise ValueError(f"unknown DICOM keyword(s): {', '.join(unknown)}")
    return data, affine


class _SliceGeometry:
    """The DICOM patient geometry (LPS) of a RAS voxel-to-world affine: in-slice directions, spacings, slice normal."""

    def __init__(self, affine: np.ndarray) -> None:
        self.lps = LPS_TO_RAS @ affine
        self.dx, self.dy = float(np.linalg.norm(self.lps[:3, 0])), float(np.linalg.norm(self.lps[:3, 1]))
        self.row_dir, self.col_dir = self.lps[:3, 0] / self.dx, self.lps[:3, 1] / self.dy
        if abs(self.row_dir @ self.col_dir) > 1e-4:
            raise ValueError("the affine's first two axes are not orthogonal: DICOM cannot store a sheared slice")
        self.normal = np.cross(self.row_dir, self.col_dir)
        self.dz = float(np.linalg.norm(self.lps[:3, 2]))

    def position(self, k: int) -> np.ndarray:
        """World (LPS) position of voxel ``(0, 0, k)``."""
        return (self.lps @ np.array([0.0, 0.0, k, 1.0]))[:3]


def _dataset(sop_uid: str, attributes: dict[str, Any]) -> Any:
    """A pydicom ``Dataset`` of one MR Image Storage slice (explicit VR little endian) with ``attributes``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    for key, value in attributes.items():
        setattr(ds, key, value)
    return ds
