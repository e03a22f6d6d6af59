"""Clinical DICOM files as they arrive, read by `bmtl predict`: pydicom's own test files (a real ultrasound cine loop,
JPEG-compressed YBR; an RT dose grid; an MR slice) and copies of them with the header values vendors really write
(a decimal comma in DS values, a non-integer NumberOfFrames).

A multi-frame ultrasound file is one input per frame (every frame decoded as the full decode gives it); objects
that are not images and malformed headers get an error row naming the problem; nothing stops the other inputs.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file

from pipeline.cli import main
from pipeline.data.dicom import dicom_spacing
from pipeline.data.dicom_series import read_dicom_series
from pipeline.data.io import DataError
from pipeline.data.synthetic_dicom import write_dicom_series
from pipeline.transforms import ToGreyd
from pipeline.inference import discover_inputs
from pipeline.inference.loaders import load_case

CINE = "examples_ybr_color.dcm"   # 30 frames of 240x320 ultrasound, YBR_FULL_422, JPEG baseline
RTDOSE = "rtdose.dcm"             # 15 frames of an RT dose grid: not an image of the patient


def copy_testdata(name: str, folder: Path) -> Path:
    """A copy of one of pydicom's bundled test files (never downloaded: these ship inside the wheel)."""
    source = get_testdata_file(name, download=False)
    if source is None:
        pytest.skip(f"pydicom's test file {name} is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(source, folder / name))


def edited(name: str, target: Path, **elements) -> Path:
    """A copy of a pydicom test file with some header elements replaced (pydicom warns about invalid values)."""
    ds = pydicom.dcmread(get_testdata_file(name, download=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for keyword, value in elements.items():
            setattr(ds, keyword, value)
        target.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(target)
    return target


def test_a_cine_loop_is_one_input_per_frame(tmp_path):
    cine = copy_testdata(CINE, tmp_path / "in")
    items = discover_inputs(tmp_path / "in")
    assert [i.frame for i in items] == list(range(30))
    assert {i.kind for i in items} == {"dicom"} and items[7].name == "examples_ybr_color_frame007"
    one = discover_inputs(cine, frame=4)
    assert [(i.frame, i.name) for i in one] == [(4, "examples_ybr_color_frame004")]
    beyond = discover_inputs(cine, frame=30)
    assert beyond[0].kind == "unsupported" and "frame 30 asked, the file has 30 frames (0 to 29)" in beyond[0].problem
    with pytest.raises(ValueError, match="frame must be 0 or more"):
        discover_inputs(cine, frame=-1)


@pytest.mark.parametrize("frame", [0, 11, 29])
def test_each_frame_is_read_as_the_full_decode_gives_it(tmp_path, frame):
    cine = copy_testdata(CINE, tmp_path)
    item = discover_inputs(cine, frame=frame)[0]
    case = load_case(item)
    full = np.asarray(pydicom.dcmread(cine).pixel_array)      # (30, 240, 320, 3) RGB
    assert full.shape == (30, 240, 320, 3)
    expected = ToGreyd(keys="image")({"image": torch.as_tensor(np.moveaxis(full[frame], -1, 0)).float()})["image"]
    np.testing.assert_allclose(case.display[0], np.asarray(expected[0]), atol=1e-4)
    assert case.spacing is not None   # the ultrasound region calibration of the loop
    other = load_case(discover_inputs(cine, frame=(frame + 15) % 30)[0])
    assert np.abs(other.display[0] - case.display[0]).mean() > 1.0   # a different frame, not the first one again


def test_objects_that_are_not_images_are_refused_by_name(tmp_path):
    copy_testdata(RTDOSE, tmp_path / "in")
    edited("MR_small.dcm", tmp_path / "in" / "seg.dcm", Modality="SEG")
    edited("MR_small.dcm", tmp_path / "in" / "mosaic.dcm", ImageType=["ORIGINAL", "PRIMARY", "M", "MOSAIC"])
    problems = {i.path.name: (i.kind, i.problem) for i in discover_inputs(tmp_path / "in")}
    assert problems["rtdose.dcm"] == ("unsupported", "DICOM RTDOSE object (an RT dose grid), not an image to predict")
    assert problems["seg.dcm"][0] == "unsupported" and "segmentation object" in problems["seg.dcm"][1]
    assert problems["mosaic.dcm"][0] == "unsupported" and "Siemens MOSAIC" in problems["mosaic.dcm"][1]


def test_a_structure_set_written_without_the_file_preamble_is_refused_as_one(tmp_path):
    """pydicom's ``rtstruct.dcm`` is a bare data set (no preamble, no file meta), as some RT systems write them: it
    is recognised as an RT structure set, not reported as an unreadable image."""
    copy_testdata("rtstruct.dcm", tmp_path / "in")
    (item,) = discover_inputs(tmp_path / "in")
    assert (item.kind, item.problem) == ("unsupported", "DICOM RTSTRUCT object (an RT structure set), not an image to "
                                                        "predict")


@pytest.mark.parametrize("name, n_slices, shape, spacing, thickness", [
    ("anatomical.nii", 25, (33, 41), (2.0, 2.0), 2.0),
    ("standard.nii.gz", 7, (4, 5), (1.0, 3.0), 2.0),   # anisotropic: each axis keeps its own spacing
])
def test_nibabels_nifti_files_are_read_with_their_geometry(name, n_slices, shape, spacing, thickness):
    """NIfTI files nibabel ships (written by other tools): slices, in-plane spacing and slice spacing from the
    header."""
    import nibabel

    case = load_case(discover_inputs(Path(nibabel.__file__).parent / "tests" / "data" / name)[0])
    assert len(case.slices) == n_slices and tuple(case.slices[0].shape[-2:]) == shape
    assert case.spacing == pytest.approx(spacing) and case.thickness == pytest.approx(thickness)


def test_a_4d_nifti2_file_is_refused_naming_its_volumes():
    """nibabel's NIfTI-2 example holds two time points: refused with the shape, never read as its first volume."""
    import nibabel

    path = Path(nibabel.__file__).parent / "tests" / "data" / "example_nifti2.nii.gz"
    with pytest.raises(DataError, match=r"4D volume \(shape \(32, 20, 12, 2\): 2 volumes"):
        load_case(discover_inputs(path)[0])


@pytest.mark.parametrize("value, frames, problem", [
    ("2.0", [0, 1], None),                                   # a decimal point vendors write in an IS value
    ("2.5", None, "NumberOfFrames '2.5' is not a whole positive number"),
    ("0", None, "NumberOfFrames '0' is not a whole positive number"),
])
def test_a_malformed_number_of_frames_is_one_error_row_not_a_stop(tmp_path, value, frames, problem):
    edited("SC_rgb_rle_2frame.dcm", tmp_path / "in" / "loop.dcm", NumberOfFrames=value)
    copy_testdata("SC_rgb_rle.dcm", tmp_path / "in")   # a good neighbour
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        items = discover_inputs(tmp_path / "in")
    loop = [i for i in items if i.path.name == "loop.dcm"]
    assert any(i.path.name == "SC_rgb_rle.dcm" and i.kind == "dicom" for i in items)
    if problem is None:
        assert [i.frame for i in loop] == frames
        assert load_case(loop[1]).display[0].shape == (100, 100)
    else:
        assert len(loop) == 1 and loop[0].kind == "unsupported"
        assert loop[0].problem == f"malformed DICOM header: {problem}"


# (file, transfer syntax, needs pylibjpeg-libjpeg: the `dicom` extra); shapes are (rows, columns)
COMPRESSED = [
    ("SC_rgb_dcmtk_+eb+cy+n1.dcm", "JPEG Baseline, YBR_FULL", False, (100, 100)),
    ("examples_jpeg2k.dcm", "JPEG 2000 ultrasound, YBR_RCT", False, (480, 640)),
    ("SC_rgb_rle.dcm", "RLE", False, (100, 100)),
    ("image_dfl.dcm", "deflated explicit VR", False, None),
    ("JPGExtended.dcm", "JPEG Extended (12-bit)", True, (1024, 256)),
    ("SC_rgb_jls_lossy_sample.dcm", "JPEG-LS near-lossless", True, (100, 100)),
    ("SC_rgb_jpeg_gdcm.dcm", "JPEG Lossless (process 14)", True, (100, 100)),
]
# lossless encodings of MR_small.dcm: the image must come out exactly as from the uncompressed file
LOSSLESS_MR = [("MR_small_RLE.dcm", False), ("MR_small_jp2klossless.dcm", False),
               ("MR_small_jpeg_ls_lossless.dcm", True)]


@pytest.mark.parametrize("name, syntax, needs_libjpeg, shape", COMPRESSED, ids=[c[1] for c in COMPRESSED])
def test_compressed_transfer_syntaxes_are_decoded(tmp_path, name, syntax, needs_libjpeg, shape):
    if needs_libjpeg:
        pytest.importorskip("libjpeg", reason="the `dicom` extra (pylibjpeg-libjpeg) is not installed")
    path = copy_testdata(name, tmp_path)
    case = load_case(discover_inputs(path)[0])
    image = case.display[0]
    assert np.isfinite(image).all() and image.std() > 0
    if shape is not None:
        assert image.shape == shape


@pytest.mark.parametrize("name, needs_libjpeg", LOSSLESS_MR, ids=[n for n, _ in LOSSLESS_MR])
def test_lossless_encodings_give_the_uncompressed_image(tmp_path, name, needs_libjpeg):
    if needs_libjpeg:
        pytest.importorskip("libjpeg", reason="the `dicom` extra (pylibjpeg-libjpeg) is not installed")
    reference = load_case(discover_inputs(copy_testdata("MR_small.dcm", tmp_path / "plain"))[0])
    decoded = load_case(discover_inputs(copy_testdata(name, tmp_path / "compressed"))[0])
    np.testing.assert_array_equal(decoded.display[0], reference.display[0])


# the same 100x100 colour picture encoded by dcmtk and GDCM in many ways (lossless RLE is the reference): a colour
# space read wrongly (YBR taken for RGB, the 4:2:2 subsampling ignored) moves the grey image by tens of levels
COLOUR_ENCODINGS = [("SC_rgb_dcmtk_+eb+cr.dcm", False, 0.5), ("SC_rgb_dcmtk_+eb+cy+n1.dcm", False, 1.0),
                    ("SC_rgb_dcmtk_+eb+cy+np.dcm", False, 1.0), ("SC_rgb_dcmtk_+eb+cy+s2.dcm", False, 1.0),
                    ("SC_rgb_jpeg_lossy_gdcm.dcm", False, 1.0), ("SC_rgb_gdcm_KY.dcm", False, 0.0),
                    ("SC_rgb_jls_lossy_sample.dcm", True, 1.0), ("SC_rgb_jpeg_gdcm.dcm", True, 0.0)]


@pytest.mark.parametrize("name, needs_libjpeg, tolerance", COLOUR_ENCODINGS, ids=[c[0] for c in COLOUR_ENCODINGS])
def test_colour_encodings_give_the_grey_image_of_the_lossless_file(tmp_path, name, needs_libjpeg, tolerance):
    if needs_libjpeg:
        pytest.importorskip("libjpeg", reason="the `dicom` extra (pylibjpeg-libjpeg) is not installed")
    reference = load_case(discover_inputs(copy_testdata("SC_rgb_rle.dcm", tmp_path / "plain"))[0]).display[0]
    decoded = load_case(discover_inputs(copy_testdata(name, tmp_path / "coded"))[0]).display[0]
    assert decoded.shape == reference.shape and np.ptp(reference) > 100
    # lossy: within one grey level on average (0.13-0.7 measured); lossless: the same picture
    assert np.abs(decoded - reference).mean() <= tolerance


def with_decimal_comma(path: Path, keyword: str) -> Path:
    """Rewrite the stored text of a DS element with decimal commas (``0.7\\0.7`` -> ``0,7\\0,7``), byte for byte,
    as software set to a European locale writes it."""
    stored = bytes(pydicom.dcmread(path).get_item(keyword).value)
    raw = path.read_bytes()
    assert raw.count(stored) == 1, f"{keyword} text {stored!r} not unique in {path}"
    path.write_bytes(raw.replace(stored, stored.replace(b".", b",")))
    return path


def test_a_spacing_written_with_a_decimal_comma_is_unknown_not_one_mm(tmp_path):
    good = copy_testdata("MR_small.dcm", tmp_path / "good")
    bad = with_decimal_comma(copy_testdata("MR_small.dcm", tmp_path / "bad"), "PixelSpacing")
    assert load_case(discover_inputs(good)[0]).spacing == pytest.approx((0.3125, 0.3125))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        case = load_case(discover_inputs(bad)[0])
        assert dicom_spacing(pydicom.dcmread(bad)) is None
    assert case.spacing is None and case.display[0].shape == (64, 64)   # read, but no millimetres
    assert case.spacing_problem.startswith("PixelSpacing '0,3125\\0,3125' is not two positive numbers")
    assert load_case(discover_inputs(good)[0]).spacing_problem is None


def test_a_series_with_an_unreadable_spacing_keeps_no_mm_and_a_bad_rescale_is_named(tmp_path):
    volume = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32) * 100
    write_dicom_series(volume, tmp_path / "good", spacing=(0.7, 0.7, 2.5))
    assert read_dicom_series(tmp_path / "good").meta["spacing_known"] is True
    write_dicom_series(volume, tmp_path / "comma", spacing=(0.7, 0.7, 2.5))
    for f in sorted((tmp_path / "comma").iterdir()):
        with_decimal_comma(f, "PixelSpacing")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        series = read_dicom_series(tmp_path / "comma")
        case = load_case(discover_inputs(tmp_path / "comma")[0])
    assert series.meta["spacing_known"] is False and case.spacing is None and case.thickness is None
    assert "PixelSpacing '0,7\\0,7'" in case.spacing_problem   # what predictions.csv's spacing_note says
    assert len(case.slices) == 3
    write_dicom_series(volume, tmp_path / "slope", spacing=(0.7, 0.7, 2.5))
    second = sorted((tmp_path / "slope").iterdir())[1]
    with_decimal_comma(second, "RescaleSlope")
    with warnings.catch_warnings(), pytest.raises(DataError, match=r"malformed DICOM header: RescaleSlope '0,") as e:
        warnings.simplefilter("ignore")
        read_dicom_series(tmp_path / "slope")
    assert e.value.path == second   # the file is named, not only the folder


@pytest.mark.parametrize("keyword, value", [("RescaleSlope", "0,5"), ("RescaleIntercept", "-1024,0"),
                                            ("RescaleSlope", "n/a")])
def test_a_malformed_rescale_of_a_2d_dicom_is_named_with_its_value(tmp_path, keyword, value):
    """A 2D DICOM whose RescaleSlope/RescaleIntercept cannot be read (a decimal comma, as a European locale writes
    it) is refused naming the element and the value, as a series slice is: guessing would change every pixel."""
    from pydicom.dataelem import RawDataElement
    from pydicom.datadict import tag_for_keyword

    good = load_case(discover_inputs(copy_testdata("CT_small.dcm", tmp_path / "good"))[0])
    assert good.display[0].min() < -500   # the reference: RescaleIntercept -1024 applied
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    tag, stored = pydicom.tag.Tag(tag_for_keyword(keyword)), value.encode().ljust(len(value) + len(value) % 2)
    # stored as the vendor wrote it: pydicom would refuse to set such a DS value, so the raw element is replaced
    ds._dict[tag] = RawDataElement(tag, "DS", len(stored), stored, 0, False, True)
    bad = tmp_path / "bad" / "ct.dcm"
    bad.parent.mkdir()
    ds.save_as(bad)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        items = discover_inputs(bad.parent)
        with pytest.raises(DataError, match=f"malformed DICOM header: {keyword} '{value}' is not a number") as e:
            load_case(items[0])
    assert e.value.path == bad


def with_raw_value(path: Path, keyword: str, stored: bytes) -> Path:
    """Replace a DS element's stored text as a vendor wrote it (pydicom refuses to set such a value)."""
    from pydicom.dataelem import RawDataElement
    from pydicom.datadict import tag_for_keyword

    ds = pydicom.dcmread(path)
    tag = pydicom.tag.Tag(tag_for_keyword(keyword))
    stored = stored.ljust(len(stored) + len(stored) % 2)
    ds._dict[tag] = RawDataElement(tag, "DS", len(stored), stored, 0, False, True)
    ds.save_as(path)
    return path


def test_a_monochrome1_series_is_inverted_over_the_volume_like_a_2d_image(tmp_path):
    """MONOCHROME1 (low values bright) is inverted as one image over the whole series: per slice, each slice's own
    range would change the contrast from slice to slice."""
    volume = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32) * 100
    volume[..., 2] += 50   # the slices have different ranges
    write_dicom_series(volume, tmp_path / "m2", spacing=(0.7, 0.7, 2.5))
    write_dicom_series(volume, tmp_path / "m1", spacing=(0.7, 0.7, 2.5), PhotometricInterpretation="MONOCHROME1")
    normal, inverted = read_dicom_series(tmp_path / "m2").data, read_dicom_series(tmp_path / "m1").data
    np.testing.assert_allclose(inverted, normal.max() + normal.min() - normal, atol=1e-4)


@pytest.mark.parametrize("keyword, stored, count", [("ImagePositionPatient", b"120,5\\-85,25\\-40,5", 3),
                                                    ("ImageOrientationPatient", b"1\\0\\0\\0\\0,98\\0,17", 6)])
def test_a_slice_position_or_orientation_with_a_decimal_comma_is_refused_not_placed_at_the_origin(
        tmp_path, keyword, stored, count):
    """A position or orientation that cannot be read would put the volume at the origin with the identity
    orientation, a mask in the wrong place of the patient: the series is refused naming the file and the value, in
    prepare and predict alike (both read series through ``read_dicom_series``)."""
    volume = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32) * 100
    write_dicom_series(volume, tmp_path / "series", spacing=(0.7, 0.7, 2.5))
    bad = with_raw_value(sorted((tmp_path / "series").iterdir())[1], keyword, stored)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match=rf"malformed DICOM header: {keyword} '.*,.*' is not {count} numbers") as e:
            read_dicom_series(tmp_path / "series")
        assert e.value.path == bad
        with pytest.raises(DataError, match=keyword):
            load_case(discover_inputs(tmp_path / "series")[0])


def test_prepare_dicom_skips_series_with_malformed_headers_by_name_and_prepares_the_rest(tmp_path, capsys):
    """`bmtl prepare --source dicom`: a series whose PixelSpacing has decimal commas is not written as 1 x 1 mm slices
    and one slice's unreadable RescaleSlope is named with its file; neither stops the run, the good series are
    prepared, nothing of the bad ones is written."""
    from tests.unit.data.test_volumes import dicom_case, write_classes

    src, out = tmp_path / "in", tmp_path / "out"
    cases = [("c1", "benign"), ("c2", "malignant"), ("c3", "benign"), ("c4", "malignant"), ("c5", "benign")]
    for seed, (case, _) in enumerate(cases):
        dicom_case(src, case, seed=seed)
    write_classes(src, cases)
    for f in sorted((src / "images" / "c2").iterdir()):
        with_decimal_comma(f, "PixelSpacing")
    bad_slope = with_raw_value(sorted((src / "images" / "c3").iterdir())[1], "RescaleSlope", b"0,5")
    bad_position = with_raw_value(sorted((src / "images" / "c4").iterdir())[1], "ImagePositionPatient",
                                  b"0\\0\\2,5")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["prepare", "--source", "dicom", "--input", str(src), "--output", str(out), "--folds", "2"]) == 0
    skipped = pd.read_csv(out / "skipped.csv").set_index("path")["problem"].to_dict()
    assert set(skipped) == {str(src / "images" / "c2"), str(bad_slope), str(bad_position)}
    assert skipped[str(bad_position)].startswith("malformed DICOM header: ImagePositionPatient '0\\0\\2,5' is not 3")
    assert "pixel spacing unknown: PixelSpacing '0,7\\0,7'" in skipped[str(src / "images" / "c2")]
    assert "would claim 1 x 1 mm" in skipped[str(src / "images" / "c2")]
    assert skipped[str(bad_slope)] == "malformed DICOM header: RescaleSlope '0,5' is not a number"
    assert "RescaleSlope '0,5'" in capsys.readouterr().out
    groups = {item["group"] for item in json.loads((out / "datalist.json").read_text())["training"]}
    assert groups == {"c1", "c5"}
    assert not [p for p in (out / "images").iterdir() if p.name.startswith(("c2", "c3", "c4"))]


@pytest.mark.slow
def test_predict_writes_one_row_and_mask_per_frame(exported_bundle, tmp_path, capsys):
    cine = copy_testdata(CINE, tmp_path / "in")
    copy_testdata(RTDOSE, tmp_path / "in")
    with_decimal_comma(Path(shutil.copy(copy_testdata("MR_small.dcm", tmp_path), tmp_path / "in" / "comma.dcm")),
                       "PixelSpacing")
    rc = main(["predict", "--bundle", str(exported_bundle), "--input", str(tmp_path / "in"), "--output",
               str(tmp_path / "out"), "--no-progress", "--no-overlays"])
    assert rc == 3   # the dose grid failed, the frames did not
    table = pd.read_csv(tmp_path / "out" / "predictions.csv")
    frames = table[table.file == cine.name]   # paths relative to --input
    assert frames.frame.tolist() == list(range(30)) and (frames.status == "ok").all()
    assert frames["mask"].nunique() == 30 and frames.height.eq(240).all() and frames.width.eq(320).all()
    dose = table[table.file.str.endswith(RTDOSE)]
    assert dose.status.tolist() == ["error"] and "RTDOSE" in dose.error.iloc[0]
    comma = table[table.file.str.endswith("comma.dcm")]
    assert comma.status.tolist() == ["ok"] and comma.spacing_mm.isna().all() and comma.lesion_area_mm2.isna().all()
    assert comma.spacing_note.iloc[0].startswith("spacing unknown (PixelSpacing '0,3125\\0,3125'")
    assert frames.spacing_note.isna().all()   # the cine loop's spacing was read
    assert main(["predict", "--bundle", str(exported_bundle), "--input", str(cine), "--output",
                 str(tmp_path / "one"), "--frame", "12", "--no-progress", "--no-overlays"]) == 0
    one = pd.read_csv(tmp_path / "one" / "predictions.csv")
    assert one.frame.tolist() == [12] and one["mask"].iloc[0].endswith("examples_ybr_color_frame012_mask.png")


def test_a_header_asking_for_a_huge_image_is_refused_before_reading(tmp_path):
    """A corrupt (or hostile) header must not make the reader allocate gigabytes: the size is checked first."""
    import nibabel as nib

    from pipeline.data.volume import read_nifti_volume

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm", download=False))
    ds.Rows, ds.Columns = 20000, 20000   # 400 million pixels; the pixel data stays 64x64
    (tmp_path / "dcm").mkdir()
    ds.save_as(tmp_path / "dcm" / "huge.dcm")
    with pytest.raises(DataError, match=r"DICOM frame is too large to be read safely \(shape \(20000, 20000, 1\)"):
        load_case(discover_inputs(tmp_path / "dcm" / "huge.dcm")[0])
    nifti = tmp_path / "huge.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), str(nifti))
    raw = bytearray(nifti.read_bytes())
    raw[40:48] = np.array([3, 2000, 2000, 400], dtype="<i2").tobytes()   # dim[0..3] of the NIfTI-1 header
    nifti.write_bytes(bytes(raw))
    assert nib.load(str(nifti)).shape == (2000, 2000, 400)
    with pytest.raises(DataError, match=r"image is too large to be read safely \(shape \(2000, 2000, 400\): 1,600"):
        load_case(discover_inputs(nifti)[0])
    with pytest.raises(DataError, match="too large to be read safely"):
        read_nifti_volume(nifti)


def test_a_dicom_file_in_a_class_folder_is_listed_not_ignored(tmp_path, capsys):
    """``prepare --source folder`` reads PNG/JPEG/BMP/TIFF: a DICOM file (named .dcm, or without extension as scanners
    write them) or another non-image file in a class folder gets a skipped.csv row saying so and what to do; sidecar
    files (notes, tables, Thumbs.db) are ignored without a row."""
    import csv

    from PIL import Image

    from pipeline.data.synthetic_us import make_us_case

    base = tmp_path / "in"
    for c, cls in enumerate(("benign", "malignant")):
        (base / cls).mkdir(parents=True)
        for i in range(2):
            image, mask = make_us_case(np.random.default_rng(10 * c + i), cls, (32, 32))
            Image.fromarray(image).save(base / cls / f"good{i}.png")
            Image.fromarray((mask * 255).astype(np.uint8)).save(base / cls / f"good{i}_mask.png")
    dicom = copy_testdata("SC_rgb_rle.dcm", base / "benign")
    shutil.copy(dicom, base / "malignant" / "IM0001")            # a DICOM file without extension
    (base / "malignant" / "scan.zip").write_bytes(b"PK\x03\x04")   # another non-image file
    for sidecar in ("notes.txt", "labels.csv", "meta.json", "Thumbs.db", ".DS_Store"):
        (base / "benign" / sidecar).write_bytes(b"not an image")
    assert main(["prepare", "--source", "folder", "--input", str(base), "--output", str(tmp_path / "out"),
                 "--folds", "2"]) == 0
    with open(tmp_path / "out" / "skipped.csv", newline="", encoding="utf-8") as f:
        rows = {Path(r["path"]).name: r["problem"] for r in csv.DictReader(f)}
    assert set(rows) == {"SC_rgb_rle.dcm", "IM0001", "scan.zip"}, rows
    for name in ("SC_rgb_rle.dcm", "IM0001"):
        assert rows[name].startswith("DICOM file: the folder source does not read DICOM")
        assert "convert it to PNG first, or predict it directly with `bmtl predict`" in rows[name]
    assert rows["scan.zip"].startswith("not an image file ('.zip' file): the folder source reads .png")
    assert "SC_rgb_rle.dcm" in capsys.readouterr().out   # listed to the user too
