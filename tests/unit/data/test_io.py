"""Reading and writing images and masks while preparing datasets (pipeline.data.io)."""

from __future__ import annotations

import unittest
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
from PIL import Image

from pipeline.data.io import (
    DataError,
    check_mask_matches,
    read_grey,
    read_mask,
    to_uint8,
    write_mask_png,
    write_png,
)

H, W = 12, 16
LESION = np.zeros((H, W), dtype=bool)
LESION[3:8, 4:11] = True


def _mask_image(kind: str) -> Image.Image:
    m = LESION.astype(np.uint8)
    if kind == "1bit":
        return Image.fromarray(m * 255).convert("1")
    if kind == "0/1":
        return Image.fromarray(m)
    if kind == "0/255":
        return Image.fromarray(m * 255)
    if kind == "0/7":
        return Image.fromarray(m * 7)
    if kind == "rgba":
        rgba = np.zeros((H, W, 4), np.uint8)
        rgba[LESION] = (255, 255, 255, 255)
        rgba[..., 3] = 255
        return Image.fromarray(rgba, mode="RGBA")
    if kind == "rgba-alpha":  # colour all black, lesion only in alpha
        rgba = np.zeros((H, W, 4), np.uint8)
        rgba[..., 3] = m * 255
        return Image.fromarray(rgba, mode="RGBA")
    if kind == "rgb-red":
        rgb = np.zeros((H, W, 3), np.uint8)
        rgb[LESION, 0] = 200
        return Image.fromarray(rgb)
    if kind == "palette":
        img = Image.fromarray(m, mode="L").convert("P")
        img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
        return img
    raise ValueError(kind)


class TestReadMask(unittest.TestCase):
    def setUp(self):
        self._tmp = TemporaryDirectory()
        self.addCleanup(self._tmp.cleanup)
        self.tmp = Path(self._tmp.name)

    def test_binary_kinds(self):
        for kind in ("1bit", "0/1", "0/255", "0/7", "rgba", "rgba-alpha", "rgb-red", "palette"):
            with self.subTest(kind=kind):
                path = self.tmp / "m.png"
                _mask_image(kind).save(path)
                mask = read_mask(path)
                self.assertEqual(mask.dtype, bool)
                self.assertEqual(mask.shape, (H, W))
                np.testing.assert_array_equal(mask, LESION)

    def test_all_zero_is_binary(self):
        path = self.tmp / "m.png"
        Image.fromarray(np.zeros((H, W), np.uint8)).save(path)
        self.assertFalse(read_mask(path).any())

    def test_not_binary(self):
        path = self.tmp / "m.png"
        arr = LESION.astype(np.uint8) * 255
        arr[0, 0] = 128  # an anti-aliased edge pixel
        Image.fromarray(arr).save(path)
        with self.assertRaises(DataError) as ctx:
            read_mask(path)
        self.assertEqual(ctx.exception.path, path)
        self.assertIn("mask is not binary: it has 3 distinct values (0, 128, 255)", str(ctx.exception))

    def test_two_values_without_zero(self):
        path = self.tmp / "m.png"
        Image.fromarray(np.where(LESION, 255, 10).astype(np.uint8)).save(path)
        with self.assertRaisesRegex(DataError, "not binary"):
            read_mask(path)


class TestReadGrey(unittest.TestCase):
    def setUp(self):
        self._tmp = TemporaryDirectory()
        self.addCleanup(self._tmp.cleanup)
        self.tmp = Path(self._tmp.name)

    def test_16bit_kept(self):
        path = self.tmp / "i16.png"
        arr = (np.arange(H * W, dtype=np.uint16).reshape(H, W) * 300).astype(np.uint16)
        Image.fromarray(arr).save(path)
        got = read_grey(path)
        self.assertEqual(got.dtype, np.uint16)
        np.testing.assert_array_equal(got, arr)
        scaled = to_uint8(got)
        self.assertEqual((scaled.dtype, int(scaled.min()), int(scaled.max())), (np.uint8, 0, 255))

    def test_rgb_grey_content_to_one_channel(self):
        path = self.tmp / "rgb.png"
        grey = np.random.default_rng(0).integers(0, 256, (H, W), dtype=np.uint8)
        Image.fromarray(np.stack([grey] * 3, -1)).save(path)
        got = read_grey(path)
        self.assertEqual(got.shape, (H, W))
        np.testing.assert_array_equal(got, grey)

    def test_rgba_and_palette(self):
        grey = np.random.default_rng(1).integers(0, 256, (H, W), dtype=np.uint8)
        Image.fromarray(np.dstack([grey, grey, grey, np.full_like(grey, 255)]), mode="RGBA").save(self.tmp / "a.png")
        np.testing.assert_array_equal(read_grey(self.tmp / "a.png"), grey)
        Image.fromarray(grey).convert("P").save(self.tmp / "p.png")
        self.assertEqual(read_grey(self.tmp / "p.png").shape, (H, W))

    def test_truncated_png(self):
        path = self.tmp / "t.png"
        noise = np.random.default_rng(2).integers(0, 256, (64, 64), dtype=np.uint8)
        Image.fromarray(noise).save(path)
        path.write_bytes(path.read_bytes()[:300])
        with self.assertRaises(DataError) as ctx:
            read_grey(path)
        self.assertEqual(ctx.exception.path, path)
        self.assertIn("unreadable or truncated image", ctx.exception.problem)

    def test_zero_bytes(self):
        path = self.tmp / "z.png"
        path.write_bytes(b"")
        with self.assertRaisesRegex(DataError, r"z.png: file is empty \(0 bytes\)"):
            read_grey(path)
        with self.assertRaisesRegex(DataError, "file is empty"):
            read_mask(path)

    def test_one_pixel(self):
        path = self.tmp / "one.png"
        Image.fromarray(np.zeros((1, 1), np.uint8)).save(path)
        with self.assertRaisesRegex(DataError, r"image is too small \(1x1 pixels\)"):
            read_grey(path)

    def test_not_an_image_and_missing(self):
        path = self.tmp / "text.png"
        path.write_text("hello")
        with self.assertRaisesRegex(DataError, "not an image Pillow can read"):
            read_grey(path)
        with self.assertRaisesRegex(DataError, "file not found"):
            read_grey(self.tmp / "missing.png")

    def test_exif_orientation_is_applied_as_viewers_do(self):
        grey = np.random.default_rng(3).integers(0, 256, (H, W + 5), dtype=np.uint8)
        exif = Image.Exif()
        exif[0x0112] = 6   # "rotate 90 CW to display"
        for name in ("r.png", "r.jpg"):
            Image.fromarray(grey).save(self.tmp / name, exif=exif)
            got = read_grey(self.tmp / name)
            self.assertEqual(got.shape, (W + 5, H), name)   # displayed: taller than wide
            if name != "r.jpg":   # lossless: exactly the clockwise rotation
                np.testing.assert_array_equal(got, np.rot90(grey, k=-1))
        # TIFF keeps it in its own tag 274, which Pillow's decoder half-applies: refused, not misread
        Image.fromarray(grey).save(self.tmp / "r.tif", tiffinfo={274: 6})
        with self.assertRaisesRegex(DataError, r"r\.tif: TIFF with orientation tag 6"):
            read_grey(self.tmp / "r.tif")
        mask = np.zeros((H, W + 5), np.uint8)
        mask[:3, :4] = 255
        Image.fromarray(mask).save(self.tmp / "m.png", exif=exif)
        self.assertTrue(read_mask(self.tmp / "m.png")[:4, -3:].all())   # the top-left corner goes top-right

    def test_multi_page_is_refused_not_read_as_its_first_page(self):
        pages = [Image.fromarray(np.full((H, W), v, np.uint8)) for v in (10, 200)]
        pages[0].save(self.tmp / "pages.tif", save_all=True, append_images=pages[1:])
        with self.assertRaisesRegex(DataError, r"pages\.tif: multi-page or animated image \(2 frames\)"):
            read_grey(self.tmp / "pages.tif")
        pages[0].save(self.tmp / "anim.png", save_all=True, append_images=pages[1:])
        with self.assertRaisesRegex(DataError, "2 frames"):
            read_mask(self.tmp / "anim.png")


class TestWriteAndCheck(unittest.TestCase):
    def test_roundtrip_and_size_check(self):
        with TemporaryDirectory() as tmp:
            path = write_mask_png(Path(tmp) / "sub" / "m.png", LESION)
            with Image.open(path) as img:
                self.assertEqual(img.mode, "L")
                np.testing.assert_array_equal(np.asarray(img), LESION.astype(np.uint8))
            with self.assertRaisesRegex(ValueError, "2D uint8/uint16"):
                write_png(Path(tmp) / "x.png", np.zeros((2, 2, 3), np.uint8))
        check_mask_matches(LESION, (H, W), "m.png")
        with self.assertRaisesRegex(DataError, r"mask size 16x12 differs from its image's size 17x12"):
            check_mask_matches(LESION, (H, W + 1), "m.png")

    def test_to_uint8(self):
        self.assertEqual(to_uint8(np.full((2, 2), 5.0)).max(), 0)
        with self.assertRaisesRegex(ValueError, "NaN"):
            to_uint8(np.array([[np.nan, 1.0]]))


if __name__ == "__main__":
    unittest.main()
