"""The bundles' LoadImaged reads a file as ``bmtl prepare`` and ``bmtl predict`` do."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.data.io import DataError, read_grey_uint8, write_mask_png
from pipeline.data.readers import LoadRasterd


def _load(path):
    return LoadRasterd(keys="image")({"image": str(path)})["image"]


def test_palette_and_exif_images_load_as_displayed_grey(tmp_path):
    y, x = np.mgrid[0:20, 0:30]
    grey = (20 + 5 * x + 3 * y).astype(np.uint8)
    Image.fromarray(np.stack([grey] * 3, -1)).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(grey).save(tmp_path / "r.png", exif=exif)
    for name, shape in (("p.png", (1, 20, 30)), ("r.png", (1, 30, 20))):
        image = _load(tmp_path / name)
        assert tuple(image.shape) == shape, name
        np.testing.assert_array_equal(np.asarray(image[0]), read_grey_uint8(tmp_path / name))
        assert str(image.meta["filename_or_obj"]).endswith(name)
    assert np.abs(np.asarray(_load(tmp_path / "p.png")[0]) - grey).mean() < 4   # colours, not palette indices


def test_prepared_masks_keep_their_zero_one_values(tmp_path):
    mask = np.zeros((16, 24), bool)
    mask[4:9, 10:20] = True
    write_mask_png(tmp_path / "m.png", mask)
    loaded = np.asarray(_load(tmp_path / "m.png")[0])
    assert set(np.unique(loaded)) == {0, 1} and (loaded.astype(bool) == mask).all()


def test_a_multi_page_file_is_refused_with_its_name(tmp_path):
    pages = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (1, 2, 3)]
    pages[0].save(tmp_path / "cine.tif", save_all=True, append_images=pages[1:])
    # not read by one of MONAI's fallback readers as its first page: the reader's error, naming the file
    with pytest.raises(DataError, match=r"cine\.tif: multi-page or animated image \(3 frames\)"):
        _load(tmp_path / "cine.tif")


def test_a_tiff_whose_later_page_is_corrupt_is_a_data_error(tmp_path):
    """Counting a TIFF's pages reads each page's header; a second page without its width made Pillow raise a
    TypeError that escaped the reader (found by the fuzz test of tests/reliability)."""
    import io
    import struct

    buffer = io.BytesIO()
    first, second = (Image.fromarray(np.full((12, 10), v, np.uint8)) for v in (0, 9))
    first.save(buffer, format="TIFF", save_all=True, append_images=[second])
    raw = bytearray(buffer.getvalue())
    ifd0 = struct.unpack_from("<I", raw, 4)[0]
    ifd1 = struct.unpack_from("<I", raw, ifd0 + 2 + 12 * struct.unpack_from("<H", raw, ifd0)[0])[0]
    for k in range(struct.unpack_from("<H", raw, ifd1)[0]):
        if struct.unpack_from("<H", raw, ifd1 + 2 + 12 * k)[0] == 256:   # ImageWidth of page 2 -> an unknown tag
            struct.pack_into("<H", raw, ifd1 + 2 + 12 * k, 0xFFF0)
    (tmp_path / "pages.tif").write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"pages\.tif: unreadable or truncated image \(TypeError: Missing dimensions"):
        read_grey_uint8(tmp_path / "pages.tif")
