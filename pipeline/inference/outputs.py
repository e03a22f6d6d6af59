"""What ``bmtl predict`` writes besides the table: mask PNGs, overlays and Grad-CAM heatmaps (each atomically)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import NAME_MAX, atomic_path, truncate_bytes

__all__ = ["text", "derived_name", "MASK_EXTENSION_BYTES", "DRAW_MAX_SIDE", "capped_size", "capped", "write_png_mask",
           "write_overlay", "heatmap_figure", "write_heatmap", "resize_to", "write_case_files"]

# the longest extension a mask writer adds to its name (``.nii.gz``)
MASK_EXTENSION_BYTES = len(".nii.gz")
# overlays and heatmaps are drawn from copies at most this many pixels on their longest side: an 8000 x 8000 input
# would otherwise take gigabytes in matplotlib's full-size float images (the figures are smaller than this anyway)
DRAW_MAX_SIDE = 2048


def text(path: str | os.PathLike) -> str:
    """A path as printable UTF-8 text (undecodable bytes of a file name, e.g. Latin-1 on Linux, shown as ``\\xNN``)."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def derived_name(name: str, tail: str, reserve: int = 0) -> str:
    """An output's name: ``name + tail`` (``"sub/case" + "_overlay.png"``), its last part shortened when it would pass
    the file system's ``NAME_MAX`` bytes (a long input name is valid; the same name plus ``_overlay.png`` may not be).

    A shortened name keeps a readable start of the input's stem, then ``~`` and 10 hex digits of the full stem's SHA-1,
    so two long names that differ only at their end still get two outputs.

    Args:
        name: the input's output stem, relative (``InputItem.name``; it may hold folders).
        tail: what follows the stem (``"_mask"``, ``"_overlay.png"``).
        reserve: bytes left for an extension the writer adds afterwards (a mask writer's ``.png`` or ``.nii.gz``).

    Returns:
        the relative output name.
    """
    path = Path(name)
    size = len(os.fsencode(path.name + tail)) + reserve
    if size <= NAME_MAX:
        return name + tail
    digest = hashlib.sha1(os.fsencode(path.name)).hexdigest()[:10]
    room = NAME_MAX - reserve - len(os.fsencode(tail)) - len(digest) - 1
    return str(path.with_name(f"{truncate_bytes(path.name, room)}~{digest}{tail}"))


def write_png_mask(masks: list[np.ndarray], path: Path) -> Path:
    """The mask of a 2D input as ``<path>.png``: 8-bit, 0 = background, 255 = lesion."""
    from PIL import Image

    path = path.with_name(path.name + ".png")
    with atomic_path(path, fsync=False) as tmp:  # per-image output: atomic against a kill, no flush per file
        Image.fromarray(np.where(masks[0], 255, 0).astype(np.uint8)).save(tmp)
    return path


def capped_size(shape: Sequence[int], max_side: int = DRAW_MAX_SIDE) -> tuple[int, int]:
    """``(h, w)`` of ``shape`` scaled down (aspect kept) so that its longest side is at most ``max_side``."""
    h, w = int(shape[-2]), int(shape[-1])
    scale = min(1.0, max_side / max(h, w, 1))
    return (max(1, round(h * scale)), max(1, round(w * scale))) if scale < 1.0 else (h, w)


def capped(array: np.ndarray, max_side: int = DRAW_MAX_SIDE, size: Sequence[int] | None = None) -> np.ndarray:
    """A 2D array as float32 at ``size`` (default: ``capped_size``), resized with Pillow (area average when
    shrinking, bilinear when growing); the array itself when it already has that size.

    A mask comes out as the fraction of lesion per pixel: its contour at 0.5 follows the full-size one.
    """
    from PIL import Image

    arr = np.asarray(array)
    target = tuple(size) if size is not None else capped_size(arr.shape, max_side)
    if tuple(arr.shape) == target:
        return arr.astype(np.float32, copy=False)
    if arr.dtype == bool:   # 1 byte per pixel, not 4, while it is still full size
        arr = arr.astype(np.uint8) * np.uint8(255)
        picture, unit = Image.fromarray(arr), 255.0   # mode L
    else:
        picture, unit = Image.fromarray(arr.astype(np.float32, copy=False)), 1.0   # mode F
    shrink = target[0] * target[1] < arr.shape[0] * arr.shape[1]
    resample = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
    out = np.asarray(picture.resize((target[1], target[0]), resample=resample), dtype=np.float32)
    return out / unit if unit != 1.0 else out


def write_overlay(path: Path, image: np.ndarray, mask: np.ndarray, lines: Sequence[str]) -> Path:
    """The grey image (1-99 percentile window) with the predicted lesion contour (the reports' prediction colour
    and style: orange, dashed, readable with a colour-vision deficiency) and a two-line title; drawn from copies at
    most ``DRAW_MAX_SIDE`` pixels on their longest side (the figure is smaller), so a huge input stays cheap."""
    from matplotlib.figure import Figure

    from pipeline.plots import PRED_COLOUR, PRED_STYLE, show_grey

    img = capped(image)
    h, w = img.shape
    scale = 4.0 / max(h, w)
    fig = Figure(figsize=(max(w * scale, 2.5), h * scale + 0.6), layout="constrained")
    ax = fig.add_subplot()
    show_grey(ax, img)
    if np.asarray(mask).any():
        ax.contour(capped(np.asarray(mask, dtype=bool), size=img.shape), levels=[0.5], colors=PRED_COLOUR,
                   linewidths=1.8, linestyles=PRED_STYLE)
    ax.set_axis_off()
    ax.set_title("\n".join(lines), fontsize=9, parse_math=False)  # a file name is data, not mathtext
    with atomic_path(path, fsync=False) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=110, facecolor="white")
    return path


def heatmap_figure(image: np.ndarray, heat: np.ndarray, class_name: str, title: str = "") -> Any:
    """The Grad-CAM figure: the heatmap (jet colours, half transparent) over the grey image (1-99 percentile window),
    a colour bar of the map's scale and a title naming the class it explains (and ``title``, e.g. the file name).

    The image is drawn from copies at most ``DRAW_MAX_SIDE`` pixels on their longest side (``heat`` of any size is
    resized to it), about one pixel of the figure per pixel of that copy, and at least 440 pixels on the longest side
    so that the title and colour bar stay readable.

    Args:
        image: the grey image ``(H, W)`` as displayed.
        heat: the Grad-CAM map in [0, 1], any size (resized to the drawn image).
        class_name: the class the map explains (the predicted one).
        title: a second title line, drawn as text (a file name is data: never matplotlib mathtext).

    Returns:
        a ``matplotlib.figure.Figure`` (no pyplot: nothing global is touched).
    """
    from matplotlib.figure import Figure

    from pipeline.plots import show_grey, show_heat

    img = capped(image)
    h, w = img.shape
    dpi = 110
    side = min(max(h, w, 440), DRAW_MAX_SIDE) / dpi   # inches of the image's longest side
    scale = side / max(h, w)
    fig = Figure(figsize=(max(w * scale, 2.5) + 1.1, h * scale + 0.7), dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    show_grey(ax, img)
    shown = show_heat(ax, capped(heat, size=img.shape))
    ax.set_axis_off()
    bar = fig.colorbar(shown, ax=ax, fraction=0.05, pad=0.02)
    bar.set_label("Grad-CAM (class evidence, 0-1)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    lines = [f"Grad-CAM of class: {class_name}"] + ([title] if title else [])
    ax.set_title("\n".join(lines), fontsize=9, parse_math=False)  # names are data, not mathtext
    return fig


def write_heatmap(path: Path, image: np.ndarray, heat: np.ndarray, class_name: str, title: str = "") -> Path:
    """Write ``heatmap_figure(image, heat, class_name, title)`` to ``path`` (atomically).

    Returns:
        ``path``.
    """
    fig = heatmap_figure(image, heat, class_name, title)
    with atomic_path(path, fsync=False) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", facecolor="white")
    return path


def resize_to(heat: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """A 2D map resized (bilinear) to ``size``."""
    from monai.transforms import Resize

    if tuple(heat.shape) == tuple(size):
        return heat
    return np.asarray(Resize(spatial_size=tuple(size), mode="bilinear", anti_aliasing=False)(heat[None]))[0]


def write_case_files(case: Any, summary: Any, out: Path, classes: Sequence[str], overlay: bool = True,
                     heat: Callable[[], np.ndarray] | None = None) -> dict[str, str]:
    """Write one input's mask (its ``case.writer``), overlay and Grad-CAM heatmap under ``out``; returns their
    paths relative to ``out`` by column (``mask``, ``overlay``, ``heatmap``).

    All or none: should one fail, those already written are removed before the error propagates (the caller records
    the error row), so an error row never has a mask beside it.

    Args:
        case: the input (``pipeline.inference.loaders.Case``).
        summary: its predictions (``pipeline.inference.table.CaseSummary``).
        out: the output folder.
        classes: the model's class names.
        overlay: draw the overlay.
        heat: the Grad-CAM map of the best slice for the predicted class (None: no heatmap).
    """
    item, best, predicted = case.item, summary.best, summary.predicted
    written: list[Path] = []
    columns: dict[str, str] = {}
    try:
        # long input names are shortened for the derived files (with room for the writer's extension)
        mask_name = derived_name(item.name, "_mask", MASK_EXTENSION_BYTES)
        written.append(case.writer(summary.masks, out / "masks" / mask_name))
        columns["mask"] = text(written[-1].relative_to(out))
        image = case.view(case.display[best])
        if overlay:
            lines = [text(Path(item.name).name) + (f" (slice {best})" if len(summary.masks) > 1 else ""),
                     f"{classes[predicted]}  p={summary.probs[predicted]:.2f}  lesion {int(summary.areas[best])} px"]
            written.append(write_overlay(out / "overlays" / derived_name(item.name, "_overlay.png"), image,
                                         case.view(summary.masks[best]), lines))
            columns["overlay"] = text(written[-1].relative_to(out))
        if heat is not None:
            written.append(write_heatmap(out / "heatmaps" / derived_name(item.name, "_gradcam.png"), image,
                                         case.view(heat()), classes[predicted], text(Path(item.name).name)))
            columns["heatmap"] = text(written[-1].relative_to(out))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return columns
