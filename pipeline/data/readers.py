"""MONAI image loading over the project's own file reading (``pipeline.data.io``), so that the bundles read a 2D file
exactly as ``bmtl prepare`` and ``bmtl predict`` do."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from monai.config import KeysCollection
from monai.data import ImageReader, PILReader
from monai.transforms import LoadImaged
from monai.utils import ensure_tuple
from PIL import Image

from pipeline.data.io import read_grey_uint8

__all__ = ["RasterReader", "LoadRasterd"]


class RasterReader(PILReader):
    """MONAI's ``PILReader`` reading each file through ``read_grey_uint8``: one 8-bit grey channel as displayed
    (palette and CMYK through their colours, EXIF orientation applied, 16-bit min-max scaled; multi-page files and
    other bad files refused with a ``DataError`` naming the file). Prepared PNGs (8-bit grey) read as before.

    Args:
        reverse_indexing: as ``PILReader`` (the bundles use ``False``: ``(H, W)`` arrays as the files are displayed).
        kwargs: passed to ``PILReader``.
    """

    def read(self, data: Sequence[Any] | Any, **kwargs: Any) -> Image.Image | list[Image.Image]:
        images = [Image.fromarray(read_grey_uint8(name)) for name in ensure_tuple(data)]
        if callable(self.converter):
            images = [self.converter(img) for img in images]
        return images if len(images) > 1 else images[0]


class LoadRasterd(LoadImaged):
    """``LoadImaged`` reading with ``RasterReader`` alone: ``(1, H, W)`` channel-first grey images as displayed.

    The reader is given to ``LoadImage`` at call time, which makes it the only one: a reader chosen at construction
    is tried first, and when it raises, ``LoadImage`` falls back to its other registered readers, so a file the
    reader refuses (a multi-page TIFF, a rotated TIFF) would silently be read by another one. Here the reader's
    ``DataError`` (naming the file and the problem) is what the caller sees.

    Args:
        keys: the keys of the file paths.
        kwargs: passed to ``LoadImaged`` (``image_only`` and ``ensure_channel_first`` are fixed).
    """

    def __init__(self, keys: KeysCollection, **kwargs: Any) -> None:
        super().__init__(keys, image_only=True, ensure_channel_first=True, **kwargs)
        self.raster_reader = RasterReader(reverse_indexing=False)

    def __call__(self, data: Any, reader: ImageReader | None = None) -> dict[Hashable, Any]:
        return super().__call__(data, reader if reader is not None else self.raster_reader)
