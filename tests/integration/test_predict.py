"""`bmtl predict` on exported bundles: mixed inputs (PNG, DICOM file and series, NIfTI 2D/3D, corrupt files), masks
in the input's geometry, the CSV, bad inputs and exit codes, Grad-CAM, runtimes, refinement, and a fresh process that
has only the exported folder.

Geometry is checked with a deterministic fake model put into the exported bundle as ``models/model.ts``: its lesion
logit is ``20 * (intensity - 0.5)``, so the predicted mask is the bright blob of the input, and a mask written in the
wrong orientation or place misses it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pipeline.cli import main
from pipeline.data.synthetic_dicom import write_dicom_series
from pipeline.deploy import export_bundle
from pipeline.inference import Predictor, discover_inputs, predict
from pipeline.prediction_journal import JOURNAL, MARKER, TABLE
from tests.integration.conftest import MR_BUNDLE, US_BUNDLE
from tests.integration.test_export_bundle import make_run

pytestmark = pytest.mark.slow
US_CLASSES = ["normal", "benign", "malignant"]


# --------------------------------------------------------------------------------------------------------- fixtures
class FakeModel(torch.nn.Module):
    """seg logit = 20 * (first channel - 0.5 - seg_offset); constant class logits."""

    def __init__(self, cls_logits, seg_offset: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("bias", torch.tensor(cls_logits, dtype=torch.float32))
        self.seg_offset = float(seg_offset)

    def forward(self, x):
        seg = (x[:, :1] - 0.5 - self.seg_offset) * 20.0
        cls = x[:, :1].mean(dim=(1, 2, 3))[:, None] * 0.0 + self.bias
        return seg, cls


def with_fake_model(exported: Path, target: Path, cls_logits, seg_offset: float = 0.0) -> Path:
    shutil.copytree(exported, target)
    (target / "models" / "model.onnx").unlink(missing_ok=True)
    example = torch.rand(2, 1, 64, 64)
    torch.jit.save(torch.jit.trace(FakeModel(cls_logits, seg_offset).eval(), example),
                   str(target / "models" / "model.ts"))
    return target


@pytest.fixture(scope="module")
def us_exported(tmp_path_factory) -> Path:
    """The US bundle exported (TorchScript + ONNX) from an untrained tiny segresnet_effnet run."""
    root = tmp_path_factory.mktemp("us_exported")
    run = make_run(root / "run", "segresnet_effnet")
    export_bundle(US_BUNDLE, run, root / "exported")
    return root / "exported"


@pytest.fixture(scope="module")
def us_fake(us_exported, tmp_path_factory) -> Path:
    return with_fake_model(us_exported, tmp_path_factory.mktemp("us_fake") / "bundle", [0.0, 1.0, 2.0])


@pytest.fixture(scope="module")
def mr_exported(tmp_path_factory) -> Path:
    """The MRI bundle exported (TorchScript) from an untrained tiny segresnet_shared run."""
    root = tmp_path_factory.mktemp("mr_exported")
    run = make_run(root / "run", "segresnet_shared", classes=["benign", "malignant"], modality="MR", bundle=MR_BUNDLE)
    export_bundle(MR_BUNDLE, run, root / "exported", formats=["torchscript"])
    return root / "exported"


@pytest.fixture(scope="module")
def mr_fake(mr_exported, tmp_path_factory) -> Path:
    return with_fake_model(mr_exported, tmp_path_factory.mktemp("mr_fake") / "bundle", [0.0, 1.0])


# ----------------------------------------------------------------------------------------------------------- inputs
def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return float((a & b).sum() / max((a | b).sum(), 1))


def blob_png(path: Path, shape=(40, 70), box=(slice(2, 14), slice(48, 66)), rgb=True) -> np.ndarray:
    """A non-square image with a bright box near the top-right corner; returns the box mask (H, W)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 40, size=shape).astype(np.uint8)
    mask = np.zeros(shape, bool)
    mask[box] = True
    image[mask] = 230
    Image.fromarray(image).convert("RGB" if rgb else "L").save(path)
    return mask


def cube_volume(shape=(30, 20, 6), box=(slice(0, 9), slice(0, 7), slice(0, 3))) -> tuple[np.ndarray, np.ndarray]:
    volume = np.zeros(shape, np.int16)
    volume[box] = 1000
    return volume, volume > 0


# oblique-free but not RAS: array axis 0 -> -y (posterior), axis 1 -> +z, axis 2 -> -x (left); voxel sizes 1.5/2/3
NON_RAS = np.array([[0.0, 0.0, -3.0, 20.0], [-1.5, 0.0, 0.0, 10.0], [0.0, 2.0, 0.0, -5.0], [0, 0, 0, 1]])


def nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(array, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))
    return path


def us_dicom(path: Path, shape=(50, 80), box=(slice(35, 48), slice(2, 20)), spacing=(0.1, 0.2),
             pixels: bool = True) -> np.ndarray:
    """A single-frame RGB ultrasound DICOM with a bright box near the bottom-left corner."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    mask = np.zeros(shape, bool)
    mask[box] = True
    rgb = np.zeros((*shape, 3), np.uint8)
    rgb[mask] = 220
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"  # Ultrasound Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.PatientID = "anon"
    ds.SeriesInstanceUID = generate_uid()
    ds.Rows, ds.Columns = shape
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelSpacing = [str(spacing[0]), str(spacing[1])]
    if pixels:
        ds.PixelData = rgb.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return mask


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("mixed") / "inputs"
    (root / "sub").mkdir(parents=True)
    truth = {"png": blob_png(root / "a_blob.png")}
    volume, cube = cube_volume()
    truth["nifti"] = cube
    nifti(root / "sub" / "volume.nii.gz", volume, NON_RAS)
    dicom_affine = np.array([[1.2, 0, 0, -30.0], [0, 0.9, 0, 12.0], [0, 0, 2.5, 40.0], [0, 0, 0, 1]])
    write_dicom_series(volume, root / "series_01", dicom_affine)
    truth["series"] = cube
    truth["dicom"] = us_dicom(root / "us_frame.dcm")
    slice2d = np.zeros((24, 36), np.float32)
    slice2d[16:24, 0:10] = 1.0
    nifti(root / "slice2d.nii.gz", slice2d, np.diag([-0.8, 0.8, 3.0, 1.0]))
    truth["nifti2d"] = slice2d > 0
    (root / "broken.png").write_bytes((root / "a_blob.png").read_bytes()[:90])
    return {"root": root, "truth": truth, "dicom_affine": dicom_affine}


# ------------------------------------------------------------------------------------------------------------ tests
def test_discovery_groups_the_series_and_flags_unknown_types(mixed_folder, tmp_path):
    items = {i.name: i.kind for i in discover_inputs(mixed_folder["root"])}
    assert items == {"a_blob": "raster", "broken": "raster", "series_01": "dicom_series", "slice2d": "nifti",
                     "sub/volume": "nifti", "us_frame": "dicom"}
    (tmp_path / "x.txt").write_text("x")
    assert [i.kind for i in discover_inputs(tmp_path / "x.txt")] == ["unsupported"]


def test_mixed_folder_masks_keep_the_input_geometry(us_fake, mixed_folder, tmp_path):
    out = tmp_path / "out"
    assert main(["predict", "--bundle", str(us_fake), "--input", str(mixed_folder["root"]), "--output", str(out),
                 "--no-progress"]) == 3   # broken.png failed, the others were predicted
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    expected_columns = ["file", "frame", "type", "status", "error", "predicted_class", "low_confidence", "prob_normal",
                        "prob_benign", "prob_malignant", "lesion_area_px", "lesion_area_mm2", "lesion_voxels",
                        "lesion_volume_mm3", "n_slices", "height", "width", "spacing_mm", "spacing_note", "refined",
                        "mask", "overlay", "heatmap"]
    assert list(table.columns) == expected_columns
    assert len(table) == 6
    errors = table[table.status == "error"]
    assert errors.file.map(lambda f: Path(f).name).tolist() == ["broken.png"]
    assert "truncated" in errors.error.iloc[0]
    ok = table[table.status == "ok"].set_index(table[table.status == "ok"].file.map(lambda f: Path(f).name))
    assert (ok.predicted_class == "malignant").all()  # the fake model's constant logits
    # paths in the table: inputs relative to --input, outputs relative to the output folder (both portable)
    assert set(table.file) == {"a_blob.png", "broken.png", "sub/volume.nii.gz", "series_01", "us_frame.dcm",
                               "slice2d.nii.gz"}
    assert ok.loc["volume.nii.gz", "mask"] == "masks/sub/volume_mask.nii.gz"
    assert ok.loc["a_blob.png", "overlay"] == "overlays/a_blob_overlay.png"
    truth = mixed_folder["truth"]

    # PNG: the mask has the image's (H, W) and the box where the image has it (top-right corner)
    png = np.asarray(Image.open(out / "masks" / "a_blob_mask.png"))
    assert png.shape == (40, 70) and png.dtype == np.uint8 and set(np.unique(png)) <= {0, 255}
    assert iou(png, truth["png"]) > 0.8
    assert png[:20, 35:].sum() > 0 and png[20:, :].sum() == 0 and png[:, :35].sum() == 0
    assert int(ok.loc["a_blob.png", "height"]) == 40 and int(ok.loc["a_blob.png", "width"]) == 70
    assert ok.loc["a_blob.png", "lesion_area_mm2"] == ""  # no spacing in a PNG

    # 3D NIfTI with a non-RAS affine: same shape, affine and header; the cube in the input's own voxel order
    source = nib.load(str(mixed_folder["root"] / "sub" / "volume.nii.gz"))
    mask = nib.load(str(out / "masks" / "sub" / "volume_mask.nii.gz"))
    assert mask.shape == source.shape
    np.testing.assert_allclose(mask.affine, source.affine)
    assert mask.header.get_zooms() == source.header.get_zooms()
    assert int(mask.header["sform_code"]) == 1 and int(mask.header["qform_code"]) == 1
    assert iou(np.asarray(mask.dataobj), truth["nifti"]) > 0.8
    row = ok.loc["volume.nii.gz"]
    assert int(row.n_slices) > 1 and int(row.lesion_voxels) > 0 and float(row.lesion_volume_mm3) > 0

    # DICOM series: NIfTI in the series' geometry, array axes (columns, rows, slices)
    from pipeline.data.dicom_series import read_dicom_series

    series = read_dicom_series(mixed_folder["root"] / "series_01")
    mask = nib.load(str(out / "masks" / "series_01_mask.nii.gz"))
    np.testing.assert_allclose(mask.affine, series.affine, atol=1e-4)
    assert mask.shape == series.data.shape == truth["series"].shape
    assert iou(np.asarray(mask.dataobj), truth["series"]) > 0.8

    # single RGB ultrasound DICOM: PNG mask (Rows, Columns), area in mm² from PixelSpacing
    dcm = np.asarray(Image.open(out / "masks" / "us_frame_mask.png"))
    assert dcm.shape == (50, 80) and iou(dcm, truth["dicom"]) > 0.8
    row = ok.loc["us_frame.dcm"]
    assert float(row.lesion_area_mm2) == pytest.approx(int(row.lesion_area_px) * 0.1 * 0.2, rel=1e-3)

    # 2D NIfTI with a flipped axis: same shape and affine, blob in place
    source = nib.load(str(mixed_folder["root"] / "slice2d.nii.gz"))
    mask = nib.load(str(out / "masks" / "slice2d_mask.nii.gz"))
    assert mask.shape == source.shape == (24, 36)
    np.testing.assert_allclose(mask.affine, source.affine)
    assert iou(np.asarray(mask.dataobj), truth["nifti2d"]) > 0.8

    for name in ("a_blob", "sub/volume", "series_01", "us_frame", "slice2d"):
        assert (out / "overlays" / f"{name}_overlay.png").stat().st_size > 2000


def test_mri_bundle_normalises_the_volume_and_keeps_its_geometry(mr_fake, tmp_path):
    volume, cube = cube_volume(shape=(32, 28, 8), box=(slice(20, 32), slice(0, 8), slice(5, 8)))
    volume = volume.astype(np.float32) * 3.7 + 250.0  # raw scanner values: normalised per volume first
    path = nifti(tmp_path / "case.nii", volume, NON_RAS)
    result = predict(mr_fake, path, tmp_path / "out", progress=False, batch_size=3)  # slices over several batches
    assert result.exit_code == 0 and result.rows[0]["status"] == "ok"
    assert result.rows[0]["predicted_class"] == "malignant"
    mask = nib.load(result.path(result.rows[0]))
    assert mask.shape == volume.shape
    np.testing.assert_allclose(mask.affine, NON_RAS)
    assert iou(np.asarray(mask.dataobj), cube) > 0.8


def test_an_nrrd_volume_gets_an_nrrd_mask_in_its_own_geometry(mr_fake, tmp_path):
    import nrrd

    volume, cube = cube_volume(shape=(32, 28, 8), box=(slice(20, 32), slice(0, 8), slice(5, 8)))
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ NON_RAS
    header = {"space": "left-posterior-superior", "space directions": lps[:3, :3].T, "space origin": lps[:3, 3],
              "kinds": ["domain"] * 3}
    nrrd.write(str(tmp_path / "case.nrrd"), volume.astype(np.float32) * 3.7 + 250.0, header)
    from_nifti = predict(mr_fake, nifti(tmp_path / "case.nii", volume.astype(np.float32) * 3.7 + 250.0, NON_RAS),
                         tmp_path / "nifti", progress=False, overlays=False)
    as_nifti = from_nifti.rows[0]
    result = predict(mr_fake, tmp_path / "case.nrrd", tmp_path / "out", progress=False, overlays=False)
    row = result.rows[0]
    assert row["status"] == "ok" and row["mask"].endswith("case_mask.nrrd") and row["type"] == "nrrd"
    mask, mask_header = nrrd.read(str(result.path(row)))
    assert mask.shape == volume.shape and mask.dtype == np.uint8
    np.testing.assert_allclose(mask_header["space directions"], header["space directions"])
    np.testing.assert_allclose(mask_header["space origin"], header["space origin"])
    assert iou(mask, cube) > 0.8
    np.testing.assert_array_equal(mask, np.asarray(nib.load(from_nifti.path(as_nifti)).dataobj))  # as from NIfTI
    assert row["lesion_voxels"] == as_nifti["lesion_voxels"] and row["spacing_mm"] == as_nifti["spacing_mm"]


def test_a_metaimage_volume_gets_a_metaimage_mask_in_its_own_geometry(mr_fake, tmp_path):
    itk = pytest.importorskip("itk")

    volume, cube = cube_volume(shape=(32, 28, 8), box=(slice(20, 32), slice(0, 8), slice(5, 8)))
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ NON_RAS
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image = itk.image_from_array(np.ascontiguousarray((volume.astype(np.float32) * 3.7 + 250.0).T))  # (z, y, x)
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(lps[:3, :3] / spacing)))
    (tmp_path / "in").mkdir()
    itk.imwrite(image, str(tmp_path / "in" / "case.mhd"))
    from_nifti = predict(mr_fake, nifti(tmp_path / "case.nii", volume.astype(np.float32) * 3.7 + 250.0, NON_RAS),
                         tmp_path / "nifti", progress=False, overlays=False)
    as_nifti = from_nifti.rows[0]
    result = predict(mr_fake, tmp_path / "in", tmp_path / "out", progress=False, overlays=False)
    assert len(result.rows) == 1, result.rows   # the .raw beside case.mhd is its data, not an input
    row = result.rows[0]
    assert row["status"] == "ok" and row["mask"].endswith("case_mask.mha") and row["type"] == "metaimage"
    written = itk.imread(str(result.path(row)))
    mask = itk.array_from_image(written).T
    assert mask.shape == volume.shape and mask.dtype == np.uint8
    np.testing.assert_allclose(written.GetSpacing(), image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(written.GetOrigin(), image.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(itk.array_from_matrix(written.GetDirection()),
                               itk.array_from_matrix(image.GetDirection()), atol=1e-6)
    assert iou(mask, cube) > 0.8
    np.testing.assert_array_equal(mask, np.asarray(nib.load(from_nifti.path(as_nifti)).dataobj))  # as from NIfTI
    assert row["lesion_voxels"] == as_nifti["lesion_voxels"] and row["spacing_mm"] == as_nifti["spacing_mm"]


def test_native_resolution_uses_the_sliding_window_at_the_image_size(us_fake, tmp_path):
    truth = blob_png(tmp_path / "big.png", shape=(100, 150), box=(slice(70, 98), slice(5, 40)), rgb=False)
    result = predict(us_fake, tmp_path / "big.png", tmp_path / "out", native_resolution=True, progress=False,
                     overlays=False)
    mask = np.asarray(Image.open(result.path(result.rows[0])))
    assert mask.shape == (100, 150)
    assert iou(mask, truth) > 0.95  # no resizing: the fake model's mask is the box itself


def test_bad_inputs_get_error_rows_and_exit_code_one(us_fake, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(bad / "one_pixel.png")
    blob_png(tmp_path / "ok.png")
    (bad / "truncated.png").write_bytes((tmp_path / "ok.png").read_bytes()[:80])
    (bad / "notes.txt").write_text("not an image")
    nifti(bad / "dce.nii.gz", np.zeros((8, 8, 4, 3), np.float32), np.eye(4))
    us_dicom(bad / "no_pixels.dcm", pixels=False)
    with_nan = np.ones((16, 16), np.float32)
    with_nan[3, 4] = np.nan
    nifti(bad / "nan.nii.gz", with_nan, np.eye(4))
    expected = {
        "empty.png": "file is empty (0 bytes)",
        "one_pixel.png": "image is too small (1x1 pixels)",
        "truncated.png": "truncated",
        "notes.txt": "unsupported file type '.txt'",
        "dce.nii.gz": "4D volume (shape (8, 8, 4, 3)",
        "no_pixels.dcm": "DICOM file without pixel data",
        "nan.nii.gz": "non-finite pixels (1 NaN, 0 inf)",
    }
    out = tmp_path / "out"
    assert main(["predict", "--bundle", str(us_fake), "--input", str(bad), "--output", str(out),
                 "--no-progress"]) == 1
    assert "0 input(s) predicted, 7 failed" in capsys.readouterr().out
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert (table.status == "error").all()
    got = dict(zip(table.file.map(lambda f: Path(f).name), table.error))
    assert set(got) == set(expected)
    for name, problem in expected.items():
        assert problem in got[name], (name, got[name])

    shutil.copy(tmp_path / "ok.png", bad / "ok.png")  # one good input among the bad ones: exit code 3
    assert main(["predict", "--bundle", str(us_fake), "--input", str(bad), "--output", str(out),
                 "--no-progress", "--overwrite"]) == 3
    assert "1 input(s) predicted, 7 failed" in capsys.readouterr().out
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert table.status.tolist().count("ok") == 1 and len(table) == 8


def test_mask_files_in_a_folder_are_listed_not_predicted(us_fake, tmp_path, capsys):
    folder = tmp_path / "busi"
    folder.mkdir()
    blob_png(folder / "benign (1).png")
    blob_png(folder / "benign (1)_mask.png")
    blob_png(folder / "benign (1)_mask_1.png")
    blob_png(folder / "x_MASK.PNG")
    out = tmp_path / "out"
    assert main(["predict", "--bundle", str(us_fake), "--input", str(folder), "--output", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "1 input(s) predicted, 0 failed, 3 skipped" in printed and "skipped: " in printed
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    status = dict(zip(table.file.map(lambda f: Path(f).name), table.status))
    assert status == {"benign (1).png": "ok", "benign (1)_mask.png": "skipped", "benign (1)_mask_1.png": "skipped",
                      "x_MASK.PNG": "skipped"}
    assert (table[table.status == "skipped"].error.str.contains("named like a lesion mask")).all()
    assert not (out / "masks" / "benign (1)_mask_mask.png").exists()
    # a mask file given on its own is what the user asked for: predicted
    result = predict(us_fake, folder / "x_MASK.PNG", tmp_path / "one", progress=False)
    assert result.exit_code == 0 and result.rows[0]["status"] == "ok"


def test_output_folder_inside_the_input_is_not_read_back(us_fake, tmp_path):
    blob_png(tmp_path / "a.png")
    for rerun in (False, True):
        result = predict(us_fake, tmp_path, tmp_path / "predictions", progress=False, overwrite=rerun)
        assert [Path(r["file"]).name for r in result.rows] == ["a.png"] and result.exit_code == 0


def test_usage_errors_exit_two(us_fake, tmp_path, capsys):
    blob_png(tmp_path / "x.png")
    assert main(["predict", "--bundle", str(US_BUNDLE), "--input", str(tmp_path / "x.png"), "--output",
                 str(tmp_path / "o")]) == 2  # a source bundle, not an exported one
    assert "not an exported bundle" in capsys.readouterr().err
    assert main(["predict", "--bundle", str(us_fake), "--input", str(tmp_path / "missing"), "--output",
                 str(tmp_path / "o")]) == 2
    assert main(["predict", "--bundle", str(us_fake), "--input", str(tmp_path / "x.png"), "--output",
                 str(tmp_path / "o"), "--runtime", "onnx"]) == 2  # the fake bundle has no model.onnx
    assert "model.onnx" in capsys.readouterr().err
    with pytest.raises(SystemExit) as error:   # an option value argparse checks itself: exit 2 with the usage line
        main(["predict", "--bundle", str(us_fake), "--input", str(tmp_path / "x.png"), "--output",
              str(tmp_path / "o"), "--threshold", "1.5"])
    assert error.value.code == 2 and "--threshold: must be between 0 and 1" in capsys.readouterr().err
    (tmp_path / "scans").mkdir()
    blob_png(tmp_path / "scans" / "y.png")
    assert main(["predict", "--bundle", str(us_fake), "--input", str(tmp_path / "scans"), "--output",
                 str(tmp_path)]) == 2   # an output above the input would leave out every input
    assert f"the output folder {tmp_path} contains the input folder {tmp_path / 'scans'}" in capsys.readouterr().err
    assert not (tmp_path / "predictions.csv").exists()


@pytest.mark.parametrize("killed", ["predictions.csv", "a_mask.png", "a_overlay.png"])
def test_outputs_are_replaced_atomically(us_fake, tmp_path, kill_before_rename, killed):
    """A kill between writing a new output and renaming it keeps the previous run's complete file, no temporary."""
    (tmp_path / "in").mkdir()
    blob_png(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    predict(us_fake, tmp_path / "in", out, progress=False)
    before = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    blob_png(tmp_path / "in" / "a.png", box=(slice(20, 30), slice(5, 20)))  # another image under the same name
    kill_before_rename(killed)
    if killed == "predictions.csv":
        with pytest.raises(OSError, match="killed before the rename"):
            predict(us_fake, tmp_path / "in", out, progress=False, overwrite=True)
    else:  # a failed image output is that input's error row; the table is written
        row = predict(us_fake, tmp_path / "in", out, progress=False, overwrite=True).rows[0]
        assert row["status"] == "error" and "killed before the rename" in row["error"]
    after = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # no temporary file; a run killed before its table keeps its in-progress marker and journal (it reads unfinished);
    # the new mask written before a failed overlay is removed with it (no mask beside an error row)
    unfinished = {MARKER, JOURNAL} if killed == "predictions.csv" else set()
    orphan = {"masks/a_mask.png"} if killed == "a_overlay.png" else set()
    assert set(after) == (set(before) | unfinished) - orphan
    name = next(k for k in before if k.endswith(killed))
    assert after[name] == before[name]


@pytest.mark.parametrize("failing", ["write_overlay", "write_heatmap"])
def test_a_failed_overlay_or_heatmap_leaves_no_orphan_mask(us_exported, tmp_path, monkeypatch, failing):
    """The mask, overlay and heatmap of one input are written together or not at all: when a later one fails, the
    files already written are removed and the input gets an error row; the next input is predicted as usual."""
    import pipeline.inference.outputs as outputs_module

    (tmp_path / "in").mkdir()
    blob_png(tmp_path / "in" / "a.png")
    blob_png(tmp_path / "in" / "b.png")
    real = getattr(outputs_module, failing)

    def write(path, *args, **kwargs):
        if path.name.startswith("a_"):
            raise OSError(f"disk full writing {path.name}")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(outputs_module, failing, write)
    out = tmp_path / "out"
    result = predict(us_exported, tmp_path / "in", out, explain=True, progress=False, batch_size=1)
    rows = {r["file"]: r for r in result.rows}
    assert rows["a.png"]["status"] == "error" and "disk full" in rows["a.png"]["error"]
    assert not list(out.rglob("a_*")), sorted(out.rglob("*"))   # neither its mask nor any other file of it
    assert rows["b.png"]["status"] == "ok" and (out / rows["b.png"]["mask"]).is_file()
    assert (out / rows["b.png"]["overlay"]).is_file() and (out / rows["b.png"]["heatmap"]).is_file()
    table = pd.read_csv(out / TABLE, keep_default_na=False)
    assert table.loc[table["file"] == "a.png", "mask"].item() == ""


def test_very_long_input_names_get_shortened_unique_outputs(us_fake, tmp_path):
    """A 250-character file name is valid, its ``_overlay.png`` sibling (262 bytes) would not be: derived names are
    shortened (a readable start and a hash of the full stem), not failed, and stay unique."""
    (tmp_path / "in").mkdir()
    stems = ["l" * 249 + "1", "l" * 249 + "2"]
    for stem in stems:
        blob_png(tmp_path / "in" / f"{stem}.png")
    out = tmp_path / "out"
    result = predict(us_fake, tmp_path / "in", out, explain=True, progress=False)
    assert result.exit_code == 0, result.rows
    assert sorted(r["file"] for r in result.rows) == [f"{stem}.png" for stem in stems]   # the table keeps the name
    for column in ("mask", "overlay", "heatmap"):
        paths = [out / r[column] for r in result.rows]
        assert len(set(paths)) == 2 and all(p.is_file() for p in paths), paths
        assert all(p.name.startswith("l" * 200) and len(os.fsencode(p.name)) <= 255 for p in paths), paths
    assert not [p for p in out.rglob(".*") if p.is_file()]   # no temporary file left behind


def test_an_input_above_the_pixel_limit_gets_an_error_row_naming_it(us_fake, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    blob_png(tmp_path / "in" / "big.png", shape=(40, 70))                                  # 2800 pixels
    blob_png(tmp_path / "in" / "small.png", shape=(30, 30), box=(slice(2, 10), slice(3, 12)))   # 900 pixels
    result = predict(us_fake, tmp_path / "in", tmp_path / "out", progress=False, max_pixels=1000)
    rows = {r["file"]: r for r in result.rows}
    assert rows["small.png"]["status"] == "ok" and result.exit_code == 3
    assert rows["big.png"]["status"] == "error"
    assert rows["big.png"]["error"].startswith("input too large: 2,800 pixels (40 x 70), above the limit of 1,000 "
                                               "pixels (max_pixels, --max-pixels)")
    assert not (tmp_path / "out" / "masks" / "big_mask.png").exists()
    assert main(["predict", "--bundle", str(us_fake), "--input", str(tmp_path / "in"), "--output",
                 str(tmp_path / "cli"), "--no-progress", "--max-pixels", "2000"]) == 3
    assert "big.png: input too large: 2,800 pixels (40 x 70), above the limit of 2,000" in capsys.readouterr().out
    assert main(["predict", "--bundle", str(us_fake), "--input", str(tmp_path / "in"), "--output",
                 str(tmp_path / "unlimited"), "--no-progress", "--max-pixels", "0"]) == 0


def test_an_interrupted_run_is_marked_refused_and_resumed(us_fake, tmp_path, capsys, monkeypatch):
    """Killed after two of four inputs: the folder reads as unfinished (marker, no table); a re-run without an option
    is refused (exit 2); --resume predicts only the two missing inputs and writes the whole table."""
    (tmp_path / "in").mkdir()
    for k in range(4):
        blob_png(tmp_path / "in" / f"img{k}.png", box=(slice(2 + 3 * k, 14 + 3 * k), slice(40, 60)))
    out, loaded, interrupt_after = tmp_path / "out", [], [2]
    real_load = Predictor._load

    def load(self, item):
        if len(loaded) in interrupt_after:
            raise KeyboardInterrupt   # the user's Ctrl-C
        loaded.append(Path(item.path).name)
        return real_load(self, item)

    monkeypatch.setattr(Predictor, "_load", load)
    with pytest.raises(KeyboardInterrupt):
        predict(us_fake, tmp_path / "in", out, progress=False, batch_size=1)
    assert (out / MARKER).exists() and not (out / TABLE).exists()
    assert main(["predict", "--bundle", str(us_fake), "--input", str(tmp_path / "in"), "--output", str(out),
                 "--no-progress"]) == 2
    assert "holds an interrupted prediction run" in capsys.readouterr().err

    interrupt_after.clear()
    assert main(["predict", "--bundle", str(us_fake), "--input", str(tmp_path / "in"), "--output", str(out),
                 "--no-progress", "--resume", "--batch-size", "1"]) == 0
    assert loaded[2:] == ["img2.png", "img3.png"]   # the two finished inputs were not predicted again
    table = pd.read_csv(out / TABLE)
    assert [Path(f).name for f in table["file"]] == [f"img{k}.png" for k in range(4)]
    assert (table["status"] == "ok").all() and table["lesion_area_px"].gt(0).all()
    assert not (out / MARKER).exists() and not (out / JOURNAL).exists()
    assert main(["predict", "--bundle", str(us_fake), "--input", str(tmp_path / "in"), "--output", str(out),
                 "--no-progress", "--overwrite"]) == 0
    assert loaded[4:] == [f"img{k}.png" for k in range(4)]


def test_incomplete_bundle_is_refused(us_fake, tmp_path, capsys):
    """An export that did not finish (no models/export_report.json, written last) is named and not used."""
    bundle = tmp_path / "half_exported"
    shutil.copytree(us_fake, bundle)
    (bundle / "models" / "export_report.json").unlink()
    blob_png(tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"half_exported: incomplete exported bundle: models/export_report.json"):
        predict(bundle, tmp_path / "x.png", tmp_path / "o", progress=False)
    assert main(["predict", "--bundle", str(bundle), "--input", str(tmp_path / "x.png"), "--output",
                 str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "half_exported" in err and "re-export" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "predictions.csv").exists()


@pytest.mark.parametrize("runtime", ["torchscript", "onnx", "torch"])
def test_truncated_model_file_is_named(us_exported, tmp_path, capsys, runtime):
    """A truncated model.ts / model.onnx / model.pt gives one error naming the file, not the loader's traceback."""
    from pipeline.inference import MODEL_FILES

    bundle = tmp_path / "bundle"
    shutil.copytree(us_exported, bundle)
    model = bundle / "models" / MODEL_FILES[runtime]
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    blob_png(tmp_path / "x.png")
    with pytest.raises(ValueError, match=rf"{MODEL_FILES[runtime]}: .*(truncated|corrupt)"):
        predict(bundle, tmp_path / "x.png", tmp_path / "o", runtime=runtime, progress=False)
    assert main(["predict", "--bundle", str(bundle), "--input", str(tmp_path / "x.png"), "--output",
                 str(tmp_path / "o"), "--runtime", runtime]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(model) in err and "Traceback" not in err


def test_refinement_empties_the_mask_of_an_image_classified_normal(us_exported, tmp_path):
    bundle = with_fake_model(us_exported, tmp_path / "normal_bundle", [4.0, 0.0, 0.0])
    blob_png(tmp_path / "img.png")
    plain = predict(bundle, tmp_path / "img.png", tmp_path / "plain", refine=False, progress=False,
                    overlays=False).rows[0]
    # the default ("auto" in inference.yaml): on, since the classes include normal
    refined = predict(bundle, tmp_path / "img.png", tmp_path / "refined", progress=False, overlays=False).rows[0]
    refined["mask"] = tmp_path / "refined" / refined["mask"]   # the table's paths are relative to the output folder
    assert plain["predicted_class"] == "normal" and plain["lesion_area_px"] > 0 and plain["refined"] is False
    assert refined["refined"] is True and refined["lesion_area_px"] == 0
    assert np.asarray(Image.open(refined["mask"])).max() == 0
    assert main(["predict", "--bundle", str(bundle), "--input", str(tmp_path / "img.png"), "--output",
                 str(tmp_path / "cli"), "--no-refine", "--no-progress"]) == 0
    assert pd.read_csv(tmp_path / "cli" / "predictions.csv").lesion_area_px[0] > 0


@pytest.mark.parametrize("logits, low", [([0.0, 0.0, 0.0], True), ([0.0, 0.0, 0.3], True), ([0.0, 0.0, 4.0], False)])
def test_predictions_near_the_decision_are_flagged_low_confidence(us_exported, tmp_path, logits, low):
    bundle = with_fake_model(us_exported, tmp_path / "bundle", logits)
    blob_png(tmp_path / "img.png")
    row = predict(bundle, tmp_path / "img.png", tmp_path / "out", progress=False, overlays=False).rows[0]
    assert row["low_confidence"] is low
    strict = predict(bundle, tmp_path / "img.png", tmp_path / "strict", progress=False, overlays=False,
                     confidence_margin=0.0).rows[0]
    assert strict["low_confidence"] is False


def test_predicted_class_follows_the_bundles_operating_threshold(us_exported, tmp_path):
    import yaml

    bundle = with_fake_model(us_exported, tmp_path / "bundle", [2.0, 1.0, 0.0])   # p(malignant) = 0.09
    blob_png(tmp_path / "img.png")
    deploy = bundle / "configs" / "deploy.yaml"
    argmax = predict(bundle, tmp_path / "img.png", tmp_path / "argmax", progress=False, overlays=False).rows[0]
    config = yaml.safe_load(deploy.read_text())
    assert argmax["predicted_class"] == "normal"
    config["cls_threshold"] = 0.05      # what training would pin after choosing it on the validation fold
    deploy.write_text(yaml.safe_dump(config))
    low = predict(bundle, tmp_path / "img.png", tmp_path / "low", progress=False, overlays=False).rows[0]
    assert low["predicted_class"] == "malignant" and low["prob_malignant"] == argmax["prob_malignant"]
    config["cls_threshold"] = 1.5
    deploy.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="cls_threshold of .*deploy.yaml must be in"):
        Predictor(bundle, progress=False)


def graded_png(path: Path) -> Path:
    """A radial ramp (255 at the centre, 0 from 24 px out): the lesion's radius follows the lesion threshold."""
    yy, xx = np.mgrid[:64, :80]
    ramp = np.clip(1 - np.hypot(yy - 32, xx - 40) / 24, 0, 1)
    Image.fromarray((ramp * 255).round().astype(np.uint8)).save(path)
    return path


def test_fold_ensemble_averages_the_members_probabilities(us_exported, tmp_path, capsys):
    a = with_fake_model(us_exported, tmp_path / "a", [0.0, 1.0, 2.0])
    b = with_fake_model(us_exported, tmp_path / "b", [2.0, 2.5, 0.0], seg_offset=0.3)   # a smaller lesion
    image = graded_png(tmp_path / "img.png")
    options = dict(progress=False, overlays=False, refine=False, tta="none")
    rows = {name: predict(bundles, image, tmp_path / name, **options).rows[0]
            for name, bundles in [("a", a), ("b", b), ("ab", [a, b]), ("aa", [a, a])]}
    for c in US_CLASSES:
        assert rows["ab"][f"prob_{c}"] == pytest.approx((rows["a"][f"prob_{c}"] + rows["b"][f"prob_{c}"]) / 2,
                                                        abs=2e-6)
        assert rows["aa"][f"prob_{c}"] == rows["a"][f"prob_{c}"]
    area = {name: row["lesion_area_px"] for name, row in rows.items()}
    assert area["a"] > area["ab"] > area["b"] > 0   # the mean lesion probability crosses 0.5 between the two
    assert area["aa"] == area["a"]
    # a: malignant (0.09 / 0.24 / 0.67), b: benign (0.36 / 0.59 / 0.05); their mean 0.22 / 0.42 / 0.36 (argmax)
    assert rows["ab"]["predicted_class"] == "benign"
    assert main(["predict", "--bundle", str(a), "--bundle", str(b), "--input", str(image), "--output",
                 str(tmp_path / "cli"), "--no-refine", "--tta", "none", "--no-progress", "--no-overlays"]) == 0
    assert "2 bundles averaged" in capsys.readouterr().out
    assert pd.read_csv(tmp_path / "cli" / "predictions.csv").prob_benign[0] == pytest.approx(rows["ab"]["prob_benign"])
    # the bundle's own inference config: --ensemble_bundles and --tta of `monai.bundle run inferring`
    from monai.bundle import ConfigWorkflow

    configs = [str(a / "configs" / f) for f in ("common.yaml", "deploy.yaml", "inference.yaml")]
    workflow = ConfigWorkflow(config_file=configs, meta_file=str(a / "configs" / "metadata.json"), run_id="inferring",
                              bundle_root=str(a), input_dir=str(image), output_dir=str(tmp_path / "bundle_run"),
                              ensemble_bundles=[str(b)], tta="none", refine=False, progress=False, overlays=False)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    table = pd.read_csv(tmp_path / "bundle_run" / "predictions.csv")
    assert table.prob_benign[0] == pytest.approx(rows["ab"]["prob_benign"])
    assert table.lesion_area_px[0] == area["ab"]


def test_fold_ensemble_refuses_bundles_that_disagree(us_exported, tmp_path):
    import yaml

    a = with_fake_model(us_exported, tmp_path / "a", [0.0, 1.0, 2.0])
    other = with_fake_model(us_exported, tmp_path / "other", [0.0, 1.0])
    deploy = other / "configs" / "deploy.yaml"
    config = yaml.safe_load(deploy.read_text())
    config["classes"] = ["benign", "malignant"]
    deploy.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match=r"other cannot be averaged with .*: its classes is"):
        Predictor([a, other], progress=False)
    with pytest.raises(ValueError, match="at least one"):
        Predictor([], progress=False)


def test_flip_tta_follows_the_bundle_unless_chosen(us_exported, tmp_path):
    from pipeline.data.synthetic_us import make_us_case

    image, _ = make_us_case(np.random.default_rng(5), "malignant", size=(64, 80))
    Image.fromarray(image).save(tmp_path / "case.png")
    default = Predictor(us_exported, progress=False)
    assert Predictor(us_exported, tta="flip", progress=False).flip_tta is True
    assert Predictor(us_exported, tta="none", progress=False).flip_tta is False
    with pytest.raises(ValueError, match="tta must be"):
        Predictor(us_exported, tta="rotate", progress=False)
    rows = {tta: predict(us_exported, tmp_path / "case.png", tmp_path / tta, tta=tta, runtime="torch",
                         progress=False, overlays=False).rows[0] for tta in ("flip", "none")}
    # an untrained network is not left-right symmetric: averaging the flip in moves the probabilities
    assert rows["flip"]["prob_malignant"] != pytest.approx(rows["none"]["prob_malignant"], abs=1e-6)
    same = "flip" if default.flip_tta else "none"
    by_default = predict(us_exported, tmp_path / "case.png", tmp_path / "default", runtime="torch", progress=False,
                         overlays=False).rows[0]
    assert by_default["prob_malignant"] == rows[same]["prob_malignant"]


def test_gradcam_heatmap_names_the_predicted_class_and_is_not_constant(us_exported, tmp_path, monkeypatch):
    import pipeline.inference.outputs as outputs_module

    blob_png(tmp_path / "img.png", shape=(56, 90))
    drawn = []
    real = outputs_module.write_heatmap
    monkeypatch.setattr(outputs_module, "write_heatmap",
                        lambda path, image, heat, class_name, title: drawn.append((image.shape, class_name, title))
                        or real(path, image, heat, class_name, title))
    result = predict(us_exported, tmp_path / "img.png", tmp_path / "out", explain=True, progress=False)
    assert drawn == [((56, 90), result.rows[0]["predicted_class"], "img")]   # the class it explains, the file
    heat = Image.open(result.path(result.rows[0], "heatmap"))
    assert heat.size[0] > heat.size[1] * 1.4   # wider than the input (90:56 under a title) by the colour bar
    assert np.asarray(heat, dtype=np.float32).std() > 1.0
    predictor = Predictor(us_exported, explain=True, progress=False)
    cam = predictor.gradcam(torch.rand(1, 64, 64), class_index=2)
    assert cam.shape == (64, 64) and cam.std() > 0 and 0.0 <= cam.min() and cam.max() <= 1.0


def test_runtimes_agree(us_exported, tmp_path):
    from pipeline.data.synthetic_us import make_us_case

    image, _ = make_us_case(np.random.default_rng(3), "malignant", size=(72, 96))
    Image.fromarray(image).save(tmp_path / "case.png")
    rows = {rt: predict(us_exported, tmp_path / "case.png", tmp_path / rt, runtime=rt, progress=False,
                        overlays=False).rows[0] for rt in ("torch", "torchscript", "onnx")}
    masks = {rt: np.asarray(Image.open(tmp_path / rt / r["mask"])) > 0 for rt, r in rows.items()}
    for rt in ("torchscript", "onnx"):
        for c in US_CLASSES:
            assert rows[rt][f"prob_{c}"] == pytest.approx(rows["torch"][f"prob_{c}"], abs=1e-4)
        assert (masks[rt] != masks["torch"]).mean() < 0.002  # at most a pixel or two at the threshold


def test_exported_bundle_runs_alone_in_a_fresh_process(us_fake, mixed_folder, tmp_path):
    elsewhere = tmp_path / "elsewhere" / "my_bundle"
    shutil.copytree(us_fake, elsewhere)
    assert not any(p.name in ("train.yaml", "datalist.json") for p in elsewhere.rglob("*"))
    (elsewhere / "configs" / "evaluate.yaml").unlink()   # exported for `bmtl evaluate --bundle`; predict needs none
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pipeline.cli", "predict", "--bundle", str(elsewhere), "--input",
           str(mixed_folder["root"]), "--output", str(tmp_path / "out_cli"), "--no-progress"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 3, result.stderr[-3000:]   # the broken PNG failed, the others were predicted
    assert "5 input(s) predicted, 1 failed" in result.stdout
    table = pd.read_csv(tmp_path / "out_cli" / "predictions.csv", keep_default_na=False)
    assert table.status.tolist().count("ok") == 5

    configs = [str(elsewhere / "configs" / f) for f in ("common.yaml", "deploy.yaml", "inference.yaml")]
    cmd = [sys.executable, "-m", "monai.bundle", "run", "inferring", "--bundle_root", str(elsewhere),
           "--config_file", json.dumps(configs), "--input_dir", str(mixed_folder["root"] / "a_blob.png"),
           "--output_dir", str(tmp_path / "out_monai"), "--progress", "false", "--overlays", "false"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "out_monai" / "predictions.csv", keep_default_na=False)
    assert table.status.tolist() == ["ok"]
    cli_mask = np.asarray(Image.open(tmp_path / "out_cli" / "masks" / "a_blob_mask.png"))
    monai_mask = np.asarray(Image.open(tmp_path / "out_monai" / "masks" / "a_blob_mask.png"))
    np.testing.assert_array_equal(cli_mask, monai_mask)


def run_standard_workflow(bundle: Path, inputs: Path, out: Path,
                          files: tuple[str, ...] = ("common.yaml", "deploy.yaml", "inference.yaml")) -> None:
    """An exported bundle's declarative ``run`` workflow through MONAI's ``ConfigWorkflow``, after checking that
    nothing MONAI's ``InferProperties`` require is missing."""
    from monai.bundle import ConfigWorkflow

    configs = [str(bundle / "configs" / f) for f in files]
    workflow = ConfigWorkflow(config_file=configs, meta_file=str(bundle / "configs" / "metadata.json"),
                              workflow_type="infer", bundle_root=str(bundle), input_dir=str(inputs),
                              output_dir=str(out))
    workflow.initialize()
    assert not workflow.check_properties()
    workflow.run()
    workflow.finalize()


def test_monai_standard_run_workflow_matches_bmtl_predict(us_exported, tmp_path):
    """The exported bundle's declarative `run` workflow (what MONAI Label / Deploy run) has MONAI's inference
    properties and gives the masks and class probabilities of `bmtl predict` for the same files."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    blob_png(inputs / "wide.png", shape=(40, 70))
    blob_png(inputs / "tall.png", shape=(90, 50), box=(slice(50, 80), slice(5, 30)), rgb=False)
    out = tmp_path / "monai_run"
    run_standard_workflow(us_exported, inputs, out)
    alone = tmp_path / "monai_run_alone"   # the generated one-file config, as MONAI Label / Deploy load it
    run_standard_workflow(us_exported, inputs, alone, files=("inference.json",))
    written = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert written == sorted(p.relative_to(alone) for p in alone.rglob("*") if p.is_file()) and len(written) >= 3
    for path in written:
        assert (alone / path).read_bytes() == (out / path).read_bytes(), path

    ours = predict(us_exported, inputs, tmp_path / "bmtl", runtime="torch", overlays=False, progress=False)
    table = pd.read_csv(ours.csv_path).set_index(pd.read_csv(ours.csv_path)["file"].map(lambda f: Path(f).name))
    probs = pd.read_csv(out / "predictions_cls.csv", header=None, index_col=0)
    assert len(probs) == 2
    for file, row in probs.iterrows():
        name = Path(file).name
        np.testing.assert_allclose(row.to_numpy(dtype=float), [table.loc[name, f"prob_{c}"] for c in US_CLASSES],
                                   atol=1e-4)
        mask = np.asarray(Image.open(out / f"{Path(name).stem}_mask.png"))
        theirs = np.asarray(Image.open(tmp_path / "bmtl" / "masks" / f"{Path(name).stem}_mask.png"))
        assert mask.shape == theirs.shape == Image.open(inputs / name).size[::-1]   # the image's own (H, W)
        assert set(np.unique(mask)) <= {0, 255} and (mask != theirs).mean() < 0.002


def test_mri_standard_run_workflow_matches_bmtl_predict_on_prepared_slices(mr_exported, tmp_path):
    """The MRI bundle's declarative `run` workflow takes 2D NIfTI slices (as `bmtl prepare` writes them) and gives
    the masks (NIfTI, the slice's size and affine) and class probabilities of `bmtl predict`; a 3D volume beside them
    is left to `bmtl predict`."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    affine = np.diag([0.7, 0.9, 3.0, 1.0])
    affine[:3, 3] = [-20.0, 15.0, 42.0]
    for name, shape in (("case_s004", (40, 56)), ("case_s007", (48, 36))):
        image = rng.uniform(0.0, 0.3, size=shape).astype(np.float32)   # already normalised to [0, 1]
        image[8:20, 10:24] = 0.9
        nib.save(nib.Nifti1Image(image, affine), str(inputs / f"{name}.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 4), np.float32), affine), str(inputs / "volume.nii.gz"))
    out = tmp_path / "monai_run"
    run_standard_workflow(mr_exported, inputs, out)

    ours = predict(mr_exported, inputs, tmp_path / "bmtl", runtime="torch", overlays=False, progress=False)
    table = pd.read_csv(ours.csv_path).set_index("file")
    probs = pd.read_csv(out / "predictions_cls.csv", header=None, index_col=0)
    assert sorted(Path(f).name for f in probs.index) == ["case_s004.nii.gz", "case_s007.nii.gz"]   # not the volume
    for file, row in probs.iterrows():
        name = Path(file).name
        np.testing.assert_allclose(row.to_numpy(dtype=float), [table.loc[name, f"prob_{c}"] for c in
                                                               ("benign", "malignant")], atol=1e-4)
        stem = name[: -len(".nii.gz")]
        mask = nib.load(str(out / f"{stem}_mask.nii.gz"))
        theirs = nib.load(str(tmp_path / "bmtl" / "masks" / f"{stem}_mask.nii.gz"))
        assert mask.shape == theirs.shape == nib.load(str(inputs / name)).shape   # the slice's own (H, W)
        np.testing.assert_allclose(mask.affine, affine)
        a, b = np.asarray(mask.dataobj), np.asarray(theirs.dataobj)
        assert set(np.unique(a)) <= {0, 1} and (a != b).mean() < 0.002


@pytest.mark.parametrize("kind", ["palette", "cmyk_jpeg", "lab_tiff", "uint16", "exif_rotated", "rgb_jpeg"])
def test_prepare_then_training_preprocessing_gives_predicts_network_input(us_exported, tmp_path, kind):
    """A file means the same thing everywhere: `bmtl prepare` (folder source) + the bundle's training
    preprocessing of the prepared PNG give the network input that `bmtl predict` builds from the original file."""
    from PIL import ImageCms

    from pipeline.data.prepare import prepare
    from pipeline.deploy import bundle_parser
    from pipeline.inference.discovery import InputItem
    from pipeline.inference.loaders import load_raster

    y, x = np.mgrid[0:48, 0:72]
    grey = (30 + 2 * x + 1.5 * y).astype(np.uint8)
    grey[10:30, 40:60] = 220
    rgb = np.stack([grey] * 3, -1)
    mask = np.zeros_like(grey)
    mask[10:30, 40:60] = 255
    folder = tmp_path / "raw" / "malignant"
    folder.mkdir(parents=True)
    name = {"cmyk_jpeg": "case.jpg", "rgb_jpeg": "case.jpg", "lab_tiff": "case.tif"}.get(kind, "case.png")
    path = folder / name
    if kind == "palette":
        Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(path)
    elif kind == "cmyk_jpeg":
        Image.fromarray(rgb).convert("CMYK").save(path, quality=95)
    elif kind == "lab_tiff":
        to_lab = ImageCms.buildTransformFromOpenProfiles(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"),
                                                         "RGB", "LAB")
        ImageCms.applyTransform(Image.fromarray(rgb), to_lab).save(path)
    elif kind == "uint16":
        Image.fromarray(grey.astype(np.uint16) * 250).save(path)
    elif kind == "exif_rotated":   # stored sideways, displayed upright: the mask is drawn on the displayed image
        exif = Image.Exif()
        exif[0x0112] = 6   # "rotate 90 CW to display"
        Image.fromarray(np.ascontiguousarray(np.rot90(grey, 1))).save(path, exif=exif)
    else:
        Image.fromarray(rgb).save(path, quality=90)
    Image.fromarray(mask).save(folder / f"{Path(name).stem}_mask.png")
    (tmp_path / "raw" / "benign").mkdir()   # a second case: prepare splits into at least two folds
    other = np.random.default_rng(0).integers(0, 255, grey.shape).astype(np.uint8)   # not a duplicate of the case
    Image.fromarray(other).save(tmp_path / "raw" / "benign" / "other.png")
    Image.fromarray(mask).save(tmp_path / "raw" / "benign" / "other_mask.png")
    _, paths = prepare("folder", tmp_path / "raw", tmp_path / "prepared", n_folds=2, seed=0)
    datalist = json.loads(paths["datalist"].read_text())
    (item,) = [i for i in datalist["training"] if datalist["classes"][i["cls"]] == "malignant"]
    root = paths["datalist"].parent

    parser = bundle_parser(us_exported, ("common.yaml", "deploy.yaml"))
    training = {"image": str(root / item["image"]), "label": str(root / item["label"])}
    for t in parser.get_parsed_content("preprocessing_transforms"):
        training = t(training)
    predictor = Predictor(us_exported, progress=False)
    case = load_raster(InputItem(path, "raster", "case"))
    served, _ = predictor.preprocess(case.slices[0])
    np.testing.assert_array_equal(np.asarray(served), np.asarray(torch.as_tensor(training["image"])))
    # and the mask sits on the lesion of what the network sees (EXIF applied to image and mask alike)
    assert float(torch.as_tensor(training["image"])[torch.as_tensor(training["label"]) > 0].mean()) > 0.6


@pytest.mark.parametrize("fmt", ["nifti", "nrrd", "dicom"])
def test_prepare_then_training_preprocessing_gives_predicts_network_input_for_volumes(mr_exported, tmp_path, fmt):
    """A volume means the same thing everywhere: the slice `bmtl prepare` writes (NIfTI layout, or DICOM series),
    through the MRI bundle's training preprocessing, is the network input `bmtl predict` builds from the same slice
    of the original volume (MetaImage reads as the same NIfTI: tests/unit/data/test_volumes.py)."""
    import nibabel as nib

    from pipeline.data.prepare import prepare
    from pipeline.data.synthetic import make_mr_dataset
    from pipeline.deploy import bundle_parser
    from tests.unit.data.test_volumes import dicom_case, save_nrrd, write_classes

    raw = make_mr_dataset(tmp_path / "raw", n=2, seed=0, shape=(48, 40, 8))
    if fmt == "nrrd":
        for path in sorted(raw.glob("*/*.nii.gz")):
            volume = nib.load(path)
            save_nrrd(path.with_name(path.name.replace(".nii.gz", ".nrrd")), np.asarray(volume.dataobj), volume.affine)
            path.unlink()
    if fmt == "dicom":   # series folders (files in no particular name order) with NIfTI labels
        raw = tmp_path / "raw_dicom"
        for seed, case in enumerate(("case_000", "case_001")):
            dicom_case(raw, case, seed=seed)
        write_classes(raw, [("case_000", "malignant"), ("case_001", "benign")])
    _, paths = prepare("dicom" if fmt == "dicom" else "nifti", raw, tmp_path / "prepared", n_folds=2, seed=0,
                       negative_slices=1)
    datalist, root = json.loads(paths["datalist"].read_text()), paths["datalist"].parent
    parser = bundle_parser(mr_exported, ("common.yaml", "deploy.yaml"))
    transforms = parser.get_parsed_content("preprocessing_transforms")
    predictor = Predictor(mr_exported, progress=False)
    items = [i for i in datalist["training"] if i["group"] == "case_000"]
    assert len(items) >= 2 and {Path(i["original"]).suffix for i in items} == {{"nifti": ".gz", "nrrd": ".nrrd",
                                                                                "dicom": ""}[fmt]}
    case = predictor._load(discover_inputs(Path(items[0]["original"]))[0])   # as predict reads it (normalised)
    for item in items:   # lesion and lesion-free slices
        training = {"image": str(root / item["image"]), "label": str(root / item["label"])}
        for t in transforms:
            training = t(training)
        served, _ = predictor.preprocess(case.slices[item["slice"]])
        np.testing.assert_allclose(np.asarray(served), np.asarray(torch.as_tensor(training["image"])), atol=1e-5)
