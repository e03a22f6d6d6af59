"""Inference with an exported bundle on new images: ``bmtl predict`` and the bundles' ``inferring`` run id.

``predict(bundle, input, output_dir)`` reads one file or a folder (recursively), predicts every image with the
bundle's model and writes, in ``output_dir``:

* ``masks/<name>_mask.png`` for 2D raster and single-file DICOM inputs: the lesion mask at the input's own size and
  orientation (rows and columns as the file is displayed), 8-bit, **0 = background, 255 = lesion** (for viewing;
  divide by 255 for 0/1);
* ``masks/<name>_mask.nii.gz`` for NIfTI inputs (2D or 3D) with the input's affine and header (uint8 0/1), and for
  DICOM series folders with the series' patient geometry (RAS affine, array axes: columns, rows, slices);
* ``overlays/<name>_overlay.png``: the image with the predicted contour, the class and its probability (for a volume,
  the slice with the largest lesion, in radiological view for axial slices);
* ``heatmaps/<name>_gradcam.png`` with ``explain=True``: Grad-CAM of the classification head (``monai.visualize``)
  blended over the image, at the image's size;
* ``predictions.csv``: one row per input (see ``CSV_COLUMNS``): class, per-class probabilities, lesion area in
  pixels and in mm² where the spacing is known (DICOM ``PixelSpacing`` or ultrasound region calibration, NIfTI
  affine; never for PNG/JPEG), whether refinement changed anything, the error for an input that failed.

Inputs: PNG/JPEG/BMP/TIFF; DICOM single files (ultrasound, often RGB; MONOCHROME1 inverted) and series folders (one
series per folder, read by ``pipeline.data.sources.volumes.read_dicom_series``); NIfTI ``.nii``/``.nii.gz``, 2D or
3D (4D is refused). A 3D volume is brought to its closest RAS orientation, normalised per volume like ``bmtl
prepare`` does for the MRI bundle (1st-99th percentile; MRI bundle only, and not for inputs already within [0, 1],
i.e. prepared slices), cut into slices along ``slice_axis`` (2: axial), predicted slice by slice and reassembled
into a 3D mask in the input's own voxel order. Its class is the mean of the probabilities of the slices with lesion
pixels (all slices when none has any).

Preprocessing is the bundle's own ``preprocessing_transforms`` (from ``configs/common.yaml``) without its file
reader: the same grey conversion, intensity scaling, resizing to the training size and extra channels as in training.
By default the mask is predicted at the training size and the lesion probability brought back to the input's size by
MONAI's inverse of the preprocessing's resize (and padding, with ``keep_aspect``), as evaluation's ``Invertd`` does,
then thresholded: our bundles train on whole images resized to the training size. With
``native_resolution=True`` the image is not resized: ``MultiTaskInferer`` segments it by sliding window over
training-size tiles at its own pixel scale (for images whose pixel scale matches the training images) and classifies
the whole image resized to the training size.

A bad input (unreadable or truncated file, unsupported type, empty or 1-pixel image, 4D volume, DICOM without pixel
data, NaN pixels) gives a row with ``status=error`` and the problem in ``error``; every other input is processed.
``PredictionResult.exit_code`` is 0 when at least one input succeeded and 1 when none did.

Nothing here reads a training config, a datalist or a checkpoint with pickled objects: the exported bundle folder
is enough (``torch.load(weights_only=True)`` for ``model.pt``).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.atomic import atomic_path, write_rows_atomic
from pipeline.data.io import IMAGE_EXTENSIONS, DataError
from pipeline.keys import Head
from pipeline.metrics import predicted_classes
from pipeline.prediction_journal import PredictionJournal

__all__ = [
    "RUNTIMES",
    "CSV_COLUMNS",
    "InputItem",
    "PredictionResult",
    "Predictor",
    "discover_inputs",
    "predict",
]

logger = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "torchscript", "onnx")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
MODEL_FILES = {"torch": "model.pt", "torchscript": "model.ts", "onnx": "model.onnx"}
_FIXED_COLUMNS = ["file", "type", "status", "error", "predicted_class"]
_MEASURE_COLUMNS = ["lesion_area_px", "lesion_area_mm2", "lesion_voxels", "lesion_volume_mm3", "n_slices", "height",
                    "width", "spacing_mm", "refined", "mask", "overlay", "heatmap"]
CSV_COLUMNS = (*_FIXED_COLUMNS, "prob_<class> (one per class)", *_MEASURE_COLUMNS)
_MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR


# ------------------------------------------------------------------------------------------------------- discovery
@dataclass
class InputItem:
    """One input: a file, or a DICOM series folder."""

    path: Path
    kind: str  # raster | dicom | dicom_series | nifti | unsupported
    name: str  # output name stem (relative to the input root, without extension)
    problem: str | None = None


def _nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _stem(relative: Path) -> str:
    name = relative.name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return str(relative.with_name(name[: -len(suffix)]))
    return str(relative.with_suffix("")) if relative.suffix else str(relative)


def _dicom_header(path: Path) -> Any | None:
    """The DICOM header of ``path`` (no pixels), or None when it is not a DICOM file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError, KeyError):
        return None
    except Exception:  # pydicom raises many types for broken headers
        return None


def _is_volume_slice(ds: Any) -> bool:
    """A DICOM file that belongs to a slice series (MR/CT-like geometry), not a 2D image of its own."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return (
        ds.get("ImagePositionPatient") is not None
        and ds.get("ImageOrientationPatient") is not None
        and int(ds.get("SamplesPerPixel", 1) or 1) == 1
        and frames <= 1
        and str(ds.get("Modality", "")).upper() != "US"
    )


def discover_inputs(path: str | os.PathLike, exclude: str | os.PathLike | None = None) -> list[InputItem]:
    """The inputs under ``path``: the file itself, or every file of a folder (recursive; hidden files and anything
    under ``exclude``, e.g. the output folder, skipped).

    DICOM files of one series in one folder (slice geometry, two or more files) make one ``dicom_series`` input;
    other DICOM files are 2D images. Files of other types become ``unsupported`` items (an error row each).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"input {root} not found")
    skip = Path(exclude).resolve() if exclude is not None else None
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and not (skip is not None and skip in p.resolve().parents)
    )
    base = root.parent if root.is_file() else root
    items: list[InputItem] = []
    series: dict[Path, list[Path]] = {}
    for p in files:
        rel = p.relative_to(base)
        suffix = p.suffix.lower()
        if suffix in IMAGE_EXTENSIONS:
            items.append(InputItem(p, "raster", _stem(rel)))
        elif _nifti(p):
            items.append(InputItem(p, "nifti", _stem(rel)))
        else:
            maybe_dicom = suffix in DICOM_SUFFIXES or not suffix or suffix[1:].isdigit()
            ds = _dicom_header(p) if maybe_dicom else None
            if ds is None:
                if suffix in DICOM_SUFFIXES:
                    items.append(InputItem(p, "dicom", _stem(rel)))  # the reader names the problem
                else:
                    what = f"'{p.suffix}'" if p.suffix else "without extension (and not DICOM)"
                    items.append(InputItem(p, "unsupported", _stem(rel),
                                           f"unsupported file type {what}: expected PNG, JPEG, BMP, TIFF, DICOM or "
                                           "NIfTI (.nii, .nii.gz)"))
            elif str(ds.get("SOPClassUID", "")) == _MEDIA_STORAGE_DIRECTORY or p.name.upper() == "DICOMDIR":
                continue  # an index of the files, not an image
            elif root.is_dir() and _is_volume_slice(ds):
                series.setdefault(p.parent, []).append(p)  # read_dicom_series refuses a folder of several series
            else:
                items.append(InputItem(p, "dicom", _stem(rel)))
    for folder, members in series.items():
        if len(members) == 1:
            items.append(InputItem(members[0], "dicom", _stem(members[0].relative_to(base))))
        else:
            rel = folder.relative_to(base) if folder != base else Path(folder.name)
            items.append(InputItem(folder, "dicom_series", str(rel)))
    items.sort(key=lambda i: str(i.path))
    used: set[str] = set()
    for item in items:  # a.png and a.jpg side by side: keep both outputs
        name = item.name
        if name in used:
            name = f"{name}_{item.path.name.split('.', 1)[-1].replace('.', '_')}"
        k = 2
        while name in used:
            name, k = f"{item.name}_{k}", k + 1
        used.add(name)
        item.name = name
    return items


# --------------------------------------------------------------------------------------------------------- loading
@dataclass
class _Case:
    """A loaded input: 2D slices (channel-first, before the bundle's transforms) and how to write its mask back."""

    item: InputItem
    slices: list[torch.Tensor]
    display: list[np.ndarray]  # per slice, (H, W) grey image as shown
    spacing: tuple[float, float] | None = None  # in-plane mm per pixel (rows, columns of a slice)
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
    from pipeline.data.transforms import ToGreyd

    return ToGreyd(keys="image")({"image": image})["image"]


def _load_raster(item: InputItem) -> _Case:
    from monai.data import MetaTensor, PILReader
    from monai.transforms import EnsureChannelFirst

    path = item.path
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty (0 bytes)")
    # the reader of the ultrasound bundle's LoadImaged (PILReader, reverse_indexing=False: (H, W) as displayed),
    # without LoadImage's registration of every other reader
    reader = PILReader(reverse_indexing=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array, meta = reader.get_data(reader.read(str(path)))
            image = EnsureChannelFirst()(MetaTensor(np.asarray(array, dtype=np.float32), meta=meta))
    except Exception as e:
        text = str(e).split("\n")[0]
        if "cannot identify image file" in text:
            raise DataError(path, "not an image Pillow can read (wrong format or corrupt header)") from None
        raise DataError(path, f"unreadable or truncated image ({type(e).__name__}: {text})") from None
    if image.ndim != 3:
        raise DataError(path, f"unsupported image layout {tuple(image.shape)}")
    _check_2d(path, int(image.shape[-2]), int(image.shape[-1]))
    _check_finite(path, image)
    image = _grey(image.float())
    return _Case(item, [image], [image[0].numpy()], writer=_png_writer, shape=tuple(image.shape[-2:]))


def _png_writer(masks: list[np.ndarray], path: Path) -> Path:
    from PIL import Image

    path = path.with_name(path.name + ".png")
    with atomic_path(path, fsync=False) as tmp:  # per-image output: atomic against a kill, no flush per file
        Image.fromarray(np.where(masks[0], 255, 0).astype(np.uint8)).save(tmp)
    return path


def _dicom_spacing(ds: Any) -> tuple[float, float] | None:
    """(row spacing, column spacing) in mm: ``PixelSpacing``, else an ultrasound region calibrated in cm."""
    spacing = ds.get("PixelSpacing")
    if spacing is not None and len(spacing) == 2:
        try:
            values = (float(spacing[0]), float(spacing[1]))
            if all(v > 0 for v in values):
                return values
        except (TypeError, ValueError):
            pass
    regions = ds.get("SequenceOfUltrasoundRegions")
    if regions:
        region = regions[0]
        if int(region.get("PhysicalUnitsXDirection", 0) or 0) == 3 and int(
                region.get("PhysicalUnitsYDirection", 0) or 0) == 3:  # 3 = cm
            dx, dy = float(region.get("PhysicalDeltaX", 0) or 0), float(region.get("PhysicalDeltaY", 0) or 0)
            if dx > 0 and dy > 0:
                return (abs(dy) * 10.0, abs(dx) * 10.0)
    return None


def _load_dicom(item: InputItem) -> _Case:
    import pydicom

    path = item.path
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty (0 bytes)")
    try:
        ds = pydicom.dcmread(path)
    except Exception as e:
        raise DataError(path, f"unreadable DICOM file ({type(e).__name__}: {e})") from None
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DataError(path, "DICOM file without pixel data (no PixelData element): nothing to predict")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DataError(path, f"multi-frame DICOM ({frames} frames, e.g. a cine loop) is not supported: export one "
                              "frame per file, or a series as one file per slice")
    try:
        pixels = np.asarray(ds.pixel_array)
    except Exception as e:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
        raise DataError(path, f"cannot decode the pixel data (transfer syntax {syntax}; {type(e).__name__}: "
                              f"{e})") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    pydicom_2 = int(pydicom.__version__.split(".")[0]) < 3
    if pixels.ndim == 2:
        if pydicom_2:  # pragma: no cover - pydicom < 3
            from pydicom.pixel_data_handlers.util import apply_modality_lut
        else:
            from pydicom.pixels import apply_modality_lut

        pixels = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float32)
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
    return _Case(item, [image], [np.asarray(image[0])], spacing=_dicom_spacing(ds), writer=_png_writer,
                 shape=tuple(image.shape[-2:]))


def _load_nifti(item: InputItem, axis: int, normalise: bool) -> _Case:
    import nibabel as nib

    from pipeline.data.sources.volumes import Volume

    path = item.path
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty (0 bytes)")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
        affine = np.asarray(img.affine, dtype=float)
    except Exception as e:
        raise DataError(path, f"unreadable NIfTI file ({type(e).__name__}: {e})") from None
    if data.dtype.fields is not None or np.iscomplexobj(data):
        raise DataError(path, f"unsupported NIfTI data type {img.get_data_dtype()} (RGB or complex)")
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


def _load_dicom_series(item: InputItem, axis: int, normalise: bool) -> _Case:
    import nibabel as nib

    from pipeline.data.sources.volumes import read_dicom_series

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


def _already_normalised(data: np.ndarray) -> bool:
    return np.issubdtype(data.dtype, np.floating) and float(data.min()) >= 0.0 and float(data.max()) <= 1.0


def _volume_case(item: InputItem, volume: Any, axis: int, normalise: bool, write: Callable) -> _Case:
    """Slices of a volume in its closest RAS orientation, and the writer that puts masks back in its voxel order."""
    from monai.data import MetaTensor
    from nibabel.orientations import apply_orientation, io_orientation, ornt_transform

    from pipeline.data.sources.volumes import normalise_percentile, to_canonical

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
    if normalise and not _already_normalised(data):
        try:
            data = normalise_percentile(data)
        except ValueError as e:
            raise DataError(path, str(e)) from None
    spacing = canonical.spacing
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
    return _Case(
        item,
        [MetaTensor(torch.as_tensor(s)[None]) for s in slices],
        slices,
        spacing=(float(spacing[in_plane[0]]), float(spacing[in_plane[1]])),
        thickness=float(spacing[slice_axis]),
        writer=lambda masks, out: write(masks, out, back),
        view=view,
        shape=tuple(original_shape),
    )


# -------------------------------------------------------------------------------------------------------- runtimes
def _flag(value: Any) -> bool:
    """A switch from Python or from a command line (``python -m monai.bundle run ... --refine false``)."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off", "", "none", "null"):
            return False
        raise ValueError(f"expected true or false, got {value!r}")
    return bool(value)


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto", ""):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but CUDA is not available; use --device cpu")
    return device


class _DictModel:
    """Callable ``x -> {"seg", "cls"}`` over a model returning ``(seg, cls)`` (what ``MultiTaskInferer`` wants)."""

    def __init__(self, model: Callable[[torch.Tensor], Any], device: torch.device) -> None:
        self.model, self.device = model, device

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(torch.as_tensor(x).to(self.device, torch.float32))
        seg, cls = (out[Head.SEG.value], out[Head.CLS.value]) if isinstance(out, dict) else out
        return {Head.SEG.value: seg, Head.CLS.value: cls}


# ------------------------------------------------------------------------------------------------------- predictor
@dataclass
class PredictionResult:
    """What ``predict`` did: the table (one row per input), where it is, and the exit code (0: at least one input
    succeeded, 1: none did)."""

    rows: list[dict[str, Any]]
    csv_path: Path
    output_dir: Path
    runtime: str
    device: str
    n_ok: int = 0
    n_failed: int = 0
    columns: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.n_ok > 0 else 1


class Predictor:
    """An exported bundle ready to predict: its configs, preprocessing, model and options.

    Args:
        bundle: the exported bundle folder (``configs/deploy.yaml`` and ``models/``; see ``pipeline.deploy``).
        runtime: ``"torchscript"`` (``models/model.ts``), ``"onnx"`` (``models/model.onnx``, ONNX Runtime), ``"torch"``
            (``models/model.pt`` into the network built from the configs) or ``"auto"``: TorchScript, else ONNX, else
            torch, whichever file exists first.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``/None (CUDA when available).
        batch_size: images (or slices) per forward pass; sliding-window tiles per pass with ``native_resolution``.
        threshold: lesion probability threshold (default: the bundle's ``seg_threshold``).
        refine: paper 004 prediction refinement (``pipeline.engines.RefinePredictiond``; only with a "normal" class).
        explain: write Grad-CAM heatmaps of the classification head (needs ``models/model.pt``).
        overlays: write overlay PNGs.
        native_resolution: sliding-window segmentation at the image's own resolution instead of resizing it to the
            training size (see the module docstring).
        slice_axis / input_normalisation / cam_layer: default from ``configs/inference.yaml``.
        progress: show a tqdm progress bar.

    Raises:
        FileNotFoundError: not an exported bundle, or the runtime's model file is missing.
        pipeline.data.io.DataError: an incomplete bundle (no ``models/export_report.json``), or a truncated or
            corrupt model file (the message names the folder or the file).
        ValueError: bad option values.
    """

    def __init__(
        self,
        bundle: str | os.PathLike,
        runtime: str = "auto",
        device: str | torch.device | None = "auto",
        batch_size: int | None = None,
        threshold: float | None = None,
        refine: bool | None = None,
        explain: bool | None = None,
        overlays: bool | None = None,
        native_resolution: bool | None = None,
        slice_axis: int | None = None,
        input_normalisation: str | None = None,
        cam_layer: str | None = None,
        progress: bool = True,
    ) -> None:
        from pipeline.deploy import EXPORT_REPORT, bundle_parser

        self.root = Path(bundle).resolve()
        if not (self.root / "configs" / "deploy.yaml").is_file():
            raise FileNotFoundError(f"{self.root} is not an exported bundle (configs/deploy.yaml not found): make one "
                                    "with `bmtl export --bundle SOURCE_BUNDLE --run RUN_DIR --output DIR`")
        if not (self.root / "models" / EXPORT_REPORT).is_file():
            # written last by `bmtl export`: without it the folder is a partial copy or an interrupted export
            raise DataError(self.root, f"incomplete exported bundle: models/{EXPORT_REPORT}, which `bmtl export` "
                                       "writes last, is missing (an interrupted export or a partial copy); re-export "
                                       "it with `bmtl export --bundle SOURCE_BUNDLE --run RUN_DIR --output "
                                       f"{self.root} --overwrite`")
        self.parser = bundle_parser(self.root, ("common.yaml", "deploy.yaml", "inference.yaml"))
        get = self._get
        self.classes = [str(c) for c in get("classes")]
        self.image_size = tuple(int(s) for s in get("image_size"))
        self.modality = str(get("modality", "US"))
        self.batch_size = int(batch_size if batch_size is not None else get("inference_batch_size", 8))
        self.threshold = float(threshold if threshold is not None else get("seg_threshold", 0.5))
        # the operating threshold of the positive class chosen on the validation fold (deploy.yaml); None: argmax
        cls_threshold = get("cls_threshold", None)
        self.cls_threshold = None if cls_threshold in (None, "", "null", "None") else float(cls_threshold)
        self.refine = _flag(refine if refine is not None else get("refine", False))
        self.explain = _flag(explain if explain is not None else get("explain", False))
        self.overlays = _flag(overlays if overlays is not None else get("overlays", True))
        self.native = _flag(native_resolution if native_resolution is not None else get("native_resolution", False))
        self.slice_axis = int(slice_axis if slice_axis is not None else get("slice_axis", 2))
        self.normalisation = str(input_normalisation or get("input_normalisation", "none"))
        self.cam_layer = cam_layer if cam_layer not in (None, "", "null", "None") else get("cam_layer", None)
        self.progress = _flag(progress)
        self.flip_tta = _flag(get("flip_tta", False))
        # the bundle's mask cleaning (largest component, hole filling) after our own threshold, as evaluation does
        from monai.transforms import AsDiscreted

        self.mask_cleaning = [t for t in get("mask_postprocessing", []) if not isinstance(t, AsDiscreted)]
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.cls_threshold is not None and not 0.0 < self.cls_threshold < 1.0:
            raise ValueError(f"cls_threshold of {self.root / 'configs' / 'deploy.yaml'} must be in (0, 1), got "
                             f"{self.cls_threshold}")
        if self.slice_axis not in (0, 1, 2):
            raise ValueError(f"slice axis must be 0, 1 or 2, got {self.slice_axis}")
        if self.normalisation not in ("none", "percentile"):
            raise ValueError(f"input_normalisation must be 'none' or 'percentile', got {self.normalisation!r}")
        self.normal_index = self.classes.index("normal") if "normal" in self.classes else None
        self.device = _resolve_device(device)
        self._eager: torch.nn.Module | None = None
        self._cam = None
        self.cam_layer_used: str | None = None
        self.runtime = self._resolve_runtime(runtime)
        self.model = self._load_model()
        self.transforms = self._preprocessing()

    # --- configuration
    def _get(self, key: str, default: Any = None) -> Any:
        if key not in self.parser:
            return default
        return self.parser.get_parsed_content(key)

    def _resolve_runtime(self, runtime: str) -> str:
        runtime = (runtime or "auto").lower()
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
        models = self.root / "models"
        if runtime == "auto":
            for candidate in ("torchscript", "onnx", "torch"):
                if (models / MODEL_FILES[candidate]).is_file():
                    if candidate == "onnx":
                        try:
                            import onnxruntime  # noqa: F401
                        except ImportError:
                            continue
                    return candidate
            raise FileNotFoundError(f"no model in {models} (expected model.ts, model.onnx or model.pt)")
        if not (models / MODEL_FILES[runtime]).is_file():
            raise FileNotFoundError(f"runtime {runtime} needs {models / MODEL_FILES[runtime]}, which does not exist")
        return runtime

    def _eager_network(self) -> torch.nn.Module:
        if self._eager is None:
            from pipeline.deploy import load_state_dict

            weights = self.root / "models" / MODEL_FILES["torch"]
            if not weights.is_file():
                raise FileNotFoundError(f"{weights} not found (needed by the torch runtime and by Grad-CAM)")
            from pipeline.handlers.checkpoint import check_checkpoint_fits

            wrapper = self.parser.get_parsed_content("export_network")
            state = load_state_dict(weights)
            check_checkpoint_fits({"network": state}, {"network": wrapper.network}, weights)  # names the mismatch
            wrapper.load_state_dict(state)
            self._eager = wrapper.to(self.device).eval()
        return self._eager

    def _load_model(self) -> _DictModel:
        path = self.root / "models" / MODEL_FILES[self.runtime]
        if self.runtime == "torch":
            model = self._eager_network()
        elif self.runtime == "torchscript":
            from pipeline.export import load_torchscript

            model = load_torchscript(path, self.device)
        else:
            from pipeline.export import OnnxModel

            model = OnnxModel(path, self.device)
        return _DictModel(model, self.device)

    def _preprocessing(self) -> list[Callable]:
        """The bundle's preprocessing transforms without the file reader (and without resizing in native mode)."""
        from monai.transforms import Compose, LoadImaged, MapTransform, Resized, SpatialPadd

        flat: list[Callable] = []

        def add(t: Any) -> None:
            if isinstance(t, Compose):
                for inner in t.transforms:
                    add(inner)
            elif isinstance(t, (list, tuple)):
                for inner in t:
                    add(inner)
            else:
                flat.append(t)

        # the bundle's LoadImaged registers every MONAI reader, and the GPU DICOM one warns when nvImageCodec is absent
        plugin_logger = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
        level = plugin_logger.level
        plugin_logger.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
                add(self.parser.get_parsed_content("preprocessing_transforms"))
        finally:
            plugin_logger.setLevel(level)
        kept = []
        for t in flat:
            if isinstance(t, LoadImaged) or (self.native and isinstance(t, (Resized, SpatialPadd))):
                continue
            if isinstance(t, MapTransform):
                t.allow_missing_keys = True  # the label key of training is absent
            kept.append(t)
        return kept

    def preprocess(self, image: torch.Tensor) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """The network input of one slice, and the operations MONAI recorded (resize, padding) to invert later."""
        from monai.data import MetaTensor

        data = {"image": image}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. MONAI's "divide by zero" on a constant (empty) slice
            for t in self.transforms:
                data = t(data)
        out = data["image"]
        operations = list(out.applied_operations) if isinstance(out, MetaTensor) else []
        out = torch.as_tensor(out, dtype=torch.float32)
        return (out.as_subclass(torch.Tensor) if hasattr(out, "as_subclass") else out), operations

    def to_input_geometry(self, prob: torch.Tensor, operations: list[dict[str, Any]]) -> torch.Tensor:
        """A ``(1, h, w)`` map at the network's size back to the slice's own geometry: MONAI's inverse of the
        preprocessing's resize (and padding, with ``keep_aspect``), as evaluation's ``Invertd`` does."""
        from monai.data import MetaTensor
        from monai.transforms import Compose

        if not operations:
            return prob
        traced = MetaTensor(prob, applied_operations=[dict(op) for op in operations])
        return torch.as_tensor(Compose(self.transforms).inverse({"image": traced})["image"]).as_subclass(torch.Tensor)

    # --- inference
    @torch.no_grad()
    def _forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from pipeline.engines import MultiTaskInferer

        inferer = MultiTaskInferer(roi_size=self.image_size, sw_batch_size=self.batch_size, flip_tta=self.flip_tta)
        out = inferer(batch.to(self.device), self.model)
        return out[Head.SEG.value].float().cpu(), out[Head.CLS.value].float().cpu()

    def _postprocess(self, seg: torch.Tensor, cls: torch.Tensor, size: tuple[int, int],
                     operations: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, bool]:
        """One slice: lesion probability back at ``size`` -> mask, class probabilities, refinement."""
        from pipeline.engines import RefinePredictiond

        prob = torch.sigmoid(seg[:1]) if seg.shape[0] == 1 else torch.softmax(seg, 0)[1:2]
        prob = self.to_input_geometry(prob, operations)
        if tuple(prob.shape[-2:]) != tuple(size):
            raise RuntimeError(f"the lesion probability came back at {tuple(prob.shape[-2:])}, the input is {size}")
        mask = {"pred_seg": (torch.as_tensor(prob) >= self.threshold).float()}
        for clean in self.mask_cleaning:
            mask = clean(mask)
        mask = torch.as_tensor(mask["pred_seg"]) > 0
        probs = torch.softmax(cls, 0)
        refined = RefinePredictiond(keys="pred_seg", cls_key="pred_cls", normal_index=self.normal_index,
                                    enabled=self.refine)({"pred_seg": mask, "pred_cls": probs})
        return (np.asarray(torch.as_tensor(refined["pred_seg"])[0].cpu(), dtype=bool),
                np.asarray(torch.as_tensor(refined["pred_cls"]).cpu(), dtype=np.float64), bool(refined["refined"]))

    # --- Grad-CAM
    def _cam_layer(self, network: torch.nn.Module, x: torch.Tensor) -> str:
        """The last convolution (in execution order) that the class logits depend on, at stride <= 16 when there is
        one (a finer map than the last 1x1 convolution of a classifier)."""
        if self.cam_layer:
            return str(self.cam_layer)
        order: list[tuple[str, torch.Tensor]] = []
        hooks = []

        def record(name: str) -> Callable:
            def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
                if isinstance(output, torch.Tensor) and output.requires_grad:
                    output.retain_grad()
                    order.append((name, output))
            return hook

        for name, module in network.named_modules():
            if isinstance(module, torch.nn.Conv2d):
                hooks.append(module.register_forward_hook(record(name)))
        try:
            with torch.enable_grad():
                logits = network(x.requires_grad_(True))
                logits[0, int(logits[0].argmax())].backward()
        finally:
            for h in hooks:
                h.remove()
        height = x.shape[-2]
        used = [(n, o) for n, o in order if o.grad is not None and bool(o.grad.abs().sum() > 0) and o.shape[-2] > 1]
        if not used:
            raise RuntimeError("no convolution feeds the classification head: set cam_layer in inference.yaml")
        fine = [n for n, o in used if o.shape[-2] * 16 >= height]
        return fine[-1] if fine else used[-1][0]

    def gradcam(self, x: torch.Tensor, class_index: int) -> np.ndarray:
        """Grad-CAM (``monai.visualize.GradCAM``) of ``class_index`` for one preprocessed image ``(C, h, w)``:
        ``(h, w)`` in [0, 1]."""
        from monai.visualize import GradCAM

        if self._cam is None:
            wrapper = self._eager_network()

            class ClassLogits(torch.nn.Module):
                def __init__(self, net: torch.nn.Module) -> None:
                    super().__init__()
                    self.net = net

                def forward(self, inp: torch.Tensor) -> torch.Tensor:
                    return self.net(inp)[1]

            module = ClassLogits(wrapper).eval()
            layer = self._cam_layer(module, x[None].clone().to(self.device))
            self.cam_layer_used = layer
            self._cam = GradCAM(nn_module=module, target_layers=layer)
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cam = self._cam(x[None].to(self.device), class_idx=int(class_index))
        return np.asarray(torch.as_tensor(cam)[0, 0].detach().cpu(), dtype=np.float32)

    # --- the loop
    def _load(self, item: InputItem) -> _Case:
        normalise = self.normalisation == "percentile"
        if item.kind == "unsupported":
            raise DataError(item.path, item.problem or "unsupported file type")
        if item.kind == "raster":
            case = _load_raster(item)
        elif item.kind == "dicom":
            case = _load_dicom(item)
        elif item.kind == "nifti":
            return _load_nifti(item, self.slice_axis, normalise)
        else:
            return _load_dicom_series(item, self.slice_axis, normalise)
        if normalise:  # a 2D image for a bundle trained on per-volume normalised slices: per image
            from monai.data import MetaTensor

            from pipeline.data.sources.volumes import normalise_percentile

            image = case.slices[0]
            if not _already_normalised(np.asarray(image)):
                try:
                    case.slices[0] = MetaTensor(torch.as_tensor(normalise_percentile(np.asarray(image))))
                except ValueError as e:
                    raise DataError(item.path, str(e)) from None
        return case

    def __call__(self, inputs: str | os.PathLike | Sequence[InputItem], output_dir: str | os.PathLike,
                 overwrite: bool = False, resume: bool = False) -> PredictionResult:
        """Predict ``inputs`` into ``output_dir``; a folder holding an earlier run needs ``overwrite`` or ``resume``
        (``pipeline.prediction_journal``)."""
        out = Path(output_dir)
        items = discover_inputs(inputs, exclude=out) if isinstance(inputs, (str, os.PathLike)) else list(inputs)
        described = str(inputs) if isinstance(inputs, (str, os.PathLike)) else f"{len(items)} inputs"
        journal = PredictionJournal(out, overwrite=overwrite, resume=resume,
                                    description={"bundle": str(self.root), "input": _text(described)})
        try:
            return self._predict_all(items, out, journal)
        finally:
            journal.close()

    def _predict_all(self, items: list[InputItem], out: Path, journal: PredictionJournal) -> PredictionResult:
        from tqdm.auto import tqdm

        rows: dict[int, dict[str, Any]] = {}
        pending: list[tuple[int, _Case, int, torch.Tensor]] = []
        states: dict[int, dict[str, Any]] = {}

        def fail(index: int, item: InputItem, error: Exception | str) -> None:
            rows[index] = self._error_row(item, error)
            journal.record(rows[index])
            states.pop(index, None)

        def flush(final: bool) -> None:
            while pending:
                first_shape = tuple(pending[0][3].shape)
                take = [p for p in pending if tuple(p[3].shape) == first_shape][: self.batch_size]
                if not final and len(take) < self.batch_size and not self.native:
                    return  # wait for a full batch
                for p in take:
                    pending.remove(p)
                live = [p for p in take if p[0] in states]
                if not live:
                    continue
                try:
                    seg, cls = self._forward(torch.stack([p[3] for p in live]))
                except Exception as e:  # keep going with the other inputs
                    for p in live:
                        fail(p[0], p[1].item, f"inference failed ({type(e).__name__}: {e})")
                    continue
                for j, (index, case, k, _) in enumerate(live):
                    if index not in states:
                        continue
                    try:
                        size = tuple(case.display[k].shape[-2:])
                        states[index]["results"][k] = self._postprocess(seg[j], cls[j], size,
                                                                        states[index]["operations"][k])
                        if all(r is not None for r in states[index]["results"]):
                            rows[index] = self._finish(case, states.pop(index), out)
                            journal.record(rows[index])
                    except Exception as e:
                        fail(index, case.item, e)

        bar = tqdm(total=len(items), unit="input", disable=not self.progress, desc="predict")
        for index, item in enumerate(items):
            if _text(item.path) in journal.done:   # --resume: predicted by the interrupted run
                rows[index] = {**self._base_row(item), **journal.done[_text(item.path)]}
                bar.update(1)
                continue
            try:
                case = self._load(item)
                tensors, operations = zip(*[self.preprocess(s) for s in case.slices])
                for t in tensors:
                    if not torch.isfinite(t).all():
                        raise DataError(item.path, "non-finite values after preprocessing")
            except Exception as e:
                fail(index, item, e)
                bar.update(1)
                continue
            states[index] = {"results": [None] * len(tensors), "tensors": tensors if self.explain else None,
                             "operations": operations}
            pending.extend((index, case, k, t) for k, t in enumerate(tensors))
            flush(final=False)
            bar.update(1)
        flush(final=True)
        bar.close()
        return journal.finish(lambda table: self._write_table(table, out), [rows[i] for i in sorted(rows)])

    # --- outputs
    def _base_row(self, item: InputItem) -> dict[str, Any]:
        row: dict[str, Any] = {c: "" for c in self.columns}
        row.update(file=_text(item.path), type=item.kind)
        return row

    @property
    def columns(self) -> list[str]:
        return [*_FIXED_COLUMNS, *(f"prob_{c}" for c in self.classes), *_MEASURE_COLUMNS]

    def _error_row(self, item: InputItem, error: Exception | str) -> dict[str, Any]:
        row = self._base_row(item)
        if isinstance(error, DataError):
            text = error.problem
        elif isinstance(error, Exception):
            text = f"{type(error).__name__}: {error}"
        else:
            text = str(error)
        row.update(status="error", error=text.encode("utf-8", "backslashreplace").decode("utf-8"))
        logger.info("%s: %s", item.path, text)
        return row

    def _finish(self, case: _Case, state: dict[str, Any], out: Path) -> dict[str, Any]:
        results = state["results"]
        masks = [r[0] for r in results]
        areas = np.array([int(m.sum()) for m in masks])
        probs = np.stack([r[1] for r in results])
        with_lesion = areas > 0
        mean_probs = probs[with_lesion].mean(0) if with_lesion.any() else probs.mean(0)
        predicted = int(predicted_classes(mean_probs, self.cls_threshold)[0])
        best = int(np.argmax(areas)) if with_lesion.any() else len(masks) // 2
        item = case.item
        row = self._base_row(item)
        row.update(status="ok", predicted_class=self.classes[predicted], refined=any(r[2] for r in results),
                   n_slices=len(masks), height=masks[best].shape[0], width=masks[best].shape[1],
                   lesion_area_px=int(areas[best] if len(masks) > 1 else areas[0]))
        for c, p in zip(self.classes, mean_probs):
            row[f"prob_{c}"] = round(float(p), 6)
        if case.spacing is not None:
            row["spacing_mm"] = "x".join(f"{s:.4g}" for s in case.spacing)
            row["lesion_area_mm2"] = round(float(row["lesion_area_px"]) * case.spacing[0] * case.spacing[1], 3)
        if len(masks) > 1:
            row["lesion_voxels"] = int(areas.sum())
            if case.spacing is not None and case.thickness is not None:
                row["lesion_volume_mm3"] = round(float(areas.sum()) * case.spacing[0] * case.spacing[1]
                                                 * case.thickness, 3)
        row["mask"] = _text(case.writer(masks, out / "masks" / f"{item.name}_mask"))
        image = case.view(case.display[best])
        mask = case.view(masks[best])
        if self.overlays:
            lines = [_text(Path(item.name).name) + (f" (slice {best})" if len(masks) > 1 else ""),
                     f"{self.classes[predicted]}  p={mean_probs[predicted]:.2f}  lesion {int(areas[best])} px"]
            row["overlay"] = _text(_write_overlay(out / "overlays" / f"{item.name}_overlay.png", image, mask, lines))
        if self.explain:
            heat = self.gradcam(state["tensors"][best], predicted)
            heat = self._to_size(heat, case.display[best].shape[-2:])
            path = _write_heatmap(out / "heatmaps" / f"{item.name}_gradcam.png", image, case.view(heat))
            row["heatmap"] = _text(path)
        return row

    @staticmethod
    def _to_size(heat: np.ndarray, size: Sequence[int]) -> np.ndarray:
        from monai.transforms import Resize

        if tuple(heat.shape) == tuple(size):
            return heat
        return np.asarray(Resize(spatial_size=tuple(size), mode="bilinear", anti_aliasing=False)(heat[None]))[0]

    def _write_table(self, rows: list[dict[str, Any]], out: Path) -> PredictionResult:
        path = out / "predictions.csv"
        columns = self.columns
        # a rerun killed while writing keeps the previous complete table
        write_rows_atomic(path, columns, rows, extrasaction="ignore")
        n_ok = sum(r["status"] == "ok" for r in rows)
        return PredictionResult(rows=rows, csv_path=path, output_dir=out, runtime=self.runtime, device=str(self.device),
                                n_ok=n_ok, n_failed=len(rows) - n_ok, columns=columns)


def _text(path: str | os.PathLike) -> str:
    """A path as printable UTF-8 text (undecodable bytes of a file name, e.g. Latin-1 on Linux, shown as ``\\xNN``)."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def _write_overlay(path: Path, image: np.ndarray, mask: np.ndarray, lines: Sequence[str]) -> Path:
    """The grey image (1-99 percentile window) with the predicted lesion contour in red and a two-line title."""
    from matplotlib.figure import Figure

    img = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(img, [1, 99]) if img.size else (0.0, 1.0)
    h, w = img.shape
    scale = 4.0 / max(h, w)
    fig = Figure(figsize=(max(w * scale, 2.5), h * scale + 0.6), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
    if np.asarray(mask).any():
        ax.contour(np.asarray(mask, dtype=np.float32), levels=[0.5], colors="red", linewidths=1.5)
    ax.set_axis_off()
    ax.set_title("\n".join(lines), fontsize=9)
    with atomic_path(path, fsync=False) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=110, facecolor="white")
    return path


def _write_heatmap(path: Path, image: np.ndarray, heat: np.ndarray) -> Path:
    """The heatmap (jet colours) blended half over the grey image, written at the image's size."""
    from matplotlib import colormaps
    from PIL import Image

    img = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(img, [1, 99]) if img.size else (0.0, 1.0)
    grey = np.clip((img - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    colours = colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    blend = 0.5 * grey[..., None] + 0.5 * colours
    with atomic_path(path, fsync=False) as tmp:
        Image.fromarray(np.round(blend * 255).astype(np.uint8)).save(tmp)
    return path


def predict(
    bundle: str | os.PathLike,
    input: str | os.PathLike,
    output_dir: str | os.PathLike,
    runtime: str = "auto",
    device: str | None = "auto",
    batch_size: int | None = None,
    threshold: float | None = None,
    refine: bool | None = None,
    explain: bool | None = None,
    overlays: bool | None = None,
    native_resolution: bool | None = None,
    progress: bool = True,
    overwrite: bool = False,
    resume: bool = False,
    **options: Any,
) -> PredictionResult:
    """Predict every image under ``input`` with the exported ``bundle`` and write masks, overlays, heatmaps and
    ``predictions.csv`` into ``output_dir`` (see the module docstring and ``Predictor`` for the options).
    ``output_dir`` holding an earlier run is refused unless ``overwrite`` (start again) or ``resume`` (finish an
    interrupted run, skipping the inputs it predicted).

    Returns:
        a ``PredictionResult``; its ``exit_code`` is 0 when at least one input succeeded, 1 when none did.

    Raises:
        FileNotFoundError: the input or the bundle's model is missing; not an exported bundle.
        FileExistsError: ``output_dir`` holds an earlier run and neither ``overwrite`` nor ``resume`` is given.
        pipeline.data.io.DataError: an incomplete exported bundle, a truncated or corrupt model file.
        ValueError: bad options.
    """
    if not str(input):
        raise ValueError("no input given (--input / --input_dir)")
    predictor = Predictor(bundle, runtime=runtime, device=device, batch_size=batch_size, threshold=threshold,
                          refine=refine, explain=explain, overlays=overlays, native_resolution=native_resolution,
                          progress=progress, **options)
    return predictor(input, output_dir, overwrite=overwrite, resume=resume)
