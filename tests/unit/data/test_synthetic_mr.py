"""Synthetic breast MRI generator and DICOM series writer."""

from __future__ import annotations

import csv
import time

import nibabel as nib
import numpy as np
import pytest

from pipeline.data.datalist import SkipLog
from pipeline.data.dicom_series import read_dicom_series
from pipeline.data.sources.volumes import convert_dicom
from pipeline.data.synthetic import make_mr_dataset as reexported
from pipeline.data.dicom import LPS_TO_RAS
from pipeline.data.synthetic_dicom import write_dicom_series
from pipeline.data.synthetic_mr import make_mr_case, make_mr_dataset

SMALL = (32, 32, 8)


def read_case(root, case):
    img = nib.load(str(root / "images" / f"{case}.nii.gz"))
    lbl = nib.load(str(root / "labels" / f"{case}.nii.gz"))
    return img, lbl


def read_classes(root):
    with open(root / "classes.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_layout_classes_and_geometry(tmp_path):
    assert reexported is make_mr_dataset
    out = make_mr_dataset(tmp_path / "mr", n=4, seed=0, shape=SMALL)
    assert out == tmp_path / "mr"
    rows = read_classes(out)
    assert [r["case"] for r in rows] == [f"case_{i:03d}" for i in range(4)]
    assert sorted(r["class"] for r in rows) == ["benign", "benign", "malignant", "malignant"]
    for r in rows:
        img, lbl = read_case(out, r["case"])
        assert img.shape == lbl.shape == SMALL
        assert img.get_data_dtype() == np.int16 and lbl.get_data_dtype() == np.uint8
        np.testing.assert_allclose(img.header.get_zooms(), (0.7, 0.7, 2.0), rtol=1e-6)
        np.testing.assert_allclose(img.affine, lbl.affine)
        direction = img.affine[:3, :3] / np.array([0.7, 0.7, 2.0])
        assert not np.allclose(direction, np.diag(np.diag(direction)), atol=1e-3)  # rotated: not diagonal
        assert np.linalg.det(direction) < 0  # first axis stored reversed
        mask = np.asarray(lbl.dataobj)
        assert set(np.unique(mask)) == {0, 1}
        assert not mask[:, :, 0].any() and not mask[:, :, -1].any()  # lesion-free slices always exist


def test_deterministic_for_a_seed(tmp_path):
    a = make_mr_dataset(tmp_path / "a", n=3, seed=7, shape=SMALL)
    b = make_mr_dataset(tmp_path / "b", n=3, seed=7, shape=SMALL)
    c = make_mr_dataset(tmp_path / "c", n=3, seed=8, shape=SMALL)
    assert read_classes(a) == read_classes(b)
    for r in read_classes(a):
        (ia, la), (ib, lb), (ic, _) = (read_case(root, r["case"]) for root in (a, b, c))
        np.testing.assert_array_equal(np.asarray(ia.dataobj), np.asarray(ib.dataobj))
        np.testing.assert_array_equal(np.asarray(la.dataobj), np.asarray(lb.dataobj))
        np.testing.assert_array_equal(ia.affine, ib.affine)
        assert not np.array_equal(np.asarray(ia.dataobj), np.asarray(ic.dataobj))


def test_looks_like_fat_suppressed_post_contrast():
    rng = np.random.default_rng(0)
    for cls in ("benign", "malignant"):
        image, mask, _ = make_mr_case(rng, cls, SMALL)
        lesion = image[mask > 0].astype(float)
        tissue = image[(mask == 0) & (image > np.percentile(image, 60))].astype(float)
        air = np.sort(image.ravel())[: image.size // 10].astype(float)
        assert np.median(lesion) > 1.5 * np.median(tissue)  # enhancing lesion is bright
        assert np.median(air) < 0.2 * np.median(tissue)  # dark background around the breast
    with pytest.raises(ValueError, match="cls"):
        make_mr_case(rng, "normal")


def surface_to_volume(mask: np.ndarray, spacing) -> float:
    """Lesion surface-to-volume ratio made size-free: ``S / V**(2/3)`` (a sphere scores about 4.8 with exact
    surfaces; exposed voxel faces overestimate S alike for both classes). The plain ``S / V`` also falls with size, and
    the classes' sizes overlap but differ, so the plain ratio would compare sizes as much as shapes."""
    m = np.pad(mask > 0, 1)
    sx, sy, sz = spacing
    faces = {0: sy * sz, 1: sx * sz, 2: sx * sy}
    area = sum(np.count_nonzero(np.diff(m.astype(np.int8), axis=a)) * faces[a] for a in range(3))
    volume = m.sum() * sx * sy * sz
    return area / volume ** (2 / 3)


def solidity(mask: np.ndarray) -> float:
    from skimage.measure import regionprops

    return float(regionprops((mask > 0).astype(np.uint8))[0].solidity)


def test_classes_differ_in_shape_but_overlap_in_size(tmp_path):
    start = time.perf_counter()
    out = make_mr_dataset(tmp_path / "mr", n=12, seed=0)  # the default size, 64 x 64 x 16
    elapsed = time.perf_counter() - start
    assert elapsed < 15, f"make_mr_dataset(n=12) took {elapsed:.1f} s"  # about 1 s on an idle core
    stats = {"benign": [], "malignant": []}
    for r in read_classes(out):
        img, lbl = read_case(out, r["case"])
        mask = np.asarray(lbl.dataobj)
        stats[r["class"]].append((surface_to_volume(mask, img.header.get_zooms()), solidity(mask),
                                  mask.sum() * np.prod(img.header.get_zooms())))
    benign, malignant = np.array(stats["benign"]), np.array(stats["malignant"])
    assert len(benign) == len(malignant) == 6
    assert malignant[:, 0].mean() > 1.2 * benign[:, 0].mean()  # irregular margins: more surface per volume
    assert malignant[:, 1].mean() < benign[:, 1].mean() - 0.1  # spicules and lobes: less convex
    # not trivial: lesion volumes overlap between the classes
    assert malignant[:, 2].min() < benign[:, 2].max() and benign[:, 2].min() < malignant[:, 2].max()


def test_dicom_dataset_layout_converts(tmp_path):
    out = make_mr_dataset(tmp_path / "mr", n=2, seed=1, shape=SMALL, fmt="dicom")
    for r in read_classes(out):
        folder = out / "images" / r["case"]
        assert folder.is_dir() and len(list(folder.glob("*.dcm"))) == SMALL[2]
        assert (out / "labels" / f"{r['case']}.nii.gz").is_file()
    log = SkipLog()
    prepared = convert_dicom(out, tmp_path / "prepared", log)
    assert not log.rows and {item["group"] for item in prepared.items} == {"case_000", "case_001"}

    nii = make_mr_dataset(tmp_path / "nii", n=2, seed=1, shape=SMALL)
    for r in read_classes(nii):  # same volume and geometry in both formats
        img, _ = read_case(nii, r["case"])
        vol = read_dicom_series(out / "images" / r["case"])
        np.testing.assert_array_equal(vol.data, np.asarray(img.dataobj))
        np.testing.assert_allclose(vol.affine, img.affine, atol=1e-6)
    with pytest.raises(ValueError, match="fmt"):
        make_mr_dataset(tmp_path / "x", n=1, fmt="png")


# ------------------------------------------------------------------------------------------------ write_dicom_series
def test_write_dicom_series_tags_and_geometry(tmp_path):
    import pydicom

    rng = np.random.default_rng(0)
    _, _, affine = make_mr_case(rng, "benign", SMALL)
    volume = rng.integers(0, 3000, SMALL).astype(np.int16)
    folder = write_dicom_series(volume, tmp_path / "s", affine=affine, series_description="Ax T1", PatientID="P7")
    files = sorted(folder.iterdir())
    assert len(files) == SMALL[2]
    lps = LPS_TO_RAS @ affine
    uids = set()
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.4" == ds.SOPClassUID
        assert ds.Modality == "MR" and ds.SeriesDescription == "Ax T1" and ds.PatientID == "P7"
        assert (ds.Rows, ds.Columns) == (SMALL[1], SMALL[0]) and ds.InstanceNumber == k + 1
        assert ds.BitsAllocated == 16 and ds.PixelRepresentation == 0 and ds.pixel_array.dtype == np.uint16
        assert "RescaleSlope" not in ds  # integers in 0..65535 are stored as they are
        np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [0.7, 0.7], rtol=1e-6)
        np.testing.assert_allclose(float(ds.SliceThickness), 2.0, rtol=1e-6)
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], (lps @ [0, 0, k, 1])[:3], atol=1e-5)
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        np.testing.assert_allclose(iop, np.r_[lps[:3, 0] / 0.7, lps[:3, 1] / 0.7], atol=1e-6)
        np.testing.assert_array_equal(ds.pixel_array, volume[:, :, k].T)  # rows run along j, columns along i
        uids.add((ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID))
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    assert len(uids) == 1


def test_write_dicom_series_rescales_floats_and_negative_integers(tmp_path):
    import pydicom

    rng = np.random.default_rng(1)
    floats = rng.normal(0.0, 1.0, (8, 6, 3))
    vol = read_dicom_series(write_dicom_series(floats, tmp_path / "f", spacing=(1.0, 2.0, 3.0)))
    step = (floats.max() - floats.min()) / 65535
    np.testing.assert_allclose(vol.data, floats, atol=step)  # 16-bit quantisation
    np.testing.assert_allclose(vol.affine, np.diag([1.0, 2.0, 3.0, 1.0]), atol=1e-6)  # affine=None: diag(spacing)
    ds = pydicom.dcmread(sorted((tmp_path / "f").iterdir())[0])
    assert float(ds.RescaleSlope) > 0 and len(str(ds.RescaleSlope)) <= 16

    ints = rng.integers(-1000, 2000, (8, 6, 3)).astype(np.int16)
    vol = read_dicom_series(write_dicom_series(ints, tmp_path / "i"))
    np.testing.assert_array_equal(vol.data, ints)


def test_write_dicom_series_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="3D"):
        write_dicom_series(np.zeros((4, 4)), tmp_path / "a")
    with pytest.raises(ValueError, match="NaN"):
        write_dicom_series(np.full((4, 4, 2), np.nan), tmp_path / "b")
    with pytest.raises(ValueError, match="unknown DICOM keyword"):
        write_dicom_series(np.zeros((4, 4, 2)), tmp_path / "c", NotAKeyword=1)
    sheared = np.eye(4)
    sheared[0, 1] = 0.5
    with pytest.raises(ValueError, match="orthogonal"):
        write_dicom_series(np.zeros((4, 4, 2)), tmp_path / "d", affine=sheared)
