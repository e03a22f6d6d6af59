"""3D volumes: the ``Volume`` (array + RAS+ affine), reading NIfTI, NRRD and MetaImage, the closest canonical RAS+
orientation, the geometry of a slice and per-volume intensity normalisation. DICOM series are read by
``pipeline.data.dicom``; the conversion of MRI datasets into 2D slices (``bmtl prepare --source nifti|dicom``) is
``pipeline.data.sources.volumes``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from pipeline.data.io import DataError

__all__ = [
    "NIFTI_EXTENSIONS",
    "Volume",
    "volume_stem",
    "as_3d",
    "check_finite",
    "check_affine",
    "check_size",
    "MAX_VOXELS",
    "open_nifti",
    "read_nifti_volume",
    "read_nrrd_volume",
    "read_metaimage_volume",
    "read_volume",
    "NRRD_EXTENSIONS",
    "METAIMAGE_EXTENSIONS",
    "DETACHED_DATA_EXTENSIONS",
    "VOLUME_EXTENSIONS",
    "to_canonical",
    "slice_affine",
    "normalise_percentile",
]

NIFTI_EXTENSIONS = (".nii.gz", ".nii")
NRRD_EXTENSIONS = (".nrrd", ".nhdr")   # 3D Slicer's format (attached or detached header)
METAIMAGE_EXTENSIONS = (".mha", ".mhd")  # ITK's MetaImage (attached header, or .mhd beside its .raw/.zraw data)
VOLUME_EXTENSIONS = (*NIFTI_EXTENSIONS, *NRRD_EXTENSIONS, *METAIMAGE_EXTENSIONS)
# the pixel data of a detached header (.nhdr, .mhd): read through its header, never a volume of its own
DETACHED_DATA_EXTENSIONS = (".raw", ".zraw", ".raw.gz")
ITK_MISSING = ("reading MetaImage (.mha/.mhd) needs ITK, an optional extra: pip install 'breast-mtl[itk]' "
               "(or pip install itk-io)")
# the most values one file may put in memory (4 GiB as float32): a header asking for more is corrupt, or the volume
# is not one this tool can predict on this machine
MAX_VOXELS = 2**30


@dataclass
class Volume:
    """A 3D array with its RAS+ voxel-to-world affine (mm) and where it came from."""

    data: np.ndarray
    affine: np.ndarray
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along the array axes."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)


def volume_stem(path: str | os.PathLike) -> str | None:
    """``"case_1"`` for ``case_1.nii.gz``, ``case_1.nii``, ``case_1.nrrd``, ``case_1.nhdr``, ``case_1.mha`` or
    ``case_1.mhd`` (any case); None for other names."""
    name = Path(path).name
    for ext in VOLUME_EXTENSIONS:
        if name.lower().endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return None


def as_3d(data: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Drop trailing singleton dimensions; anything but a 3D volume is a ``DataError``."""
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 4:
        raise DataError(path, f"4D {what} (shape {tuple(data.shape)}: {data.shape[3]} volumes, e.g. DCE phases or "
                              "time points): expected one 3D volume per case; split it and keep one volume "
                              "(e.g. the first post-contrast phase)")
    if data.ndim != 3:
        raise DataError(path, f"{what} is not a 3D volume (shape {tuple(data.shape)})")
    return data


def check_finite(data: np.ndarray, path: Path, what: str) -> None:
    if np.issubdtype(data.dtype, np.floating):
        bad = ~np.isfinite(data)
        if bad.any():
            n_nan = int(np.isnan(data).sum())
            raise DataError(path, f"{what} holds non-finite voxels ({n_nan} NaN, {int(bad.sum()) - n_nan} inf)")


def check_affine(affine: np.ndarray, path: Path) -> None:
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(path, "invalid voxel-to-world affine (singular or not finite): the geometry is unusable")


def check_size(shape: tuple[int, ...], path: str | os.PathLike, what: str = "volume", limit: int = MAX_VOXELS) -> None:
    """Refuse, before reading, an array whose header asks for more than ``limit`` values.

    Raises:
        DataError: naming the shape, the count and the limit.
    """
    count = float(np.prod([float(s) for s in shape])) if len(shape) else 0.0
    if count > limit:
        raise DataError(path, f"{what} is too large to be read safely (shape {tuple(int(s) for s in shape)}: "
                              f"{count / 1e6:,.0f} million values, at most {limit / 1e6:,.0f} million); a corrupt "
                              "header?")


def open_nifti(path: str | os.PathLike, what: str = "image") -> tuple[Any, np.ndarray, np.ndarray]:
    """A NIfTI file's nibabel image, its array (any number of dimensions) and affine, its size checked before the
    array is read (``check_size``).

    Raises:
        DataError: unreadable or corrupt file, a header asking for a huge array, RGB or complex data.
    """
    path = Path(path)
    try:
        img = nib.load(str(path))
    except Exception as e:  # nibabel and gzip raise many types for corrupt or truncated files
        raise DataError(path, f"unreadable NIfTI file ({type(e).__name__}: {e})") from None
    check_size(img.shape, path, what)
    try:
        data = np.asanyarray(img.dataobj)
        affine = np.asarray(img.affine, dtype=float)
    except Exception as e:
        raise DataError(path, f"unreadable NIfTI file ({type(e).__name__}: {e})") from None
    if data.dtype.fields is not None or np.iscomplexobj(data):
        raise DataError(path, f"unsupported NIfTI data type {img.get_data_dtype()} (RGB or complex)")
    return img, data, affine


def read_nifti_volume(path: str | os.PathLike, what: str = "image") -> Volume:
    """Read a 3D NIfTI volume with its affine (nibabel's: sform, else qform), float32 for images, raw dtype else.

    Trailing singleton dimensions are dropped (``(X, Y, Z, 1)`` is 3D).

    Raises:
        DataError: unreadable or corrupt file, not 3D (4D: says so), NaN/inf voxels, unusable affine.
    """
    path = Path(path)
    _, data, affine = open_nifti(path, what)
    data = as_3d(np.asarray(data), path, what)
    if what == "image":
        data = data.astype(np.float32, copy=False)
    check_finite(data, path, what)
    check_affine(affine, path)
    return Volume(data, affine, path)


def read_nrrd_volume(path: str | os.PathLike, what: str = "image") -> Volume:
    """Read a 3D NRRD volume (3D Slicer's format) with MONAI's ``NrrdReader`` (pynrrd): the array in the file's index
    order, the RAS+ affine from its space directions and origin (MONAI converts from the file's LPS); float32 for
    images. ``meta["nrrd_header"]`` keeps the file's header to write masks back in the same geometry.

    Raises:
        DataError: unreadable or corrupt file, a header asking for a huge array, not 3D, NaN/inf voxels, unusable
            affine.
    """
    import nrrd
    from monai.data import NrrdReader

    path = Path(path)
    try:
        header = nrrd.read_header(str(path))
    except Exception as e:
        raise DataError(path, f"unreadable NRRD file ({type(e).__name__}: {e})") from None
    check_size(tuple(int(s) for s in header.get("sizes", ())), path, what)
    try:
        reader = NrrdReader(dtype=np.float32 if what == "image" else None)
        array, meta = reader.get_data(reader.read(str(path)))
        affine = np.asarray(meta["affine"], dtype=float)
    except Exception as e:
        raise DataError(path, f"unreadable NRRD file ({type(e).__name__}: {e})") from None
    data = as_3d(np.asarray(array), path, what)
    if affine.shape != (4, 4):
        raise DataError(path, f"NRRD without a 3D space (affine {affine.shape}): expected a 3D volume")
    check_finite(data, path, what)
    check_affine(affine, path)
    return Volume(data, affine, path, {"nrrd_header": header})


def metaimage_sizes(path: Path) -> tuple[int, ...]:
    """The ``DimSize`` of a MetaImage header, read as text before any pixel is (ITK reads the whole file at once).

    Hand-written because ITK has no size-only read in its Python wrapping that MONAI exposes; the header is
    ``key = value`` lines up to ``ElementDataFile``.

    Raises:
        DataError: no ``DimSize`` line, or one that is not integers.
    """
    with open(path, "rb") as f:
        head = f.read(65536).decode("latin-1")
    for line in head.splitlines():
        key, _, value = line.partition("=")
        if key.strip().lower() == "dimsize":
            try:
                return tuple(int(v) for v in value.split())
            except ValueError:
                raise DataError(path, f"MetaImage header with an unreadable DimSize ({value.strip()!r})") from None
        if key.strip().lower() == "elementdatafile":
            break
    raise DataError(path, "not a MetaImage file (no DimSize in its header)")


def read_metaimage_volume(path: str | os.PathLike, what: str = "image") -> Volume:
    """Read a 3D MetaImage volume (ITK's ``.mha``, or ``.mhd`` with its data file) with MONAI's ``ITKReader``: the
    array in x, y, z order, the RAS+ affine from its spacing, origin and direction (MONAI converts from ITK's LPS);
    float32 for images. Masks are written back in the same geometry with MONAI's ``ITKWriter`` and this affine.

    Raises:
        DataError: ITK not installed (says how to install it), unreadable or corrupt file, a header asking for a
            huge array, not 3D, NaN/inf voxels, unusable affine.
    """
    from monai.data import ITKReader
    from monai.utils import optional_import

    path = Path(path)
    check_size(metaimage_sizes(path), path, what)
    _, has_itk = optional_import("itk", allow_namespace_pkg=True)
    if not has_itk:
        raise DataError(path, ITK_MISSING)
    try:
        reader = ITKReader()   # its keyword arguments go to itk.imread: the dtype is set below
        array, meta = reader.get_data(reader.read(str(path)))
        affine = np.asarray(meta["affine"], dtype=float)
    except Exception as e:  # ITK raises RuntimeError for most problems, other types for some
        raise DataError(path, f"unreadable MetaImage file ({type(e).__name__}: {e})") from None
    data = as_3d(np.asarray(array, dtype=np.float32 if what == "image" else None), path, what)
    if affine.shape != (4, 4):
        raise DataError(path, f"MetaImage without a 3D space (affine {affine.shape}, a 2D or vector image): expected "
                              "a 3D volume; save 2D images as PNG or NIfTI")
    check_finite(data, path, what)
    check_affine(affine, path)
    return Volume(data, affine, path)


def read_volume(path: str | os.PathLike, what: str = "image") -> Volume:
    """A 3D volume file: NRRD (``.nrrd``, ``.nhdr``) through ``read_nrrd_volume``, MetaImage (``.mha``, ``.mhd``)
    through ``read_metaimage_volume``, else NIfTI."""
    name = Path(path).name.lower()
    if name.endswith(NRRD_EXTENSIONS):
        return read_nrrd_volume(path, what)
    if name.endswith(METAIMAGE_EXTENSIONS):
        return read_metaimage_volume(path, what)
    return read_nifti_volume(path, what)


def to_canonical(volume: Volume) -> Volume:
    """The volume in its closest canonical RAS+ orientation (axes permuted/flipped, affine updated, no resampling)."""
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

    ornt = io_orientation(volume.affine)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return volume
    data = apply_orientation(volume.data, ornt)
    affine = volume.affine @ inv_ornt_aff(ornt, volume.data.shape)
    return Volume(np.ascontiguousarray(data), affine, volume.path, dict(volume.meta))


def slice_affine(affine: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The 4x4 affine of slice ``index`` along ``axis`` of a volume with ``affine``.

    Columns 0 and 1 are the volume's columns of the two in-plane axes (in volume order), column 2 the volume's column
    of ``axis`` (slice normal x slice spacing), and the origin the world position of the slice's first pixel: pixel
    ``(u, v)`` (third index 0) maps to the world position of the volume's voxel with ``u, v`` in-plane and ``index``
    along ``axis``.
    """
    in_plane = [a for a in range(3) if a != axis]
    out = np.eye(4)
    out[:3, 0] = affine[:3, in_plane[0]]
    out[:3, 1] = affine[:3, in_plane[1]]
    out[:3, 2] = affine[:3, axis]
    out[:3, 3] = affine[:3, 3] + affine[:3, axis] * index
    return out


def normalise_percentile(data: np.ndarray, lower: float = 1.0, upper: float = 99.0) -> np.ndarray:
    """Map the ``lower``/``upper`` percentiles of ``data`` to 0/1 and clip: float32 in [0, 1].

    When both percentiles coincide (mostly constant volume) the minimum and maximum are used instead.

    Raises:
        ValueError: the volume is constant.
    """
    lo, hi = (float(v) for v in np.percentile(data, [lower, upper]))
    if hi <= lo:
        lo, hi = float(data.min()), float(data.max())
    if hi <= lo:
        raise ValueError(f"image is constant (every voxel is {lo:g}): nothing to normalise")
    out = (data.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo)
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)
