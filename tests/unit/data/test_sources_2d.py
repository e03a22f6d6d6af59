"""The 2D source converters (busi, busbra, udiat, folder) on tiny fake layouts written into tmp_path."""

from __future__ import annotations

import csv
import json
import unittest
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.data.datalist import SkipLog
from pipeline.data.io import DataError
from pipeline.data.sources import busbra, busi, folder, udiat
from pipeline.data.sources.common import IdMaker, name_key, read_table, safe_id

H, W = 24, 32  # every fake image is H x W unless a test says otherwise


# ------------------------------------------------------------------------------------------------------ writers
def grey(seed: int = 0, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def write_image(path: Path, seed: int = 0, shape: tuple[int, int] = (H, W), rgb: bool = False) -> np.ndarray:
    """Write a grey (or RGB with grey content) image; return the grey array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = grey(seed, shape)
    Image.fromarray(np.stack([arr] * 3, -1) if rgb else arr).save(path)
    return arr


def box_mask(box: tuple[int, int, int, int] = (4, 12, 6, 16), shape: tuple[int, int] = (H, W)) -> np.ndarray:
    r0, r1, c0, c1 = box
    mask = np.zeros(shape, dtype=bool)
    mask[r0:r1, c0:c1] = True
    return mask


def write_mask(path: Path, mask: np.ndarray, kind: str = "0/255") -> None:
    """Write a mask as ``"0/255"``, ``"0/1"``, ``"1bit"`` or ``"rgba"`` (lesion white and opaque)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "0/255":
        img = Image.fromarray(mask.astype(np.uint8) * 255)
    elif kind == "0/1":
        img = Image.fromarray(mask.astype(np.uint8))
    elif kind == "1bit":
        img = Image.fromarray(mask.astype(np.uint8) * 255).convert("1")
    elif kind == "rgba":
        rgba = np.zeros((*mask.shape, 4), dtype=np.uint8)
        rgba[mask] = 255
        rgba[..., 3] = 255
        img = Image.fromarray(rgba, mode="RGBA")
    else:
        raise ValueError(kind)
    img.save(path)


def read_back(path: Path) -> tuple[str, np.ndarray]:
    with Image.open(path) as img:
        return img.mode, np.asarray(img)


def make_folder_layout(root: Path, normal: bool = False) -> Path:
    """``benign/b1.png`` + mask, ``malignant/m1.png`` + mask (and ``normal/n1.png`` without a mask)."""
    write_image(root / "benign" / "b1.png", 1)
    write_mask(root / "benign" / "b1_mask.png", box_mask())
    write_image(root / "malignant" / "m1.png", 2)
    write_mask(root / "malignant" / "m1_mask.png", box_mask((2, 8, 2, 9)))
    if normal:
        write_image(root / "normal" / "n1.png", 3)
    return root


def make_busbra(root: Path, folds: bool = True) -> Path:
    """Six images of three patients, two devices; official folds when ``folds``."""
    rows = [
        ("bus_0001-l", 1, "malignant", "GE Logiq 7", 3),
        ("bus_0001-r", 1, "malignant", "GE Logiq 7", 3),
        ("bus_0002-l", 2, "benign", "GE Logiq 5", 1),
        ("bus_0003-l", 3, "benign", "GE Logiq 5", 5),
        ("bus_0003-r", 3, "benign", "GE Logiq 5", 5),
        ("bus_0003-s", 3, "Benign", "GE Logiq 5", 5),
    ]
    for i, (image_id, *_rest) in enumerate(rows):
        write_image(root / "Images" / f"{image_id}.png", i, shape=(H + i, W))
        write_mask(root / "Masks" / f"mask_{image_id[4:]}.png", box_mask(shape=(H + i, W)), kind="1bit")
    with open(root / "bus_data.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ID", "Case", "Histology", "Pathology", "BIRADS", "Device", "Width", "Height"])
        birads = {"bus_0001-l": "5", "bus_0002-l": "2", "bus_0003-s": ""}  # one row without a category
        for image_id, case, pathology, device, _ in rows:
            writer.writerow([image_id, case, "x", pathology, birads.get(image_id, "4"), device, W, H])
    if folds:
        with open(root / "5-fold-cv.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["ID", "Pathology", "kFold", "valid_1"])
            for image_id, _, pathology, _, k in rows:
                writer.writerow([image_id, pathology, k, 1])
    return root


def make_udiat(root: Path, table: str | None = "csv", name_column: str = "Image", numeric_names: bool = False) -> Path:
    """Three images ``000001``..``000003`` (benign, malignant, benign) with GT masks and a label table."""
    rows = []
    for i, kind in enumerate(["Benign", "MALIGNANT", "benign"], start=1):
        stem = f"{i:06d}"
        write_image(root / "original" / f"{stem}.png", i)
        write_mask(root / "GT" / f"{stem}.png", box_mask())
        rows.append((i if numeric_names else f"{stem}.png", kind))
    if table == "csv":
        with open(root / "labels.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([name_column, "Type", "Notes"])
            writer.writerows([(n, t, "") for n, t in rows])
    elif table == "xlsx":
        import openpyxl

        book = openpyxl.Workbook()
        sheet = book.active
        sheet.append([name_column, "Type"])
        for n, t in rows:
            sheet.append([n, t])
        book.save(root / "DatasetB.xlsx")
    return root


def skipped(log: SkipLog, path: Path) -> list[str]:
    """Problems recorded for ``path``."""
    return [row["problem"] for row in log.rows if Path(row["path"]) == path]


def check_written(test: unittest.TestCase, out: Path, items: list[dict], sources: dict[str, Path] | None = None):
    """Every item's image is 8-bit grey, 1 channel; its mask 0/1 of the same size; paths relative and existing."""
    for item in items:
        test.assertEqual(set(item) >= {"id", "image", "label", "cls", "group", "source", "original"}, True)
        test.assertEqual(item["image"], f"images/{item['id']}.png")
        test.assertEqual(item["label"], f"masks/{item['id']}.png")
        mode, image = read_back(out / item["image"])
        mask_mode, mask = read_back(out / item["label"])
        test.assertEqual(mode, "L")
        test.assertEqual(mask_mode, "L")
        test.assertEqual(image.ndim, 2)
        test.assertEqual(image.shape, mask.shape)
        test.assertTrue(set(np.unique(mask).tolist()) <= {0, 1})
        with Image.open(item["original"]) as orig:
            test.assertEqual(image.shape, (orig.height, orig.width))
        if sources and item["id"] in sources:
            test.assertEqual(Path(item["original"]), sources[item["id"]])


# ------------------------------------------------------------------------------------------------------- helpers
class TestIds(unittest.TestCase):
    def test_safe_id(self):
        self.assertEqual(safe_id("benign (12)"), "benign_12")
        self.assertEqual(safe_id("bus_0001-l"), "bus_0001-l")
        self.assertEqual(safe_id("  (()) "), "item")
        self.assertEqual(safe_id("café au lait"), "caf_au_lait")

    def test_unique(self):
        make = IdMaker()
        self.assertEqual([make("a (1)"), make("a_1"), make("A 1"), make("b")], ["a_1", "a_1-2", "A_1-3", "b"])

    def test_name_key(self):
        self.assertEqual(name_key("000012.png"), "12")
        self.assertEqual(name_key("12"), "12")
        self.assertEqual(name_key("12.0"), "12")
        self.assertEqual(name_key(" Case_A.PNG "), "case_a")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=8))
def test_ids_are_safe_and_unique(names):
    make = IdMaker()
    ids = [make(n) for n in names]
    assert len({i.lower() for i in ids}) == len(ids)
    for i in ids:
        assert i and all(c.isascii() and (c.isalnum() or c in "._-") for c in i)
        assert not i.startswith(".")


# ---------------------------------------------------------------------------------------------------------- busi
class TestBusi(unittest.TestCase):
    def setUp(self):
        import tempfile

        self._tmp = tempfile.TemporaryDirectory()
        self.tmp = Path(self._tmp.name)
        self.addCleanup(self._tmp.cleanup)

    def make(self) -> Path:
        root = self.tmp / "in" / "Dataset_BUSI_with_GT"
        write_image(root / "benign" / "benign (1).png", 1, rgb=True)
        write_mask(root / "benign" / "benign (1)_mask.png", box_mask((2, 6, 2, 6)), "0/255")
        write_mask(root / "benign" / "benign (1)_mask_1.png", box_mask((10, 14, 20, 30)), "1bit")
        write_image(root / "benign" / "benign (2).png", 2, rgb=True)
        write_mask(root / "benign" / "benign (2)_mask.png", box_mask(), "rgba")
        write_image(root / "malignant" / "malignant (1).png", 3, rgb=True)
        write_mask(root / "malignant" / "malignant (1)_mask.png", box_mask(), "1bit")
        write_image(root / "normal" / "normal (1).png", 4, rgb=True)
        write_mask(root / "normal" / "normal (1)_mask.png", np.zeros((H, W), bool), "0/255")
        write_image(root / "normal" / "normal (10).png", 5, rgb=True)  # no mask at all: fine for normal
        (root / "README.txt").write_text("not data")
        return root

    def test_layout_from_parent(self):
        root = self.make()
        out = self.tmp / "out"
        log = SkipLog()
        ds = busi.convert(root.parent, out, log)
        self.assertEqual(len(log), 0, log.rows)
        self.assertEqual(ds.name, "busi")
        self.assertEqual(ds.modality, "US")
        self.assertEqual(ds.classes, ["normal", "benign", "malignant"])
        self.assertIn("Al-Dhabyani", ds.citation)
        self.assertIn("Data in Brief", ds.citation)
        self.assertIn("CC0", ds.license)
        by_id = {item["id"]: item for item in ds.items}
        self.assertEqual(
            sorted(by_id), ["benign_1", "benign_2", "malignant_1", "normal_1", "normal_10"]
        )
        self.assertEqual({i: it["cls"] for i, it in by_id.items()},
                         {"benign_1": 1, "benign_2": 1, "malignant_1": 2, "normal_1": 0, "normal_10": 0})
        self.assertTrue(all(it["group"] is None and it["source"] == "busi" and "fold" not in it for it in ds.items))
        check_written(self, out, ds.items, {"benign_1": root / "benign" / "benign (1).png"})
        # the two masks of benign (1) are merged by union
        _, mask = read_back(out / by_id["benign_1"]["label"])
        expected = box_mask((2, 6, 2, 6)) | box_mask((10, 14, 20, 30))
        np.testing.assert_array_equal(mask, expected.astype(np.uint8))
        # the RGBA mask and the 1-bit mask read as the lesion
        np.testing.assert_array_equal(read_back(out / "masks/benign_2.png")[1], box_mask().astype(np.uint8))
        np.testing.assert_array_equal(read_back(out / "masks/malignant_1.png")[1], box_mask().astype(np.uint8))
        # normal images get all-zero masks, also without a mask file
        self.assertFalse(read_back(out / "masks/normal_10.png")[1].any())
        # RGB with grey content -> one channel holding the grey values
        np.testing.assert_array_equal(read_back(out / "images/benign_2.png")[1], grey(2))

    def test_layout_direct(self):
        root = self.make()
        ds = busi.convert(root, self.tmp / "out", SkipLog())
        self.assertEqual(len(ds.items), 5)

    def test_normal_with_lesion_mask(self):
        root = self.make()
        bad = root / "normal" / "normal (1)_mask.png"
        write_mask(bad, box_mask(), "0/255")
        log = SkipLog()
        ds = busi.convert(root, self.tmp / "out", log)
        self.assertEqual(len(ds.items), 4)
        (problem,) = skipped(log, bad)
        self.assertIn("normal image has a non-empty mask", problem)


# ---------------------------------------------------------------------------------------------------------- busbra
class TestBusbra(unittest.TestCase):
    def setUp(self):
        import tempfile

        self._tmp = tempfile.TemporaryDirectory()
        self.tmp = Path(self._tmp.name)
        self.addCleanup(self._tmp.cleanup)

    def test_official_folds_groups_devices(self):
        root = make_busbra(self.tmp / "BUSBRA")
        out = self.tmp / "out"
        log = SkipLog()
        ds = busbra.convert(root, out, log)
        self.assertEqual(len(log), 0, log.rows)
        self.assertEqual(ds.classes, ["benign", "malignant"])
        self.assertIn("Gomez-Flores", ds.citation)
        self.assertIn("Medical Physics", ds.citation)
        self.assertIn("cite", ds.license)
        by_id = {item["id"]: item for item in ds.items}
        self.assertEqual(len(by_id), 6)
        self.assertEqual({i: it["fold"] for i, it in by_id.items()},
                         {"bus_0001-l": 2, "bus_0001-r": 2, "bus_0002-l": 0, "bus_0003-l": 4, "bus_0003-r": 4,
                          "bus_0003-s": 4})
        self.assertEqual({i: it["group"] for i, it in by_id.items()},
                         {"bus_0001-l": "1", "bus_0001-r": "1", "bus_0002-l": "2", "bus_0003-l": "3",
                          "bus_0003-r": "3", "bus_0003-s": "3"})
        self.assertEqual(by_id["bus_0001-l"]["cls"], 1)
        self.assertEqual(by_id["bus_0003-s"]["cls"], 0)  # "Benign": case-insensitive
        self.assertEqual(by_id["bus_0002-l"]["device"], "GE Logiq 5")
        self.assertEqual({i: it["birads"] for i, it in by_id.items()},
                         {"bus_0001-l": "5", "bus_0001-r": "4", "bus_0002-l": "2", "bus_0003-l": "4", "bus_0003-r": "4",
                          "bus_0003-s": None})
        self.assertEqual(by_id["bus_0003-s"]["original"], str(root / "Images" / "bus_0003-s.png"))
        check_written(self, out, ds.items)
        self.assertEqual(read_back(out / "images/bus_0003-s.png")[1].shape, (H + 5, W))
        np.testing.assert_array_equal(read_back(out / "masks/bus_0002-l.png")[1], box_mask(shape=(H + 2, W)))

    def test_without_fold_file(self):
        root = make_busbra(self.tmp / "BUSBRA", folds=False)
        ds = busbra.convert(root, self.tmp / "out", SkipLog())
        self.assertEqual(len(ds.items), 6)
        self.assertTrue(all("fold" not in it for it in ds.items))
        ds = busbra.convert(make_busbra(self.tmp / "B2"), self.tmp / "out2", SkipLog(), official_folds=False)
        self.assertTrue(all("fold" not in it for it in ds.items))

    def test_bad_rows(self):
        root = make_busbra(self.tmp / "BUSBRA")
        table = (root / "bus_data.csv").read_text().replace("bus_0002-l,2,x,benign", "bus_0002-l,2,x,cyst")
        (root / "bus_data.csv").write_text(table)
        (root / "Images" / "bus_0003-r.png").unlink()  # listed, no image
        write_image(root / "Images" / "bus_0009-l.png", 9)  # image without a row
        write_mask(root / "Masks" / "mask_0042-l.png", box_mask(), "1bit")  # orphan mask
        log = SkipLog()
        ds = busbra.convert(root, self.tmp / "out", log)
        self.assertEqual(sorted(it["id"] for it in ds.items), ["bus_0001-l", "bus_0001-r", "bus_0003-l", "bus_0003-s"])
        (problem,) = skipped(log, root / "bus_data.csv")
        self.assertIn("row 4 (bus_0002-l): unknown class 'cyst' in column 'Pathology'", problem)
        self.assertIn("not found", skipped(log, root / "Images" / "bus_0003-r.png")[0])
        self.assertIn("no row in bus_data.csv", skipped(log, root / "Images" / "bus_0009-l.png")[0])
        self.assertIn("orphan mask", skipped(log, root / "Masks" / "mask_0042-l.png")[0])
        self.assertEqual(len(log), 4)

    def test_missing_columns_raise(self):
        root = make_busbra(self.tmp / "BUSBRA")
        (root / "bus_data.csv").write_text("ID,Histology\nbus_0001-l,x\n")
        with self.assertRaises(DataError) as ctx:
            busbra.convert(root, self.tmp / "out", SkipLog())
        self.assertEqual(ctx.exception.path, root / "bus_data.csv")
        self.assertIn("missing column(s): Case", ctx.exception.problem)
        self.assertIn("Pathology", ctx.exception.problem)
        make_busbra(root)
        (root / "5-fold-cv.csv").write_text("ID,Pathology\nbus_0001-l,malignant\n")
        with self.assertRaisesRegex(DataError, r"5-fold-cv.csv: missing column\(s\): kFold"):
            busbra.convert(root, self.tmp / "out", SkipLog())

    def test_missing_table_and_empty(self):
        (self.tmp / "empty").mkdir()
        with self.assertRaisesRegex(DataError, "input folder is empty"):
            busbra.convert(self.tmp / "empty", self.tmp / "out", SkipLog())
        root = make_busbra(self.tmp / "BUSBRA")
        (root / "bus_data.csv").unlink()
        with self.assertRaisesRegex(DataError, "bus_data.csv: label table not found"):
            busbra.convert(root, self.tmp / "out", SkipLog())


# ---------------------------------------------------------------------------------------------------------- udiat
class TestUdiat(unittest.TestCase):
    def setUp(self):
        import tempfile

        self._tmp = tempfile.TemporaryDirectory()
        self.tmp = Path(self._tmp.name)
        self.addCleanup(self._tmp.cleanup)

    def check(self, ds, log):
        self.assertEqual(len(log), 0, log.rows)
        self.assertEqual(ds.classes, ["benign", "malignant"])
        self.assertIn("Yap", ds.citation)
        self.assertIn("Biomedical and Health Informatics", ds.citation)
        self.assertEqual({it["id"]: it["cls"] for it in ds.items}, {"000001": 0, "000002": 1, "000003": 0})
        self.assertTrue(all(it["group"] is None and it["source"] == "udiat" for it in ds.items))

    def test_csv(self):
        root = make_udiat(self.tmp / "udiat", "csv")
        log = SkipLog()
        ds = udiat.convert(root, self.tmp / "out", log)
        self.check(ds, log)
        check_written(self, self.tmp / "out", ds.items)

    def test_xlsx_numeric_names(self):
        root = make_udiat(self.tmp / "udiat", "xlsx", name_column="Name", numeric_names=True)
        log = SkipLog()
        self.check(udiat.convert(root, self.tmp / "out", log), log)

    def test_labels_option(self):
        root = make_udiat(self.tmp / "udiat", None)
        labels = self.tmp / "elsewhere.csv"
        labels.write_text("filename;type\n000001;benign\n000002;malignant\n000003;benign\n")  # ';' separated
        log = SkipLog()
        self.check(udiat.convert(root, self.tmp / "out", log, labels=labels), log)
        with self.assertRaisesRegex(DataError, "no label table found"):
            udiat.convert(root, self.tmp / "out", SkipLog())
        (root / "a.csv").write_text("x")
        (root / "b.xlsx").write_text("x")
        with self.assertRaisesRegex(DataError, r"several label tables found \(a.csv, b.xlsx\)"):
            udiat.convert(root, self.tmp / "out", SkipLog())

    def test_missing_columns(self):
        root = make_udiat(self.tmp / "udiat", None)
        (root / "labels.csv").write_text("Picture,Kind\n000001.png,benign\n")
        with self.assertRaises(DataError) as ctx:
            udiat.convert(root, self.tmp / "out", SkipLog())
        self.assertEqual(ctx.exception.path, root / "labels.csv")
        self.assertIn("missing column(s): Image (or Name, ID, Filename", ctx.exception.problem)
        self.assertIn("Type (or class, pathology, label)", ctx.exception.problem)
        self.assertIn("Columns found: Picture, Kind", ctx.exception.problem)

    def test_bad_rows(self):
        root = make_udiat(self.tmp / "udiat", None)
        (root / "labels.csv").write_text("Image,Type\n000001.png,benign\n000002.png,fibroadenoma\n000099,benign\n")
        write_mask(root / "GT" / "000077.png", box_mask())
        log = SkipLog()
        ds = udiat.convert(root, self.tmp / "out", log)
        self.assertEqual([it["id"] for it in ds.items], ["000001"])
        problems = skipped(log, root / "labels.csv")
        self.assertIn("row 3 (000002.png): unknown class 'fibroadenoma' in column 'Type'", problems[0])
        self.assertIn("row 4 (000099): image not found in original/", problems[1])
        self.assertIn("no row in the label table labels.csv", skipped(log, root / "original" / "000003.png")[0])
        self.assertIn("orphan mask", skipped(log, root / "GT" / "000077.png")[0])
        self.assertEqual(len(log), 4)


# --------------------------------------------------------------------------------------------------------- folder
class TestFolder(unittest.TestCase):
    def setUp(self):
        import tempfile

        self._tmp = tempfile.TemporaryDirectory()
        self.tmp = Path(self._tmp.name)
        self.addCleanup(self._tmp.cleanup)

    def test_two_classes_mixed_extensions(self):
        root = self.tmp / "in"
        write_image(root / "Benign" / "case 1.jpg", 1)
        write_mask(root / "Benign" / "case 1_mask.bmp", box_mask())
        write_image(root / "MALIGNANT" / "case 1.tif", 2)
        write_mask(root / "MALIGNANT" / "case 1_mask.png", box_mask(), "0/1")
        arr16 = (np.arange(H * W, dtype=np.uint16).reshape(H, W) * 50)
        Image.fromarray(arr16).save(root / "MALIGNANT" / "deep.png")
        write_mask(root / "MALIGNANT" / "deep_mask.tiff", box_mask())
        log = SkipLog()
        ds = folder.convert(root, self.tmp / "out", log)
        self.assertEqual(len(log), 0, log.rows)
        self.assertEqual(ds.classes, ["benign", "malignant"])
        self.assertEqual({it["id"]: it["cls"] for it in ds.items},
                         {"benign_case_1": 0, "malignant_case_1": 1, "malignant_deep": 1})
        check_written(self, self.tmp / "out", ds.items)
        deep = read_back(self.tmp / "out" / "images/malignant_deep.png")[1]
        self.assertEqual((deep.dtype, int(deep.min()), int(deep.max())), (np.uint8, 0, 255))

    def test_three_classes(self):
        root = make_folder_layout(self.tmp / "in", normal=True)
        ds = folder.convert(root, self.tmp / "out", SkipLog())
        self.assertEqual(ds.classes, ["normal", "benign", "malignant"])
        self.assertEqual({it["id"]: it["cls"] for it in ds.items}, {"normal_n1": 0, "benign_b1": 1, "malignant_m1": 2})
        self.assertFalse(read_back(self.tmp / "out" / "masks/normal_n1.png")[1].any())


# ------------------------------------------------------------------------------------------------------ bad input
def _truncated(root: Path) -> tuple[Path, str]:
    path = root / "benign" / "bad.png"
    write_image(path, 9, shape=(64, 64))
    path.write_bytes(path.read_bytes()[:200])
    write_mask(root / "benign" / "bad_mask.png", box_mask(shape=(64, 64)))
    return path, "truncated"


def _not_an_image(root: Path) -> tuple[Path, str]:
    path = root / "benign" / "bad.png"
    path.write_text("this is a text file")
    write_mask(root / "benign" / "bad_mask.png", box_mask())
    return path, "not an image"


def _mask_missing(root: Path) -> tuple[Path, str]:
    path = root / "malignant" / "bad.png"
    write_image(path, 9)
    return path, "mask missing for a malignant image (expected bad_mask.<ext> beside it)"


def _orphan_mask(root: Path) -> tuple[Path, str]:
    path = root / "benign" / "ghost_mask.png"
    write_mask(path, box_mask())
    return path, "orphan mask: no image named 'ghost'"


def _mask_size(root: Path) -> tuple[Path, str]:
    write_image(root / "benign" / "bad.png", 9)
    path = root / "benign" / "bad_mask.png"
    write_mask(path, box_mask(shape=(H, W + 3)))
    return path, f"mask size {W + 3}x{H} differs from its image's size {W}x{H}"


def _mask_not_binary(root: Path) -> tuple[Path, str]:
    write_image(root / "benign" / "bad.png", 9)
    path = root / "benign" / "bad_mask.png"
    Image.fromarray(np.tile(np.array([0, 128, 255], np.uint8), (H, W // 3 + 1))[:, :W]).save(path)
    return path, "mask is not binary: it has 3 distinct values (0, 128, 255)"


def _mask_empty(root: Path) -> tuple[Path, str]:
    write_image(root / "benign" / "bad.png", 9)
    path = root / "benign" / "bad_mask.png"
    write_mask(path, np.zeros((H, W), bool))
    return path, "mask is empty (all zero) on a benign image"


def _normal_with_lesion(root: Path) -> tuple[Path, str]:
    write_image(root / "normal" / "n2.png", 9)
    path = root / "normal" / "n2_mask.png"
    write_mask(path, box_mask())
    return path, "normal image has a non-empty mask (80 lesion pixels)"


def _unknown_class_folder(root: Path) -> tuple[Path, str]:
    path = root / "cysts"
    write_image(path / "c1.png", 9)
    return path, "unknown class folder 'cysts': expected one of normal, benign, malignant"


BAD_INPUTS = [
    _truncated,
    _not_an_image,
    _mask_missing,
    _orphan_mask,
    _mask_size,
    _mask_not_binary,
    _mask_empty,
    _normal_with_lesion,
    _unknown_class_folder,
]


@pytest.mark.parametrize("spoil", BAD_INPUTS, ids=[f.__name__.strip("_") for f in BAD_INPUTS])
def test_bad_input_is_skipped(tmp_path, spoil):
    root = make_folder_layout(tmp_path / "in", normal=True)
    bad_path, message = spoil(root)
    log = SkipLog()
    ds = folder.convert(root, tmp_path / "out", log)
    assert len(log) == 1, log.rows
    assert log.rows[0]["path"] == str(bad_path)
    assert message in log.rows[0]["problem"]
    # every good item is still converted
    assert sorted(it["id"] for it in ds.items) == ["benign_b1", "malignant_m1", "normal_n1"]
    # and the skipped row lands in skipped.csv through write_csv
    log.write_csv(tmp_path / "skipped.csv")
    with open(tmp_path / "skipped.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows == [{"path": str(bad_path), "problem": log.rows[0]["problem"]}]


@pytest.mark.parametrize("spoil", BAD_INPUTS, ids=[f.__name__.strip("_") for f in BAD_INPUTS])
def test_bad_input_raises_in_strict_mode(tmp_path, spoil):
    root = make_folder_layout(tmp_path / "in", normal=True)
    bad_path, message = spoil(root)
    with pytest.raises(DataError) as info:
        folder.convert(root, tmp_path / "out", SkipLog(strict=True))
    assert info.value.path == bad_path
    assert message in info.value.problem


def test_busi_bad_inputs(tmp_path):
    """The same checks through the BUSI converter: several problems at once, all recorded, the rest converted."""
    root = tmp_path / "Dataset_BUSI_with_GT"
    write_image(root / "benign" / "benign (1).png", 1, rgb=True)
    write_mask(root / "benign" / "benign (1)_mask.png", box_mask())
    write_image(root / "benign" / "benign (2).png", 2, rgb=True)  # mask missing
    write_mask(root / "malignant" / "malignant (5)_mask.png", box_mask())  # orphan
    write_image(root / "malignant" / "malignant (1).png", 3, rgb=True)
    write_mask(root / "malignant" / "malignant (1)_mask.png", box_mask())
    write_mask(root / "malignant" / "malignant (1)_mask_1.png", box_mask(shape=(H + 1, W)))  # wrong size
    write_image(root / "Normal" / "normal (1).png", 4)
    log = SkipLog()
    ds = busi.convert(tmp_path, tmp_path / "out", log)
    assert sorted(it["id"] for it in ds.items) == ["benign_1", "normal_1"]
    assert "mask missing for a benign image" in skipped(log, root / "benign" / "benign (2).png")[0]
    assert "orphan mask" in skipped(log, root / "malignant" / "malignant (5)_mask.png")[0]
    assert "differs from its image's size" in skipped(log, root / "malignant" / "malignant (1)_mask_1.png")[0]
    assert len(log) == 3


def test_empty_input_folder_raises(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_text("")
    for convert in (busi.convert, folder.convert, udiat.convert, busbra.convert):
        with pytest.raises(DataError, match="input folder is empty") as info:
            convert(tmp_path / "empty", tmp_path / "out", SkipLog())
        assert info.value.path == tmp_path / "empty"


def test_only_unknown_folders_raises(tmp_path):
    write_image(tmp_path / "in" / "stuff" / "x.png")
    with pytest.raises(DataError, match="no images found") as info:
        folder.convert(tmp_path / "in", tmp_path / "out", SkipLog())
    assert info.value.path == tmp_path / "in"


def test_read_table_errors(tmp_path):
    path = tmp_path / "t.xlsx"
    import openpyxl

    book = openpyxl.Workbook()
    book.active.append(["Name", "Other"])
    book.save(path)
    with pytest.raises(DataError) as info:
        read_table(path, {"Name": (), "Type": ("class",)})
    assert info.value.path == path
    assert info.value.problem.startswith("missing column(s): Type (or class)")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="unreadable label table"):
        read_table(tmp_path / "empty.csv", {"Name": ()})
    with pytest.raises(DataError, match="label table not found"):
        read_table(tmp_path / "nope.csv", {"Name": ()})
    table = read_table(path, {"name": ("NAME",)}, optional={"type": ()})
    assert list(table.columns) == ["name"]


# ------------------------------------------------------------------------------------------------ prepare and CLI
def test_prepare_busbra_end_to_end(tmp_path):
    from pipeline.data.prepare import prepare

    root = make_busbra(tmp_path / "BUSBRA")
    write_image(root / "Images" / "bus_0010-l.png", 9)  # no row: skipped
    out = tmp_path / "prepared"
    prepared, paths = prepare("busbra", root, out)
    assert {k: p.name for k, p in paths.items()} == {
        "datalist": "datalist.json", "dataset": "dataset.json", "skipped": "skipped.csv"
    }
    datalist = json.loads((out / "datalist.json").read_text())
    assert datalist["name"] == "busbra" and datalist["classes"] == ["benign", "malignant"]
    assert len(datalist["training"]) == 6
    assert {it["id"]: it["fold"] for it in datalist["training"]}["bus_0002-l"] == 0
    for item in datalist["training"]:
        assert (out / item["image"]).is_file() and (out / item["label"]).is_file()
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["counts"]["groups"] == 3 and dataset["counts"]["skipped"] == 1
    assert "Gomez-Flores" in dataset["citation"] and dataset["official_folds"] == "5-fold-cv.csv"
    with open(out / "skipped.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["path"] == str(root / "Images" / "bus_0010-l.png")


def test_prepare_folder_with_groups_filled(tmp_path, monkeypatch):
    import pipeline.data.prepare as prep

    def fake_fill(items, output_dir):
        for i, item in enumerate(items):
            item["group"] = f"cluster_{i:05d}"

    monkeypatch.setattr(prep, "_fill_groups_from_duplicates", fake_fill)
    root = tmp_path / "in"
    for k in range(4):
        write_image(root / "benign" / f"b{k}.png", k)
        write_mask(root / "benign" / f"b{k}_mask.png", box_mask())
        write_image(root / "malignant" / f"m{k}.png", 10 + k)
        write_mask(root / "malignant" / f"m{k}_mask.png", box_mask())
    prepared, _ = prep.prepare("folder", root, tmp_path / "out", n_folds=2)
    assert sorted({it["fold"] for it in prepared.items}) == [0, 1]
    assert all(it["group"].startswith("cluster_") for it in prepared.items)


def test_cli_prepare(tmp_path, capsys):
    from pipeline.cli import main

    root = make_busbra(tmp_path / "BUSBRA")
    assert main(["prepare", "--source", "busbra", "--input", str(root), "--output", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "busbra" in printed and "groups" in printed and "datalist.json" in printed
    line = next(ln for ln in printed.splitlines() if ln.startswith("busbra"))
    assert line.split()[1] == "6"
    # a bad input in strict mode: exit code 1 and the message on stderr
    (root / "Images" / "bus_0001-l.png").write_text("garbage")
    assert main(["prepare", "--source", "busbra", "--input", str(root), "--output", str(tmp_path / "o2"),
                 "--strict"]) == 1
    assert "bus_0001-l.png: not an image" in capsys.readouterr().err


def test_prepare_keeps_only_the_named_classes(tmp_path, capsys):
    """`bmtl prepare --classes benign,malignant` on a three-class BUSI layout: normal images are left out (and their
    converted files deleted), the others re-indexed in the source's order, the count recorded in dataset.json."""
    import pipeline.data.prepare as prep
    from pipeline.cli import main
    from pipeline.data.synthetic import make_us_dataset

    raw = make_us_dataset(tmp_path / "raw", n=12, seed=0, size=(48, 48))
    full, _ = prep.prepare("busi", raw, tmp_path / "all", n_folds=2)
    n_normal = sum(1 for it in full.items if full.classes[it["cls"]] == "normal")
    assert full.classes == ["normal", "benign", "malignant"] and n_normal > 0
    assert main(["prepare", "--source", "busi", "--input", str(raw), "--output", str(tmp_path / "bm"),
                 "--folds", "2", "--classes", "malignant,benign"]) == 0
    assert f"left out by --classes: {n_normal} normal" in capsys.readouterr().out
    datalist = json.loads((tmp_path / "bm" / "datalist.json").read_text())
    assert datalist["classes"] == ["benign", "malignant"]
    assert len(datalist["training"]) == len(full.items) - n_normal
    by_name = {Path(it["image"]).name: full.classes[it["cls"]] for it in full.items}
    assert all(by_name[Path(it["image"]).name] == datalist["classes"][it["cls"]] for it in datalist["training"])
    dataset = json.loads((tmp_path / "bm" / "dataset.json").read_text())
    assert dataset["classes_left_out"] == {"normal": n_normal}
    kept = {Path(it["image"]).name for it in datalist["training"]}
    assert {p.name for p in (tmp_path / "bm" / "images").iterdir()} == kept   # no orphan normal images
    assert main(["prepare", "--source", "busi", "--input", str(raw), "--output", str(tmp_path / "bad"),
                 "--classes", "benign,cyst"]) == 2
    assert "cyst not among this dataset's classes" in capsys.readouterr().err


if __name__ == "__main__":
    unittest.main()
