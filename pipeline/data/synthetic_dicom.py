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
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

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

    lps = LPS_TO_RAS @ affine
    dx, dy = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    row_dir, col_dir = lps[:3, 0] / dx, lps[:3, 1] / dy
    if abs(row_dir @ col_dir) > 1e-4:
        raise ValueError("the affine's first two axes are not orthogonal: DICOM cannot store a sheared slice")
    normal = np.cross(row_dir, col_dir)
    dz = float(np.linalg.norm(lps[:3, 2]))
    stored, slope, intercept = _to_uint16(data)

    patient = str(kw.get("PatientID", "ANONYMOUS"))
    digest = hashlib.sha1(data.tobytes() + affine.tobytes() + series_description.encode()).hexdigest()
    study_uid = generate_uid(entropy_srcs=["study", patient])
    frame_uid = generate_uid(entropy_srcs=["frame", patient])
    series_uid = generate_uid(entropy_srcs=["series", patient, series_description, digest])

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for k in range(data.shape[2]):
        sop_uid = generate_uid(entropy_srcs=["instance", series_uid, str(k)])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
        ds.SOPClassUID = MR_IMAGE_STORAGE
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240101"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.AccessionNumber = ""
        ds.Modality = "MR"
        ds.Manufacturer = "breast-mtl synthetic"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "Breast MRI (synthetic)"
        ds.SeriesDescription = series_description
        ds.PatientName = patient
        ds.PatientID = patient
        ds.PatientBirthDate = ""
        ds.PatientSex = "F"
        ds.PatientPosition = "HFP"
        ds.BodyPartExamined = "BREAST"
        ds.ScanningSequence = "GR"
        ds.SequenceVariant = "SP"
        ds.ScanOptions = "FS"
        ds.MRAcquisitionType = "3D"
        ds.RepetitionTime = "4.5"
        ds.EchoTime = "2.0"
        ds.EchoTrainLength = 1
        ds.FlipAngle = "10"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        position = (lps @ np.array([0.0, 0.0, k, 1.0]))[:3]
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = [_ds(v) for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [_ds(dy), _ds(dx)]  # (between rows, between columns)
        ds.SliceThickness = _ds(dz)
        ds.SpacingBetweenSlices = _ds(dz)
        ds.SliceLocation = _ds(float(normal @ position))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(data.shape[1]), int(data.shape[0])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        if slope != 1.0 or intercept != 0.0:
            ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = _ds(slope), _ds(intercept), "US"
        for key, value in kw.items():
            setattr(ds, key, value)
        pixels = np.ascontiguousarray(stored[:, :, k].T)  # (Rows, Columns) = (j, i)
        ds.PixelData = pixels.astype("<u2").tobytes()
        ds["PixelData"].VR = "OW"
        with atomic_path(out / f"{file_prefix}{k + 1:04d}.dcm", fsync=False) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
    return out
