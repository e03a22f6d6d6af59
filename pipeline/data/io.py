"""Reading and writing 2D images and lesion masks while preparing datasets.

Preparation reads with Pillow into ``(H, W)`` numpy arrays (row-major, as the files are displayed: EXIF orientation
applied) rather than with MONAI's ``LoadImage``: MONAI's PNG readers return ``(W, H)`` arrays, and the prepared files
must keep the original orientation. Training then reads the prepared files with MONAI, image and mask alike, so they
stay consistent; ``bmtl predict`` reads a raster through ``read_grey_uint8``, as preparation does.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.atomic import atomic_path

__all__ = [
    "DataError",
    "display_path",
    "IMAGE_EXTENSIONS",
    "read_grey",
    "read_grey_uint8",
    "read_mask",
    "to_uint8",
    "write_png",
    "write_mask_png",
    "check_mask_matches",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_ORIENTATION = 0x0112   # EXIF / TIFF tag 274


class DataError(ValueError):
    """A problem with one input file: the message names the file and the problem.

    Args:
        path: the offending file (or folder).
        problem: what is wrong, and where possible what to do about it.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{display_path(self.path)}: {problem}")


def display_path(path: str | os.PathLike) -> str:
    """``path`` as printable text: bytes of a file name that are not valid UTF-8 (a Latin-1 name on Linux, read by
    Python as surrogate escapes that cannot be printed or written to a UTF-8 file) are shown as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def _open(path: Path) -> Image.Image:
    if not path.exists():
        raise DataError(path, "file not found")
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
            orientation = int(img.getexif().get(_ORIENTATION, 1) or 1)   # before load(): TIFF drops it there
            img.load()  # PIL opens lazily: force decoding so a truncated file fails here
            # counting a TIFF's pages reads every page's header: a corrupt later page fails here too
            frames = int(getattr(img, "n_frames", 1) or 1)
    except UnidentifiedImageError:
        raise DataError(path, "not an image Pillow can read (wrong format or corrupt header)") from None
    except Image.DecompressionBombError as e:
        raise DataError(path, f"image is too large to be read safely ({e}); a corrupt header or a decompression "
                              "bomb") from None
    except MemoryError:
        raise DataError(path, "image is too large: out of memory while decoding it") from None
    except Exception as e:  # Pillow's decoders raise many types on corrupt data (struct.error, IndexError, ...)
        raise DataError(path, f"unreadable or truncated image ({type(e).__name__}: {e})") from None
    if frames > 1:  # Pillow would silently read the first page / frame only
        raise DataError(path, f"multi-page or animated image ({frames} frames): export one image per file")
    if img.width < 2 or img.height < 2:
        raise DataError(path, f"image is too small ({img.width}x{img.height} pixels)")
    # as the file is displayed: a photo's EXIF orientation (what viewers and annotation tools apply) is applied, so
    # that a mask drawn on the displayed image lines up and `bmtl predict`'s mask matches what the user sees
    if orientation != 1 and img.format == "TIFF":
        # Pillow's TIFF decoder applies some orientations itself and garbles others (a 90-degree one keeps the
        # unrotated size): refuse rather than read a wrong picture
        raise DataError(path, f"TIFF with orientation tag {orientation} (rotated or flipped display): save it "
                              "upright (orientation 1) or as PNG")
    return ImageOps.exif_transpose(img)


def read_grey(path: str | os.PathLike) -> np.ndarray:
    """Read an image as a single-channel ``(H, W)`` array.

    RGB(A) and palette images become grey (ITU-R 601 luma, what Pillow's ``"L"`` mode does; alpha is dropped);
    16-bit and float images keep their dtype so that no precision is lost.

    Raises:
        DataError: missing, empty, unreadable, truncated, or smaller than 2x2 pixels.
    """
    path = Path(path)
    img = _open(path)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img)
        if arr.ndim != 2:
            raise DataError(path, f"unsupported image layout {arr.shape} in mode {img.mode}")
        return arr.copy()
    if img.mode in ("1", "L"):
        return np.asarray(img.convert("L")).copy()
    if img.mode == "LA":
        return np.asarray(img.getchannel("L")).copy()
    return np.asarray(img.convert("RGB").convert("L")).copy()


def read_grey_uint8(path: str | os.PathLike) -> np.ndarray:
    """The 8-bit grey ``(H, W)`` image of a 2D raster file, exactly as ``bmtl prepare`` writes it for training
    (``read_grey`` then ``to_uint8``), so that a file means the same thing when ``bmtl predict`` reads it: palette
    and CMYK images through their colours (not their palette indices or ink channels), 16-bit images min-max scaled.

    Raises:
        DataError: missing, empty, unreadable, truncated, too small, or holding NaN / infinite values.
    """
    image = read_grey(path)
    try:
        return to_uint8(image)
    except ValueError as e:
        raise DataError(Path(path), str(e)) from None


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a lesion mask as a boolean ``(H, W)`` array.

    Accepts 1-bit, 8-bit (0/1, 0/255 or any two values 0/v), 16-bit, RGB and RGBA masks. For colour masks the lesion
    is where any colour channel is non-zero; a mask whose colour channels are all zero but whose alpha channel varies
    is read from alpha.

    Raises:
        DataError: unreadable, or not binary (more than two distinct values, e.g. anti-aliased or JPEG-compressed).
    """
    path = Path(path)
    img = _open(path)
    if img.mode == "P":
        img = img.convert("RGBA")
    arr = np.asarray(img)
    if arr.ndim == 3:
        has_alpha = arr.shape[-1] in (2, 4)
        colour, alpha = (arr[..., :-1], arr[..., -1]) if has_alpha else (arr, None)
        if alpha is not None and not colour.any() and np.unique(alpha).size > 1:
            arr = alpha
        else:
            arr = colour.max(axis=-1)
    values = np.unique(arr)
    if values.size > 2 or (values.size == 2 and values[0] != 0):
        shown = ", ".join(str(v) for v in values[:6]) + (", ..." if values.size > 6 else "")
        raise DataError(
            path, f"mask is not binary: it has {values.size} distinct values ({shown}); expected 0 and one other value"
        )
    return arr > 0


def check_mask_matches(mask: np.ndarray, image_shape: tuple[int, ...], mask_path: str | os.PathLike) -> None:
    """Raise a ``DataError`` naming ``mask_path`` when the mask's size differs from the image's."""
    if tuple(mask.shape[:2]) != tuple(image_shape[:2]):
        h, w = image_shape[:2]
        raise DataError(
            mask_path, f"mask size {mask.shape[1]}x{mask.shape[0]} differs from its image's size {w}x{h} (WxH)"
        )


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Bring a grey image to uint8 for writing: uint8 is kept, other dtypes are min-max scaled to 0..255.

    Raises:
        ValueError: the image holds NaN or infinite values.
    """
    if image.dtype == np.uint8:
        return image
    arr = image.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("image holds NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.round((arr - lo) / (hi - lo) * 255.0).astype(np.uint8)


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write a 2D uint8 or uint16 array as a grey PNG (parents created). Returns the path."""
    path = Path(path)
    if image.ndim != 2 or image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"write_png expects a 2D uint8/uint16 array, got {image.dtype} {image.shape}")
    with atomic_path(path, fsync=False) as tmp:  # a kill mid-prepare never leaves a truncated image (bulk: no flush)
        Image.fromarray(image).save(tmp)  # format from the suffix, kept by the temporary name
    return path


def write_mask_png(path: str | os.PathLike, mask: np.ndarray) -> Path:
    """Write a boolean/0-1 mask as an 8-bit PNG holding 0 and 1 (the datalist convention). Returns the path."""
    return write_png(path, (np.asarray(mask) > 0).astype(np.uint8))
