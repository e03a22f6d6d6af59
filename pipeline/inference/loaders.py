"""Readers of ``bmtl predict``'s inputs: each input becomes a ``Case`` of 2D slices (channel-first, before the
bundle's transforms), the grey images to display and the writer that puts the masks back in the input's geometry.

2D rasters are read as ``bmtl prepare`` reads them (``pipeline.data.io.read_grey_uint8``); DICOM files with
pydicom (modality LUT, MONOCHROME1 inverted, colour to grey); NIfTI with nibabel; DICOM series with
``pipeline.data.dicom_series.read_dicom_series``. Volumes are sliced in their closest RAS orientation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.atomic import atomic_path
from pipeline.data.dicom import (
    DECODER_HINT,
    check_frame_size,
    dicom_spacing,
    modality_values,
    not_an_image,
    number_of_frames,
    spacing_problem,
)
from pipeline.data.io import DataError, read_grey_uint8
from pipeline.inference.discovery import InputItem
from pipeline.inference.outputs import write_png_mask

__all__ = ["Case", "load_case", "check_pixel_limit", "load_raster", "load_dicom", "load_nifti", "load_dicom_series",
           "load_nrrd", "load_metaimage", "already_normalised"]


@dataclass
class Case:
    """A loaded input: 2D slices (channel-first, before the bundle's transforms) and how to write its mask back."""

    item: InputItem
    slices: list[torch.Tensor]
    display: list[np.ndarray]  # per slice, (H, W) grey image as shown
    spacing: tuple[float, float] | None = None  # in-plane mm per pixel (rows, columns of a slice)
    spacing_problem: str | None = None  # why a spacing the format carries could not be read (None: read, or none)
    thickness: float | None = None  # slice spacing (volumes)
    writer: Callable[[list[np.ndarray], Path], Path] | None = None
    view: Callable[[np.ndarray], np.ndarray] = staticmethod(lambda a: a)  # slice array -> displayed orientation
    shape: tuple[int, ...] = ()


def _check_2d(path: Path, h: int, w: int) -> None:
    if h < 2 or w < 2:
        raise DataError(path, f"image is too small ({w}x{h} pixels); at least 2x2 is needed")


def _check_finite(path: Path, array: np.ndarray | torch.Tensor) -> None:
    arr = np.asarray(array)
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        n_nan = int(np.isnan(arr).sum())
        n_inf = int((~np.isfinite(arr)).sum()) - n_nan
        raise DataError(path, f"image holds non-finite pixels ({n_nan} NaN, {n_inf} inf)")


def _grey(image: torch.Tensor) -> torch.Tensor:
    """Channel-first image -> one channel, as ``ToGreyd`` does (RGB(A) luma, grey+alpha -> grey)."""
    from pipeline.transforms import ToGreyd

    return ToGreyd(keys="image")({"image": image})["image"]


def load_raster(item: InputItem) -> Case:
    """A PNG/JPEG/BMP/TIFF file read exactly as ``bmtl prepare`` reads it for training (``read_grey_uint8``: palette and
    CMYK through their colours, 16-bit scaled to 8 bits), so a file means the same thing in both."""
    from monai.data import MetaTensor

    image = read_grey_uint8(item.path)   # names the file and the problem (empty, truncated, too small, ...)
    tensor = MetaTensor(torch.as_tensor(image, dtype=torch.float32)[None])
    return Case(item, [tensor], [image.astype(np.float32)], writer=write_png_mask, shape=tuple(image.shape))


def load_dicom(item: InputItem) -> Case:
    import pydicom

    path = item.path
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty (0 bytes)")
    try:
        ds = pydicom.dcmread(path)
    except Exception as e:
        raise DataError(path, f"unreadable DICOM file ({type(e).__name__}: {e})") from None
    pydicom_2 = int(pydicom.__version__.split(".")[0]) < 3
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DataError(path, "DICOM file without pixel data (no PixelData element): nothing to predict")
    problem = not_an_image(ds)
    if problem is not None:
        raise DataError(path, problem)
    try:
        frames = number_of_frames(ds)
    except ValueError as e:
        raise DataError(path, f"malformed DICOM header: {e}") from None
    if frames > 1 and item.frame is None:
        raise DataError(path, f"multi-frame DICOM ({frames} frames, e.g. a cine loop): predict it through "
                              "discover_inputs (one input per frame) or choose one frame (--frame N)")
    if item.frame is not None and not 0 <= item.frame < frames:
        raise DataError(path, f"frame {item.frame} asked, the file has {frames} frame(s)")
    check_frame_size(ds, path)
    try:
        if frames > 1 and pydicom_2:  # pragma: no cover - pydicom < 3 decodes every frame
            pixels = np.asarray(ds.pixel_array)[item.frame]
        else:
            if frames > 1:
                ds.pixel_array_options(index=item.frame)   # decode that frame only
            pixels = np.asarray(ds.pixel_array)
    except Exception as e:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
        raise DataError(path, f"cannot decode the pixel data (transfer syntax {syntax}; {type(e).__name__}: "
                              f"{e}); {DECODER_HINT}") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR" and pixels.ndim == 2:
        # the stored values are indices into the file's colour table (ultrasound machines write these): look the
        # colours up, then convert to grey like any RGB image
        if pydicom_2:  # pragma: no cover - pydicom < 3
            from pydicom.pixel_data_handlers.util import apply_color_lut
        else:
            from pydicom.pixels import apply_color_lut
        try:
            pixels = np.asarray(apply_color_lut(pixels, ds))
        except Exception as e:
            raise DataError(path, f"PALETTE COLOR DICOM whose colour table cannot be applied ({type(e).__name__}: "
                                  f"{e})") from None
    if pixels.ndim == 2:
        pixels = modality_values(pixels, ds, path).astype(np.float32)   # as read_dicom_series reads a slice
        if photometric == "MONOCHROME1":  # bright = low values: invert so that bright tissue is bright
            pixels = pixels.max() + pixels.min() - pixels
        image = torch.as_tensor(pixels)[None]
    elif pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        if photometric.startswith("YBR") and pydicom_2:  # pragma: no cover - pydicom >= 3 returns RGB already
            from pydicom.pixel_data_handlers.util import convert_color_space

            pixels = convert_color_space(pixels, photometric, "RGB")
        image = torch.as_tensor(np.moveaxis(pixels.astype(np.float32), -1, 0))
    else:
        raise DataError(path, f"unsupported DICOM pixel layout {pixels.shape} ({photometric})")
    _check_2d(path, int(image.shape[-2]), int(image.shape[-1]))
    _check_finite(path, image)
    from monai.data import MetaTensor

    image = _grey(MetaTensor(image.float()))
    spacing = dicom_spacing(ds)
    return Case(item, [image], [np.asarray(image[0])], spacing=spacing, writer=write_png_mask,
                spacing_problem=spacing_problem(ds) if spacing is None and "PixelSpacing" in ds else None,
                shape=tuple(image.shape[-2:]))


def load_nifti(item: InputItem, axis: int, normalise: bool) -> Case:
    import nibabel as nib

    from pipeline.data.volume import Volume, open_nifti

    path = item.path
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty (0 bytes)")
    img, data, affine = open_nifti(path, "image")   # 2D or 3D here: the dimensions are checked below
    shape = tuple(data.shape)
    squeezed = data
    while squeezed.ndim > 3 and squeezed.shape[-1] == 1:
        squeezed = squeezed[..., 0]
    if squeezed.ndim == 4:
        raise DataError(path, f"4D volume (shape {shape}: {shape[3]} volumes, e.g. time points or DCE phases): "
                              "expected a 2D image or one 3D volume per file; split it and predict one volume")
    if squeezed.ndim not in (2, 3):
        raise DataError(path, f"not a 2D image or 3D volume (shape {shape})")
    volume_data = np.asarray(squeezed, dtype=np.float32)
    if volume_data.ndim == 2:
        volume_data = volume_data[..., None]
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(path, "invalid voxel-to-world affine (singular or not finite)")

    def write(masks: list[np.ndarray], out: Path, back: Callable[[list[np.ndarray]], np.ndarray]) -> Path:
        array = back(masks).reshape(shape).astype(np.uint8)
        header = img.header.copy()
        result = type(img)(array, img.affine, header=header)
        result.set_data_dtype(np.uint8)
        result.header.set_slope_inter(1, 0)
        result.header["cal_min"], result.header["cal_max"] = 0, 1  # a viewer's window for a 0/1 mask
        if hasattr(img, "get_sform"):
            result.set_sform(img.get_sform(), int(img.header["sform_code"]))
            result.set_qform(img.get_qform(), int(img.header["qform_code"]))
        out = out.with_name(out.name + ".nii.gz")
        with atomic_path(out, fsync=False) as tmp:  # the temporary name ends in .nii.gz: nibabel compresses it
            nib.save(result, str(tmp))
        return out

    return _volume_case(item, Volume(volume_data, affine, path), axis, normalise, write)


def load_nrrd(item: InputItem, axis: int, normalise: bool) -> Case:
    """A 3D NRRD volume (``pipeline.data.volume.read_nrrd_volume``); its mask is written as NRRD with the input's
    space, directions and origin, so 3D Slicer shows it on the image."""
    import nrrd

    from pipeline.data.volume import read_nrrd_volume

    volume = read_nrrd_volume(item.path, "image")
    header = volume.meta["nrrd_header"]
    geometry = {k: header[k] for k in ("space", "space directions", "space origin", "kinds", "space units",
                                       "measurement frame") if k in header}

    def write(masks: list[np.ndarray], out: Path, back: Callable[[list[np.ndarray]], np.ndarray]) -> Path:
        out = out.with_name(out.name + ".nrrd")
        with atomic_path(out, fsync=False) as tmp:
            nrrd.write(str(tmp), back(masks).astype(np.uint8), geometry)
        return out

    return _volume_case(item, volume, axis, normalise, write)


def load_metaimage(item: InputItem, axis: int, normalise: bool) -> Case:
    """A 3D MetaImage volume (``pipeline.data.volume.read_metaimage_volume``, ITK's ``.mha``/``.mhd``); its mask is
    written as ``.mha`` by MONAI's ``ITKWriter`` with the input's spacing, origin and direction."""
    from monai.data import ITKWriter

    from pipeline.data.volume import read_metaimage_volume

    volume = read_metaimage_volume(item.path, "image")

    def write(masks: list[np.ndarray], out: Path, back: Callable[[list[np.ndarray]], np.ndarray]) -> Path:
        out = out.with_name(out.name + ".mha")
        writer = ITKWriter(output_dtype=np.uint8)
        # a leading channel and squeeze_end_dims off: with no channel, MONAI 1.6.1 takes a permuted 3D affine for 2D
        writer.set_data_array(back(masks).astype(np.uint8)[None], channel_dim=0, squeeze_end_dims=False)
        writer.set_metadata({"affine": volume.affine}, resample=False)
        with atomic_path(out, fsync=False) as tmp:   # ITK picks the format from the name: keep the .mha ending
            writer.write(str(tmp))
        return out

    return _volume_case(item, volume, axis, normalise, write)


def load_dicom_series(item: InputItem, axis: int, normalise: bool) -> Case:
    import nibabel as nib

    from pipeline.data.dicom_series import read_dicom_series

    volume = read_dicom_series(item.path, "image")

    def write(masks: list[np.ndarray], out: Path, back: Callable[[list[np.ndarray]], np.ndarray]) -> Path:
        result = nib.Nifti1Image(back(masks).astype(np.uint8), volume.affine)
        result.set_sform(volume.affine, code=1)
        result.set_qform(volume.affine, code=1)
        result.header.set_xyzt_units("mm")
        out = out.with_name(out.name + ".nii.gz")
        with atomic_path(out, fsync=False) as tmp:
            nib.save(result, str(tmp))
        return out

    return _volume_case(item, volume, axis, normalise, write)


def already_normalised(data: np.ndarray) -> bool:
    return np.issubdtype(data.dtype, np.floating) and float(data.min()) >= 0.0 and float(data.max()) <= 1.0


def _volume_case(item: InputItem, volume: Any, axis: int, normalise: bool, write: Callable) -> Case:
    """Slices of a volume in its closest RAS orientation, and the writer that puts masks back in its voxel order."""
    from monai.data import MetaTensor
    from nibabel.orientations import apply_orientation, io_orientation, ornt_transform

    from pipeline.data.volume import normalise_percentile, to_canonical

    path = item.path
    _check_finite(path, volume.data)
    original_shape = volume.data.shape
    canonical = to_canonical(volume)
    data = canonical.data
    singleton = [a for a in range(3) if data.shape[a] == 1]
    if len(singleton) > 1:
        raise DataError(path, f"image is too small (shape {tuple(original_shape)})")
    slice_axis = singleton[0] if singleton else axis
    in_plane = [a for a in range(3) if a != slice_axis]
    _check_2d(path, data.shape[in_plane[0]], data.shape[in_plane[1]])
    if normalise and not already_normalised(data):
        try:
            data = normalise_percentile(data)
        except ValueError as e:
            raise DataError(path, str(e)) from None
    spacing = canonical.spacing
    known = volume.meta.get("spacing_known", True)
    slices = [np.ascontiguousarray(np.take(data, k, axis=slice_axis)) for k in range(data.shape[slice_axis])]
    to_original = ornt_transform([[0, 1], [1, 1], [2, 1]], io_orientation(volume.affine))

    def back(masks: list[np.ndarray]) -> np.ndarray:
        stacked = np.stack([np.asarray(m, dtype=np.uint8) for m in masks], axis=slice_axis)
        out = apply_orientation(stacked, to_original)
        assert out.shape == tuple(original_shape), (out.shape, original_shape)
        return out

    # axial slices of a RAS array: rows = left->right, columns = posterior->anterior; shown radiologically
    # (anterior up, patient's right on the left)
    view = (lambda a: np.asarray(a)[::-1, ::-1].T) if slice_axis == 2 else (lambda a: np.asarray(a).T[::-1])
    return Case(
        item,
        [MetaTensor(torch.as_tensor(s)[None]) for s in slices],
        slices,
        # a DICOM series whose spacing could not be read has a 1 mm placeholder in its affine: no mm figures
        spacing=(float(spacing[in_plane[0]]), float(spacing[in_plane[1]])) if known else None,
        thickness=float(spacing[slice_axis]) if known else None,
        spacing_problem=None if known else volume.meta.get("spacing_problem", "unreadable"),
        writer=lambda masks, out: write(masks, out, back),
        view=view,
        shape=tuple(original_shape),
    )


def _header_shape(item: InputItem) -> tuple[int, ...] | None:
    """The input's shape from its header alone (no pixels read), where that is cheap; None otherwise or when the
    header cannot be read (the reader then names the problem)."""
    try:
        if item.kind == "raster":
            from PIL import Image

            with Image.open(item.path) as img:   # lazy: reads the header only
                return (img.height, img.width)
        if item.kind == "dicom":
            import pydicom

            ds = pydicom.dcmread(item.path, stop_before_pixels=True)
            return (int(ds.Rows), int(ds.Columns))   # one frame is one input
        if item.kind == "nifti":
            import nibabel as nib

            return tuple(int(n) for n in nib.load(str(item.path)).shape)
    except Exception:   # any unreadable header: the reader gives the message
        return None
    return None


def check_pixel_limit(item: InputItem, shape: tuple[int, ...] | None, max_pixels: int | None) -> None:
    """Refuse an input whose images (a volume's slices) have more than ``max_pixels`` pixels before it costs
    gigabytes: the bundle's resize to the network size (anti-aliased) takes about 85 bytes per pixel of one image
    (``benchmarks/predict_memory.py``). A volume's slice is bounded by its two largest dimensions, whatever the slice
    axis.

    Args:
        item: the input.
        shape: its shape; None: read from its header where that is cheap (PNG/JPEG/TIFF, DICOM, NIfTI), else nothing
            is checked.
        max_pixels: the limit per image or slice; None: no limit.

    Raises:
        pipeline.data.io.DataError: above the limit (the message names the file, its size and the limit).
    """
    if max_pixels is None:
        return
    if shape is None:
        shape = _header_shape(item)
    if not shape:
        return
    largest = sorted((int(d) for d in shape), reverse=True)[:2]   # the largest plane (a colour channel is smaller)
    n = int(np.prod(largest, dtype=np.int64))
    if n > max_pixels:
        dims = " x ".join(str(d) for d in shape)
        per = "pixels" if len(shape) == 2 else "pixels per slice"
        raise DataError(item.path, f"input too large: {n:,} {per} ({dims}), above the limit of {max_pixels:,} "
                                   "pixels (max_pixels, --max-pixels); downscale it, or raise the limit if the memory "
                                   "allows")


def load_case(item: InputItem, slice_axis: int = 2, normalise: bool = False) -> Case:
    """Read one input: a 2D raster or DICOM image, a NIfTI image or volume, an NRRD or MetaImage volume, or a DICOM
    series.

    Args:
        item: the input (``discover_inputs``).
        slice_axis: the axis a 3D volume is cut along (of its closest RAS orientation; 2: axial).
        normalise: 1st-99th percentile normalisation per volume (per image for a 2D input), as ``bmtl prepare`` does
            for the MRI bundle; an input already within [0, 1] (a prepared slice) is kept.

    Raises:
        pipeline.data.io.DataError: an unsupported, unreadable or unusable input (the message names the file).
    """
    if item.kind == "unsupported":
        raise DataError(item.path, item.problem or "unsupported file type")
    if item.kind == "nifti":
        return load_nifti(item, slice_axis, normalise)
    if item.kind == "nrrd":
        return load_nrrd(item, slice_axis, normalise)
    if item.kind == "metaimage":
        return load_metaimage(item, slice_axis, normalise)
    if item.kind == "dicom_series":
        return load_dicom_series(item, slice_axis, normalise)
    case = load_raster(item) if item.kind == "raster" else load_dicom(item)
    if normalise:  # a 2D image for a bundle trained on per-volume normalised slices: per image
        from monai.data import MetaTensor

        from pipeline.data.volume import normalise_percentile

        image = case.slices[0]
        if not already_normalised(np.asarray(image)):
            try:
                case.slices[0] = MetaTensor(torch.as_tensor(normalise_percentile(np.asarray(image))))
            except ValueError as e:
                raise DataError(item.path, str(e)) from None
    return case
