"""NIfTI / DICOM volume converters: slicing, geometry, normalisation, DICOM round trip, bad inputs, prepare."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipeline.data.datalist import SkipLog, load_datalist
from pipeline.data.dicom_series import read_dicom_series
from pipeline.data.io import DataError
from pipeline.data.prepare import prepare
from pipeline.data.sources.volumes import choose_negative_slices, convert_dicom, convert_nifti
from pipeline.data.volume import Volume, slice_affine, to_canonical
from pipeline.data.splits import check_splits
from pipeline.data.synthetic_dicom import write_dicom_series
from pipeline.data.synthetic_mr import make_mr_dataset

SHAPE = (32, 32, 8)
SPACING = (0.7, 0.7, 2.0)
LESION = (slice(10, 16), slice(12, 18), slice(3, 6))  # lesion on slices 3, 4, 5 of 8


def scanner_affine(spacing=SPACING, degrees=10.0, origin=(12.0, -30.0, 40.0)) -> np.ndarray:
    """First axis reversed (radiological storage) and rotated about the feet-head axis: a non-trivial geometry."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([-1.0, 1.0, 1.0]) * np.asarray(spacing)[None, :]
    affine[:3, 3] = origin
    return affine


AFFINE = scanner_affine()


def make_volume(seed: int = 0, shape=SHAPE, lesion=LESION) -> tuple[np.ndarray, np.ndarray]:
    """Integer-valued image (so a DICOM copy is exact) with a bright box lesion, and its 0/1 label."""
    rng = np.random.default_rng(seed)
    image = np.round(100 + 30 * rng.standard_normal(shape)).astype(np.int16)
    label = np.zeros(shape, dtype=np.uint8)
    label[lesion] = 1
    image[lesion] += 400
    return image, label


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def write_classes(root: Path, rows, header=("case", "class")) -> Path:
    path = root / "classes.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def nifti_case(root: Path, case: str, cls: str = "malignant", seed: int = 0, label_name: str | None = None,
               image=None, label=None, affine=AFFINE) -> None:
    img, lbl = make_volume(seed)
    save_nifti(root / "images" / f"{case}.nii.gz", img if image is None else image, affine)
    save_nifti(root / "labels" / f"{label_name or case}.nii.gz", lbl if label is None else label, affine)


def load(out: Path, rel: str) -> nib.Nifti1Image:
    return nib.load(str(out / rel))


def normalised(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image.astype(np.float32), [1, 99])
    return np.clip((image.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo), 0, 1)


def problems(log: SkipLog) -> str:
    return "\n".join(f"{r['path']}: {r['problem']}" for r in log.rows)


# ----------------------------------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slices_keep_world_geometry(tmp_path, axis):
    src, out = tmp_path / "in", tmp_path / "out"
    nifti_case(src, "c1")
    write_classes(src, [("c1", "malignant")])
    image, label = make_volume(0)
    prepared = convert_nifti(src, out, SkipLog(), axis=axis, negative_slices=1)
    assert prepared.items and all(item["axis"] == axis for item in prepared.items)

    expected = normalised(image)
    lesion_vox = np.argwhere(label > 0)
    world = (AFFINE @ np.c_[lesion_vox, np.ones(len(lesion_vox))].T).T  # every lesion voxel, world mm
    hits = np.zeros(len(lesion_vox), dtype=bool)
    spacing = np.asarray(SPACING)
    for item in prepared.items:
        img, msk = load(out, item["image"]), load(out, item["label"])
        np.testing.assert_allclose(img.affine, msk.affine)
        # the slice's in-plane spacing is the volume's along the two other axes (canonical axes: no permutation here)
        np.testing.assert_allclose(img.header.get_zooms(), np.delete(spacing, axis), rtol=1e-5)
        uvw = (np.linalg.inv(img.affine) @ world.T).T[:, :3]
        on_slice = np.abs(uvw[:, 2]) < 1e-4
        if not on_slice.any():
            continue
        uv = uvw[on_slice, :2]
        np.testing.assert_allclose(uv, np.round(uv), atol=1e-4)  # lands on pixel centres
        u, v = np.round(uv).astype(int).T
        data, mask = img.get_fdata(dtype=np.float32), np.asarray(msk.dataobj)
        assert mask[u, v].all()
        vox = lesion_vox[on_slice]
        np.testing.assert_allclose(data[u, v], expected[tuple(vox.T)], atol=1e-6)
        hits |= on_slice
    assert hits.all(), "every lesion voxel is on some extracted slice at its world position"


def test_reoriented_volume_keeps_world_coordinates():
    image, _ = make_volume(0)
    vol = Volume(image, AFFINE, Path("x"))
    canon = to_canonical(vol)
    assert canon.data.shape == image.shape
    np.testing.assert_array_equal(canon.data[::-1], image)  # first axis was stored right-to-left
    ijk = np.array([3, 7, 5, 1.0])
    flipped = np.array([SHAPE[0] - 1 - 3, 7, 5, 1.0])
    np.testing.assert_allclose(AFFINE @ ijk, canon.affine @ flipped)
    assert canon.affine[0, 0] > 0 and canon.affine[1, 1] > 0 and canon.affine[2, 2] > 0


def test_slice_affine_maps_pixels_to_volume_voxels():
    for axis in range(3):
        a2 = slice_affine(AFFINE, axis, 5)
        in_plane = [a for a in range(3) if a != axis]
        voxel = np.zeros(4)
        voxel[in_plane], voxel[axis], voxel[3] = (2, 3), 5, 1
        np.testing.assert_allclose(a2 @ np.array([2, 3, 0, 1.0]), AFFINE @ voxel)


@pytest.mark.filterwarnings("ignore:.*nvImageCodec.*:UserWarning")
def test_prepared_slice_reads_with_monai_geometry(tmp_path):
    from monai.transforms import LoadImage

    src, out = tmp_path / "in", tmp_path / "out"
    nifti_case(src, "c1")
    write_classes(src, [("c1", "benign")])
    item = convert_nifti(src, out, SkipLog()).items[0]
    loaded = LoadImage(image_only=True)(str(out / item["image"]))
    assert tuple(loaded.shape) == SHAPE[:2]
    np.testing.assert_allclose(np.asarray(loaded.affine), load(out, item["image"]).affine, atol=1e-6)


# --------------------------------------------------------------------------------------------- slices and items
@pytest.mark.parametrize("n_neg, expected", [(0, 0), (2, 2), (3, 3), (5, 5), (9, 5)])
def test_every_lesion_slice_plus_n_negatives(tmp_path, n_neg, expected):
    src, out = tmp_path / "in", tmp_path / "out"
    nifti_case(src, "c1")
    write_classes(src, [("c1", "malignant")])
    items = convert_nifti(src, out, SkipLog(), negative_slices=n_neg).items
    slices = [item["slice"] for item in items]
    lesion = [k for k in slices if np.asarray(load(out, f"masks/c1_s{k:03d}.nii.gz").dataobj).any()]
    assert lesion == [3, 4, 5]
    negatives = sorted(set(slices) - set(lesion))
    assert len(negatives) == expected  # 5 lesion-free slices exist: asking for more gives 5
    assert all(item["cls"] == 1 for item in items)  # lesion-free slices carry the volume's class
    if n_neg == 2:
        assert all(abs(k - 4) >= 3 for k in negatives)  # two or more slices away from the lesion (3..5)
        assert negatives[0] in (0, 1) and negatives[1] == 7  # spread: one below and one above
    for item in items:
        assert item["id"] == f"c1_s{item['slice']:03d}"
        assert item["image"] == f"images/c1_s{item['slice']:03d}.nii.gz"
        assert item["label"] == f"masks/c1_s{item['slice']:03d}.nii.gz"
        assert item["source"] == "nifti" and item["group"] == "c1"
        assert item["original"] == str(src / "images" / "c1.nii.gz")


def test_negative_choice_is_reproducible_and_seeded(tmp_path):
    picks = {}
    image, label = make_volume(0, shape=(32, 32, 30), lesion=(slice(10, 16), slice(10, 16), slice(14, 17)))
    for run, seed in (("a", 0), ("b", 0), ("c", 1), ("d", 2), ("e", 3)):
        src, out = tmp_path / run / "in", tmp_path / run / "out"
        nifti_case(src, "c1", image=image, label=label)
        write_classes(src, [("c1", "benign")])
        items = convert_nifti(src, out, SkipLog(), negative_slices=3, seed=seed).items
        picks[run] = tuple(item["slice"] for item in items if item["slice"] not in (14, 15, 16))
    assert picks["a"] == picks["b"]
    assert len({picks[r] for r in "acde"}) > 1
    assert all(len(p) == 3 and all(k <= 12 or k >= 18 for k in p) for p in picks.values())


def test_choose_negative_slices_edge_cases():
    rng = np.random.default_rng(0)
    assert choose_negative_slices(10, [4], 0, rng) == []
    assert choose_negative_slices(3, [0, 1, 2], 2, rng) == []
    assert choose_negative_slices(6, [2, 3], 4, rng) == [0, 1, 4, 5]  # near slices fill in when far ones run out
    assert choose_negative_slices(10, [], 2, rng, usable=[False] * 9 + [True]) == [9]
    picks = choose_negative_slices(20, [], 4, rng)  # normal volume: spread over the whole volume
    assert len(picks) == 4 and picks[0] < 5 and picks[-1] >= 15


def test_normalisation_and_dtypes(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    nifti_case(src, "c1")
    write_classes(src, [("c1", "malignant")])
    items = convert_nifti(src, out, SkipLog(), negative_slices=5).items
    values = []
    for item in items:
        img, msk = load(out, item["image"]), load(out, item["label"])
        assert img.get_data_dtype() == np.float32 and msk.get_data_dtype() == np.uint8
        data = np.asarray(img.dataobj)
        assert data.min() >= 0.0 and data.max() <= 1.0
        assert set(np.unique(np.asarray(msk.dataobj))) <= {0, 1}
        values.append(data)
    values = np.concatenate([v.ravel() for v in values])
    assert values.min() == 0.0 and values.max() == 1.0  # 1st/99th percentiles of the volume -> clipped 0 and 1


def test_groups_are_cases_or_patients(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    for i, case in enumerate(["a1", "a2", "b1"]):
        nifti_case(src, case, seed=i)
    write_classes(src, [("a1", "benign"), ("a2", "malignant"), ("b1", "benign")])
    items = convert_nifti(src, out, SkipLog()).items
    assert {item["group"] for item in items} == {"a1", "a2", "b1"}
    assert all(item["id"].startswith(item["group"] + "_s") for item in items)

    write_classes(src, [("a1", "benign", "P1"), ("a2", "malignant", "P1"), ("b1", "benign", "")],
                  header=("case", "class", "patient"))
    items = convert_nifti(src, tmp_path / "out2", SkipLog()).items
    assert {item["group"] for item in items} == {"P1", "b1"}


def test_label_suffixes_and_normal_class(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    nifti_case(src, "c1", label_name="c1_seg")
    nifti_case(src, "c2", seed=1, label_name="c2_label")
    image, _ = make_volume(2)
    save_nifti(src / "images" / "c3.nii", image)  # normal, no label file at all
    write_classes(src, [("c1", "Benign"), ("c2", " MALIGNANT "), ("c3", "normal")])
    log = SkipLog()
    prepared = convert_nifti(src, out, log, negative_slices=2)
    assert not log.rows, problems(log)
    assert prepared.classes == ["normal", "benign", "malignant"]
    by_case = {}
    for item in prepared.items:
        by_case.setdefault(item["group"], []).append(item)
    assert {i["cls"] for i in by_case["c1"]} == {1} and {i["cls"] for i in by_case["c2"]} == {2}
    assert len(by_case["c3"]) == 2 and {i["cls"] for i in by_case["c3"]} == {0}
    assert not any(np.asarray(load(out, i["label"]).dataobj).any() for i in by_case["c3"])


def test_label_zero_and_255_is_accepted(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _, label = make_volume(0)
    nifti_case(src, "c1", label=(label * 255).astype(np.uint8))
    write_classes(src, [("c1", "benign")])
    items = convert_nifti(src, out, SkipLog()).items
    masks = [np.asarray(load(out, i["label"]).dataobj) for i in items]
    assert sum(int(m.sum()) for m in masks) == int(label.sum())


# -------------------------------------------------------------------------------------------------------- DICOM
def dicom_case(root: Path, case: str, seed: int = 0, label_as_dicom: bool = False, shuffle_names: bool = True):
    image, label = make_volume(seed)
    folder = write_dicom_series(image, root / "images" / case, affine=AFFINE, PatientID=case)
    if shuffle_names:  # any file names: the reader must sort by geometry, not by name
        files = sorted(folder.iterdir())
        order = np.random.default_rng(seed).permutation(len(files))
        for f, k in zip(files, order):
            f.rename(folder / f"tmp_{k}")
        for f in sorted(folder.iterdir()):
            f.rename(folder / f"x{f.name[4:]}")
    if label_as_dicom:
        write_dicom_series(label, root / "labels" / case, affine=AFFINE, PatientID=case,
                           series_description="lesion mask")
    else:
        save_nifti(root / "labels" / f"{case}.nii.gz", label)


def test_dicom_round_trip_matches_nifti(tmp_path):
    nii, dcm = tmp_path / "nii", tmp_path / "dcm"
    for i, case in enumerate(["c1", "c2"]):
        nifti_case(nii, case, seed=i)
        dicom_case(dcm, case, seed=i, label_as_dicom=case == "c2")
    for root in (nii, dcm):
        write_classes(root, [("c1", "benign"), ("c2", "malignant")])
    log_n, log_d = SkipLog(), SkipLog()
    from_nii = convert_nifti(nii, tmp_path / "out_nii", log_n).items
    from_dcm = convert_dicom(dcm, tmp_path / "out_dcm", log_d).items
    assert not log_n.rows and not log_d.rows, problems(log_d)
    assert [(i["id"], i["slice"], i["cls"]) for i in from_nii] == [(i["id"], i["slice"], i["cls"]) for i in from_dcm]
    assert {i["source"] for i in from_dcm} == {"dicom"}
    assert from_dcm[0]["original"] == str(dcm / "images" / "c1")
    for a, b in zip(from_nii, from_dcm):
        for key in ("image", "label"):
            x, y = load(tmp_path / "out_nii", a[key]), load(tmp_path / "out_dcm", b[key])
            np.testing.assert_allclose(x.affine, y.affine, atol=1e-5)
            np.testing.assert_allclose(x.get_fdata(), y.get_fdata(), atol=1e-6)


@pytest.mark.filterwarnings("ignore:.*nvImageCodec.*:UserWarning")
def test_read_dicom_series_geometry_matches_writer_and_monai(tmp_path):
    from monai.transforms import LoadImage

    image, _ = make_volume(3)
    folder = write_dicom_series(image, tmp_path / "s", affine=AFFINE)
    vol = read_dicom_series(folder)
    np.testing.assert_allclose(vol.affine, AFFINE, atol=1e-6)
    np.testing.assert_array_equal(vol.data, image)
    assert vol.meta["sorted_by"] == "position" and vol.meta["n_files"] == SHAPE[2]
    monai_vol = LoadImage(reader="PydicomReader", image_only=True)(str(folder))  # an independent reader
    np.testing.assert_allclose(np.asarray(monai_vol.affine), AFFINE, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(monai_vol), image)


def test_dicom_falls_back_to_instance_number(tmp_path):
    import pydicom

    image, _ = make_volume(4)
    folder = write_dicom_series(image, tmp_path / "s", affine=AFFINE)
    for k, f in enumerate(sorted(folder.iterdir())):
        ds = pydicom.dcmread(f)
        del ds.ImagePositionPatient
        ds.save_as(folder / f"z{SHAPE[2] - k}.dcm")  # names now run against the slice order
        f.unlink()
    vol = read_dicom_series(folder)
    assert vol.meta["sorted_by"] == "InstanceNumber"
    np.testing.assert_array_equal(vol.data, image)
    np.testing.assert_allclose(vol.spacing, SPACING, atol=1e-6)


# --------------------------------------------------------------------------------------------------- bad inputs
def test_bad_nifti_inputs_are_skipped_with_reasons(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    rows = []

    def case(name, cls="malignant", **kw):
        nifti_case(src, name, cls=cls, **kw)
        rows.append((name, cls))

    case("good")
    (src / "images" / "corrupt.nii.gz").write_bytes(b"this is not a NIfTI file")
    save_nifti(src / "labels" / "corrupt.nii.gz", make_volume()[1])
    rows.append(("corrupt", "benign"))
    good_bytes = (src / "images" / "good.nii.gz").read_bytes()
    (src / "images" / "truncated.nii.gz").write_bytes(good_bytes[: len(good_bytes) // 2])
    save_nifti(src / "labels" / "truncated.nii.gz", make_volume()[1])
    rows.append(("truncated", "benign"))
    save_nifti(src / "images" / "nolabel.nii.gz", make_volume()[0])
    rows.append(("nolabel", "benign"))
    save_nifti(src / "labels" / "orphan.nii.gz", make_volume()[1])
    case("shape", label=np.zeros((32, 30, 8), np.uint8))
    case("four_d", image=np.stack([make_volume()[0]] * 3, axis=-1))
    nan_image = make_volume()[0].astype(np.float32)
    nan_image[0, 0, 0], nan_image[1, 0, 0] = np.nan, np.inf
    case("nan", image=nan_image)
    three = make_volume()[1]
    three[0, 0, 0] = 2
    case("multilabel", label=three)
    case("empty_label", label=np.zeros(SHAPE, np.uint8))
    case("moved", label=None)
    save_nifti(src / "labels" / "moved.nii.gz", make_volume()[1], scanner_affine(origin=(20.0, -30.0, 40.0)))
    case("unlisted")
    rows.remove(("unlisted", "malignant"))
    case("weird", cls="suspicious")
    write_classes(src, rows)

    log = SkipLog()
    prepared = convert_nifti(src, out, log)
    assert {item["group"] for item in prepared.items} == {"good"}
    by_file = {Path(r["path"]).name: r["problem"] for r in log.rows}
    assert "unreadable NIfTI" in by_file["corrupt.nii.gz"]
    assert "unreadable NIfTI" in by_file["truncated.nii.gz"]
    assert "no label for this benign image" in by_file["nolabel.nii.gz"]
    assert "label without an image" in by_file["orphan.nii.gz"]
    assert "label shape (32, 30, 8) differs from its image's shape (32, 32, 8)" in by_file["shape.nii.gz"]
    assert "4D image" in by_file["four_d.nii.gz"] and "3 volumes" in by_file["four_d.nii.gz"]
    assert "non-finite voxels (1 NaN, 1 inf)" in by_file["nan.nii.gz"]
    assert "label is not binary: it has 3 distinct values (0, 1, 2)" in by_file["multilabel.nii.gz"]
    assert "label is empty" in by_file["empty_label.nii.gz"]
    assert "label geometry differs" in by_file["moved.nii.gz"]
    assert "'unlisted' is not in the classes CSV" in by_file["unlisted.nii.gz"]
    assert "unknown class 'suspicious'" in by_file["weird.nii.gz"]
    assert len(log.rows) == 12
    assert not list((out / "images").glob("nan_*"))  # nothing written for a skipped case


def test_strict_mode_raises(tmp_path):
    src = tmp_path / "in"
    nifti_case(src, "c1")
    three = make_volume()[1]
    three[0, 0, 0] = 7
    save_nifti(src / "labels" / "c1.nii.gz", three)
    write_classes(src, [("c1", "benign")])
    with pytest.raises(DataError, match="not binary"):
        convert_nifti(src, tmp_path / "out", SkipLog(strict=True))
    with pytest.raises(DataError, match="not binary"):
        prepare("nifti", src, tmp_path / "out2", strict=True)


def test_classes_csv_missing_or_without_columns_raises(tmp_path):
    src = tmp_path / "in"
    nifti_case(src, "c1")
    with pytest.raises(DataError, match="classes CSV not found") as info:
        convert_nifti(src, tmp_path / "out", SkipLog())
    assert "classes.csv" in str(info.value)
    bad = write_classes(src, [("c1", "benign")], header=("id", "diagnosis"))
    with pytest.raises(DataError, match=r"missing column\(s\): case.*class") as info:
        convert_nifti(src, tmp_path / "out", SkipLog())
    assert str(bad) in str(info.value)
    other = tmp_path / "labels.csv"
    shutil.copy(write_classes(src, [("c1", "benign")]), other)
    (src / "classes.csv").unlink()
    assert convert_nifti(src, tmp_path / "out", SkipLog(), classes_csv=other).items


def test_empty_input_raises(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="nothing usable"):
        convert_nifti(tmp_path / "empty", tmp_path / "out", SkipLog())
    (tmp_path / "noimg" / "images").mkdir(parents=True)
    (tmp_path / "noimg" / "images" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="nothing usable: no NIfTI volume"):
        convert_nifti(tmp_path / "noimg", tmp_path / "out", SkipLog())
    with pytest.raises(DataError, match="nothing usable: no DICOM series folder"):
        convert_dicom(tmp_path / "noimg", tmp_path / "out", SkipLog())


def test_bad_options_raise(tmp_path):
    with pytest.raises(ValueError, match="axis"):
        convert_nifti(tmp_path, tmp_path / "out", SkipLog(), axis=3)
    with pytest.raises(ValueError, match="negative_slices"):
        convert_nifti(tmp_path, tmp_path / "out", SkipLog(), negative_slices=-1)


def test_bad_dicom_inputs_are_skipped_with_reasons(tmp_path):
    import pydicom

    src = tmp_path / "in"
    names = ["good", "nopixels", "mixed", "twovolumes", "empty"]
    for i, case in enumerate(names):
        dicom_case(src, case, seed=i, shuffle_names=False)
    for f in (src / "images" / "nopixels").iterdir():
        ds = pydicom.dcmread(f)
        del ds.PixelData
        ds.save_as(f)
    f = sorted((src / "images" / "mixed").iterdir())[2]
    ds = pydicom.dcmread(f)
    ds.Rows, ds.Columns = 16, 16
    ds.PixelData = np.zeros((16, 16), np.uint16).tobytes()
    ds.save_as(f)
    for f in sorted((src / "images" / "twovolumes").iterdir())[:3]:  # a second phase at the same positions
        ds = pydicom.dcmread(f)
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(f.with_name(f"phase2_{f.name}"))
    for f in (src / "images" / "empty").iterdir():
        f.unlink()
    (src / "images" / "empty" / "notes.txt").write_text("not DICOM")
    write_classes(src, [(c, "malignant") for c in names])

    log = SkipLog()
    prepared = convert_dicom(src, tmp_path / "out", log)
    assert {item["group"] for item in prepared.items} == {"good"}
    by_case = {Path(r["path"]).name: r["problem"] for r in log.rows}
    assert "DICOM series without pixel data" in by_case["nopixels"]
    assert "mixed slice sizes in the series (columns x rows): 32x32 (7 files), 16x16 (1 file)" in by_case["mixed"]
    assert "share a position" in by_case["twovolumes"]
    assert "no DICOM file in the series folder" in by_case["empty"]
    assert len(log.rows) == 4


# ---------------------------------------------------------------------------------------------------- end to end
def test_prepare_nifti_end_to_end_on_synthetic_data(tmp_path):
    src = make_mr_dataset(tmp_path / "synth", n=10, seed=3, shape=SHAPE)
    prepared, paths = prepare("nifti", src, tmp_path / "out", n_folds=5, seed=1, axis=2, negative_slices=2,
                              classes_csv=src / "classes.csv")
    datalist = load_datalist(paths["datalist"])
    assert datalist["modality"] == "MR" and datalist["classes"] == ["benign", "malignant"]
    items = datalist["training"]
    assert {item["group"] for item in items} == {f"case_{i:03d}" for i in range(10)}
    assert check_splits(datalist)["ok"]
    folds_of = {}
    for item in items:
        folds_of.setdefault(item["group"], set()).add(item["fold"])
        assert (paths["datalist"].parent / item["image"]).is_file()
        assert (paths["datalist"].parent / item["label"]).is_file()
    assert all(len(f) == 1 for f in folds_of.values()) and {next(iter(f)) for f in folds_of.values()} == set(range(5))
    per_case = {g: sum(1 for i in items if i["group"] == g) for g in folds_of}
    with open(src / "classes.csv") as f:
        classes = {r["case"]: r["class"] for r in csv.DictReader(f)}
    for item in items:
        assert datalist["classes"][item["cls"]] == classes[item["group"]]
    assert all(n >= 3 for n in per_case.values())  # at least one lesion slice and two negatives per volume
    dataset = json.loads(paths["dataset"].read_text())
    assert dataset["slicing"]["plane"] == "axial" and dataset["slicing"]["volumes"] == 10
    assert paths["skipped"].read_text().strip() == "path,problem"


def save_nrrd(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    """``array`` as NRRD (pynrrd, 3D Slicer's format) in LPS space with the geometry of the RAS ``affine``."""
    import nrrd

    path.parent.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    nrrd.write(str(path), array, {"space": "left-posterior-superior", "space directions": lps[:3, :3].T,
                                  "space origin": lps[:3, 3], "kinds": ["domain"] * 3})
    return path


def test_an_nrrd_volume_reads_as_the_same_nifti_and_converts_alike(tmp_path):
    from pipeline.data.volume import read_volume

    image, label = make_volume(3)
    as_nifti = read_volume(save_nifti(tmp_path / "a.nii.gz", image))
    as_nrrd = read_volume(save_nrrd(tmp_path / "a.nrrd", image))
    np.testing.assert_array_equal(as_nrrd.data, as_nifti.data)
    np.testing.assert_allclose(as_nrrd.affine, as_nifti.affine, atol=1e-6)
    assert "nrrd_header" in as_nrrd.meta
    # the NIfTI layout of `bmtl prepare` takes NRRD images and labels too, and writes the same slices
    nifti_case(tmp_path / "nii", "c1", image=image, label=label)
    save_nrrd(tmp_path / "nrrd" / "images" / "c1.nrrd", image)
    save_nrrd(tmp_path / "nrrd" / "labels" / "c1_seg.nrrd", label)
    for root in ("nii", "nrrd"):
        write_classes(tmp_path / root, [("c1", "malignant")])
    a = convert_nifti(tmp_path / "nii", tmp_path / "out_nii", SkipLog())
    b = convert_nifti(tmp_path / "nrrd", tmp_path / "out_nrrd", SkipLog())
    assert [i["image"] for i in a.items] == [i["image"] for i in b.items] and len(a.items) > 0
    for item in a.items:
        for key in ("image", "label"):
            np.testing.assert_array_equal(load(tmp_path / "out_nrrd", item[key]).get_fdata(),
                                          load(tmp_path / "out_nii", item[key]).get_fdata())


def save_metaimage(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    """``array`` (x, y, z) as MetaImage written by ITK itself, with the geometry of the RAS ``affine`` in ITK's LPS
    (``.mhd`` writes its pixel data beside it as ``.raw``)."""
    import itk

    path.parent.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image = itk.image_from_array(np.ascontiguousarray(array.T))   # ITK's numpy view is (z, y, x)
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(lps[:3, :3] / spacing)))
    itk.imwrite(image, str(path))
    return path


def test_a_metaimage_volume_reads_as_the_same_nifti_and_converts_alike(tmp_path):
    pytest.importorskip("itk")
    from pipeline.data.volume import read_volume

    image, label = make_volume(4)
    as_nifti = read_volume(save_nifti(tmp_path / "a.nii.gz", image))
    for name in ("a.mha", "a.mhd"):
        as_itk = read_volume(save_metaimage(tmp_path / name, image))
        np.testing.assert_array_equal(as_itk.data, as_nifti.data)
        np.testing.assert_allclose(as_itk.affine, as_nifti.affine, atol=1e-5)
    # the NIfTI layout of `bmtl prepare` takes MetaImage images (.mhd beside its .raw) and labels, the same slices
    nifti_case(tmp_path / "nii", "c1", image=image, label=label)
    save_metaimage(tmp_path / "itk" / "images" / "c1.mhd", image)
    save_metaimage(tmp_path / "itk" / "labels" / "c1_seg.mha", label)
    assert (tmp_path / "itk" / "images" / "c1.raw").exists()
    for root in ("nii", "itk"):
        write_classes(tmp_path / root, [("c1", "malignant")])
    a = convert_nifti(tmp_path / "nii", tmp_path / "out_nii", SkipLog())
    log = SkipLog()
    b = convert_nifti(tmp_path / "itk", tmp_path / "out_itk", log)
    assert problems(log) == ""   # the .raw beside its .mhd is no skipped file
    assert [i["image"] for i in a.items] == [i["image"] for i in b.items] and len(a.items) > 0
    for item in a.items:
        for key in ("image", "label"):
            np.testing.assert_array_equal(load(tmp_path / "out_itk", item[key]).get_fdata(),
                                          load(tmp_path / "out_nii", item[key]).get_fdata())


def test_a_metaimage_header_asking_for_a_huge_array_is_refused_before_reading(tmp_path):
    from pipeline.data.volume import read_metaimage_volume

    path = tmp_path / "huge.mha"
    path.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 4096 4096 4096\nElementType = MET_FLOAT\n"
                     b"ElementDataFile = LOCAL\n" + bytes(64))
    with pytest.raises(DataError, match="huge.mha.*too large"):
        read_metaimage_volume(path)
    (tmp_path / "bad.mha").write_bytes(b"ObjectType = Image\nDimSize = 4 four 4\nElementDataFile = LOCAL\n")
    with pytest.raises(DataError, match="bad.mha.*unreadable DimSize"):
        read_metaimage_volume(tmp_path / "bad.mha")


def test_a_metaimage_without_itk_installed_says_how_to_install_it(tmp_path, monkeypatch):
    import monai.utils

    from pipeline.data.volume import read_metaimage_volume

    path = tmp_path / "a.mha"
    path.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\n"
                     b"ElementDataFile = LOCAL\n" + bytes(8))
    real = monai.utils.optional_import
    monkeypatch.setattr(monai.utils, "optional_import",
                        lambda name, *a, **k: (None, False) if name == "itk" else real(name, *a, **k))
    with pytest.raises(DataError, match=r"a\.mha.*pip install 'breast-mtl\[itk\]'"):
        read_metaimage_volume(path)
