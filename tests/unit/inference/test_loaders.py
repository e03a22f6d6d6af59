"""A raster file means the same thing to ``bmtl predict`` as to ``bmtl prepare`` (which made the training images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.io import DataError
from pipeline.data.sources.common import load_pair
from pipeline.inference.discovery import InputItem
from pipeline.inference.loaders import load_raster


def _grey() -> np.ndarray:
    y, x = np.mgrid[0:24, 0:36]
    return (40 + 3 * x + 2 * y).astype(np.uint8)   # a smooth ramp: lossy formats keep it close


@pytest.mark.parametrize("kind, tolerance", [("palette", 4), ("cmyk_jpeg", 8), ("cmyk_tiff", 1), ("grey_alpha", 0),
                                             ("uint16", 1), ("rgb", 1), ("lab_tiff", 2)])
def test_predict_reads_a_raster_as_prepare_does(tmp_path, kind, tolerance):
    grey = _grey()
    rgb = np.stack([grey] * 3, -1)
    path = tmp_path / {"cmyk_jpeg": "x.jpg", "cmyk_tiff": "x.tif", "lab_tiff": "x.tif"}.get(kind, "x.png")
    if kind == "palette":
        Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(path)
    elif kind.startswith("cmyk"):
        Image.fromarray(rgb).convert("CMYK").save(path, **({"quality": 95} if kind == "cmyk_jpeg" else {}))
    elif kind == "lab_tiff":   # CIELab, as colour-managed tools save it: grey from its colours, not its a/b axes
        from PIL import ImageCms

        to_lab = ImageCms.buildTransformFromOpenProfiles(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"),
                                                         "RGB", "LAB")
        ImageCms.applyTransform(Image.fromarray(rgb), to_lab).save(path)
    elif kind == "grey_alpha":
        Image.fromarray(grey).convert("LA").save(path)
    elif kind == "uint16":
        Image.fromarray(grey.astype(np.uint16) * 250).save(path)
    else:
        Image.fromarray(rgb).save(path)
    case = load_raster(InputItem(path, "raster", "x"))
    predicted_input = np.asarray(case.slices[0][0])
    prepared, _ = load_pair(path, [], "normal")
    np.testing.assert_array_equal(predicted_input, prepared.astype(np.float32))
    # and it is the picture, not palette indices or ink channels (a 16-bit file is min-max scaled, like prepare)
    expected = grey if kind != "uint16" else np.round((grey - grey.min()) / np.ptp(grey) * 255)
    assert np.abs(predicted_input - expected).mean() <= tolerance, kind
    assert case.shape == grey.shape and case.display[0].shape == grey.shape


def test_a_bad_raster_names_the_file_and_the_problem(tmp_path):
    path = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((1, 5), np.uint8)).save(path)
    with pytest.raises(DataError, match=r"tiny\.png.*too small"):
        load_raster(InputItem(path, "raster", "tiny"))


def test_an_exif_rotated_photo_is_predicted_as_displayed(tmp_path):
    grey = _grey()   # 24 x 36, wider than tall
    exif = Image.Exif()
    exif[0x0112] = 8   # "rotate 90 CCW to display"
    Image.fromarray(grey).save(tmp_path / "photo.png", exif=exif)
    case = load_raster(InputItem(tmp_path / "photo.png", "raster", "photo"))
    assert case.shape == (36, 24)   # the mask will be written at the displayed size and orientation
    np.testing.assert_array_equal(np.asarray(case.slices[0][0]), np.rot90(grey).astype(np.float32))


def test_a_palette_colour_dicom_is_read_through_its_colour_table():
    """pydicom's own PALETTE COLOR ultrasound file: the grey of its colours, not its palette indices."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.pixels import apply_color_lut

    from pipeline.inference.loaders import load_dicom

    path = get_testdata_file("examples_palette.dcm")
    ds = pydicom.dcmread(path)
    colours = apply_color_lut(ds.pixel_array, ds).astype(np.float64)
    luma = colours @ np.array([0.299, 0.587, 0.114])
    image = np.asarray(load_dicom(InputItem(Path(path), "dicom", "palette")).slices[0][0], dtype=np.float64)
    np.testing.assert_allclose(image, luma, atol=0.01)
    assert np.corrcoef(image.ravel(), ds.pixel_array.ravel())[0, 1] < 0.9   # the indices are another picture


def test_the_pixel_limit_bounds_each_image_or_volume_slice(tmp_path):
    """The limit is per image or slice (the resize's memory), so a volume of many small slices passes; a slice is
    bounded by the volume's two largest dimensions whatever its axis."""
    from pipeline.inference.loaders import check_pixel_limit

    item = InputItem(tmp_path / "x.nii.gz", "nifti", "x")
    check_pixel_limit(item, (40, 50, 160), max_pixels=8000)   # 160 slices: 6.4 M voxels, no slice above 8000
    check_pixel_limit(item, (40, 50, 3), max_pixels=2000)     # a colour image: the channels are not pixels
    with pytest.raises(DataError, match=r"8,000 pixels per slice \(40 x 50 x 160\), above the limit of 7,999"):
        check_pixel_limit(item, (40, 50, 160), max_pixels=7999)
    with pytest.raises(DataError, match=r"input too large: 2,000 pixels \(40 x 50\)"):
        check_pixel_limit(InputItem(tmp_path / "x.png", "raster", "x"), (40, 50), max_pixels=1999)
    check_pixel_limit(item, (4000, 5000, 160), max_pixels=None)


def test_the_command_line_default_pixel_limit_is_the_libraries():
    from pipeline.cli import build_parser
    from pipeline.inference.predictor import MAX_PIXELS

    args = build_parser().parse_args(["predict", "--bundle", "b", "--input", "i", "--output", "o"])
    assert args.max_pixels == MAX_PIXELS == 25_000_000
