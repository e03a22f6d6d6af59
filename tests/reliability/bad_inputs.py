"""The bad-input suite: one table of broken inputs, what each command does with them, and the message the user sees.

``BAD_INPUTS`` is the single source of both the test suite (``tests/reliability/test_bad_inputs.py`` runs every case
end to end through ``bmtl prepare`` or the bundle's ``monai.bundle run`` workflows) and the README table
(``bad_input_table()``, printed by ``python -m tests.reliability.bad_inputs``).

Each case has a ``write(folder, context)`` function that writes a small input with the defect (plus good items, so a
batch command has something left to process) and returns a ``Scenario``: the command's arguments, the file or folder
the message must name, and how many items must come through. Outcomes:

* ``skipped``: the batch command goes on, lists the input (path + problem) in its output and in ``skipped.csv``, and
  the good items are prepared;
* ``error``: the command stops with one message naming the file and the problem (exit status 1 for ``bmtl``);
* ``accepted``: an unusual but valid input that is read correctly (the message column says how).
"""

from __future__ import annotations

import csv
import json
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BadInput", "Scenario", "Context", "BAD_INPUTS", "bad_input_table"]

GOOD_PER_CLASS = 2  # good images per class folder written beside each defect


@dataclass
class Context:
    """What the training/evaluation/prediction cases build on: a prepared datalist, a (tiny) preset and an exported
    bundle."""

    datalist: Path | None = None
    preset: str | Path | None = None
    bundle: Path | None = None  # an exported bundle (``bmtl export``), for the predict cases


@dataclass
class Scenario:
    """A written case: ``args`` (``bmtl`` arguments, or bundle overrides for ``train``/``evaluate``), the path the
    message must name, the number of items the datalist must hold afterwards (prepare cases that go through), and
    files that must not exist afterwards (proof that nothing from the input was executed)."""

    args: list[str] | dict[str, Any]
    named: Path | str
    items: int | None = None
    never_created: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class BadInput:
    id: str
    case: str
    command: str  # prepare | train | evaluate | predict
    outcome: str  # skipped | error | accepted
    message: str  # fragment of the message (or, for accepted inputs, what happens)
    write: Callable[[Path, Context], Scenario]


# ------------------------------------------------------------------------------------------------- small writers
def _save(path: Path, array: np.ndarray, **kwargs: Any) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def _case(seed: int, cls: str = "benign", size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    from pipeline.data.synthetic_us import make_us_case

    return make_us_case(np.random.default_rng(seed), cls, (size, size))


def _pair(folder: Path, name: str, cls: str, seed: int, size: int = 32, ext: str = ".png") -> tuple[Path, Path]:
    image, mask = _case(seed, cls, size)
    img_path = _save(folder / f"{name}{ext}", image)
    mask_path = _save(folder / f"{name}_mask.png", (mask * 255).astype(np.uint8))
    return img_path, mask_path


def _folder_dataset(root: Path, normal: bool = False) -> Path:
    """``root/in/{benign,malignant}[/normal]`` with ``GOOD_PER_CLASS`` good 32x32 images (and masks) each."""
    base = root / "in"
    classes = ["benign", "malignant"] + (["normal"] if normal else [])
    for c, cls in enumerate(classes):
        for i in range(GOOD_PER_CLASS):
            _pair(base / cls, f"good{i}", cls, seed=100 * c + i)
    return base


def _n_good(normal: bool = False) -> int:
    return GOOD_PER_CLASS * (3 if normal else 2)


def _prepare(base: Path, root: Path, source: str = "folder", *extra: str) -> list[str]:
    return ["prepare", "--source", source, "--input", str(base), "--output", str(root / "out"), "--folds", "2",
            *extra]


def _png_bytes(array: np.ndarray, **kwargs: Any) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=kwargs.pop("format", "PNG"), **kwargs)
    return buffer.getvalue()


def _bad_image(name: str, data: Callable[[], bytes], with_mask: bool = True, cls: str = "benign",
               named_mask: bool = False) -> Callable[[Path, Context], Scenario]:
    """A case: the image ``benign/<name>`` holds ``data()`` (its mask is good), or with ``named_mask`` the mask."""

    def write(root: Path, ctx: Context) -> Scenario:
        base = _folder_dataset(root)
        image, mask = _case(7, cls)
        stem = Path(name).stem
        if named_mask:
            _save(base / cls / f"{stem}.png", image)
            bad = base / cls / f"{stem}_mask{Path(name).suffix}"
        else:
            bad = base / cls / name
            if with_mask:
                _save(base / cls / f"{stem}_mask.png", (mask * 255).astype(np.uint8))
        bad.write_bytes(data())
        return Scenario(_prepare(base, root), bad, items=_n_good())

    return write


def _accepted_image(name: str, data: Callable[[], bytes], mask: Callable[[np.ndarray], bytes] | None = None,
                    cls: str = "benign") -> Callable[[Path, Context], Scenario]:
    def write(root: Path, ctx: Context) -> Scenario:
        base = _folder_dataset(root)
        image, lesion = _case(7, cls)
        path = base / cls / name
        path.write_bytes(data())
        mask_bytes = mask(lesion) if mask is not None else _png_bytes((lesion * 255).astype(np.uint8))
        (base / cls / f"{Path(name).stem}_mask.png").write_bytes(mask_bytes)
        return Scenario(_prepare(base, root), path, items=_n_good() + 1)

    return write


def _grey(seed: int = 7, size: int = 32) -> np.ndarray:
    return _case(seed, "benign", size)[0]


def _lesion(seed: int = 7, size: int = 32) -> np.ndarray:
    return _case(seed, "benign", size)[1]


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` 8-bit grey pixels, with one empty IDAT (a decompression bomb's
    header: Pillow checks the size before decoding)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


# ---------------------------------------------------------------------------------------------- prepare: 2D layout
def _mask_of_size(size: int) -> Callable[[Path, Context], Scenario]:
    def write(root: Path, ctx: Context) -> Scenario:
        base = _folder_dataset(root)
        _save(base / "benign" / "odd.png", _grey())
        mask = np.zeros((size, size), np.uint8)
        mask[size // 4: size // 2, size // 4: size // 2] = 255
        bad = _save(base / "benign" / "odd_mask.png", mask)
        return Scenario(_prepare(base, root), bad, items=_n_good())

    return write


def _write_mask_values(root: Path, ctx: Context) -> Scenario:
    base = _folder_dataset(root)
    path = _save(base / "benign" / "half.png", _grey())
    _save(base / "benign" / "half_mask.png", (_lesion() * 128).astype(np.uint8))
    return Scenario(_prepare(base, root), path, items=_n_good() + 1)


def _write_antialiased_mask(root: Path, ctx: Context) -> Scenario:
    base = _folder_dataset(root)
    _save(base / "benign" / "soft.png", _grey())
    mask = (_lesion() * 255).astype(np.uint8)
    mask[0, :3] = [64, 128, 192]
    bad = _save(base / "benign" / "soft_mask.png", mask)
    return Scenario(_prepare(base, root), bad, items=_n_good())


def _write_multimask_sizes(root: Path, ctx: Context) -> Scenario:
    base = _folder_dataset(root)
    _save(base / "benign" / "two.png", _grey())
    _save(base / "benign" / "two_mask.png", (_lesion() * 255).astype(np.uint8))
    bad = _save(base / "benign" / "two_mask_1.png", (_lesion(size=40) * 255).astype(np.uint8))
    return Scenario(_prepare(base, root), bad, items=_n_good())


def _write_missing_mask(root: Path, ctx: Context) -> Scenario:
    base = _folder_dataset(root)
    bad = _save(base / "malignant" / "alone.png", _grey())
    return Scenario(_prepare(base, root), bad, items=_n_good())


def _write_orphan_mask(root: Path, ctx: Context) -> Scenario:
    base = _folder_dataset(root)
    bad = _save(base / "benign" / "ghost_mask.png", (_lesion() * 255).astype(np.uint8))
    return Scenario(_prepare(base, root), bad, items=_n_good())


def _write_empty_mask(root: Path, ctx: Context) -> Scenario:
    base = _folder_dataset(root)
    _save(base / "benign" / "blank.png", _grey())
    bad = _save(base / "benign" / "blank_mask.png", np.zeros((32, 32), np.uint8))
    return Scenario(_prepare(base, root), bad, items=_n_good())


def _write_normal_with_lesion(root: Path, ctx: Context) -> Scenario:
    base = _folder_dataset(root, normal=True)
    _save(base / "normal" / "odd.png", _grey())
    bad = _save(base / "normal" / "odd_mask.png", (_lesion() * 255).astype(np.uint8))
    return Scenario(_prepare(base, root), bad, items=_n_good(normal=True))


def _write_duplicate_names(root: Path, ctx: Context) -> Scenario:
    base = _folder_dataset(root)
    _pair(base / "benign", "case1", "benign", seed=11)
    _pair(base / "malignant", "case1", "malignant", seed=12)
    return Scenario(_prepare(base, root), base / "malignant" / "case1.png", items=_n_good() + 2)


def _write_same_stem(root: Path, ctx: Context) -> Scenario:
    base = _folder_dataset(root)
    image, mask = _case(9)
    _save(base / "benign" / "twin.png", image)
    bad = _save(base / "benign" / "twin.jpg", image)
    _save(base / "benign" / "twin_mask.png", (mask * 255).astype(np.uint8))
    return Scenario(_prepare(base, root), bad, items=_n_good())


def _write_non_utf8_name(root: Path, ctx: Context) -> Scenario:
    base = _folder_dataset(root)
    folder = os.fsencode(base / "benign")
    image, mask = _case(13)
    name = b"caf\xe9_\xff"  # Latin-1 bytes, not valid UTF-8
    for suffix, array in ((b".png", image), (b"_mask.png", (mask * 255).astype(np.uint8))):
        with open(os.path.join(folder, name + suffix), "wb") as f:
            f.write(_png_bytes(array))
    return Scenario(_prepare(base, root), os.fsdecode(os.path.join(folder, name + b".png")), items=_n_good() + 1)


def _write_bad_non_utf8_name(root: Path, ctx: Context) -> Scenario:
    base = _folder_dataset(root)
    path = os.path.join(os.fsencode(base / "benign"), b"br\xf6ken.png")
    with open(path, "wb") as f:
        f.write(b"")
    return Scenario(_prepare(base, root), os.fsdecode(path), items=_n_good())


def _write_spaces_parentheses(root: Path, ctx: Context) -> Scenario:
    base = _folder_dataset(root)
    image_path, _ = _pair(base / "malignant", "my scan (3) [left]", "malignant", seed=14)
    return Scenario(_prepare(base, root), image_path, items=_n_good() + 1)


def _write_empty_input(root: Path, ctx: Context) -> Scenario:
    base = root / "in"
    base.mkdir(parents=True)
    return Scenario(_prepare(base, root), base)


def _write_empty_class_folders(root: Path, ctx: Context) -> Scenario:
    base = root / "in"
    for cls in ("benign", "malignant"):
        (base / cls).mkdir(parents=True)
    return Scenario(_prepare(base, root), base)


def _write_missing_input(root: Path, ctx: Context) -> Scenario:
    return Scenario(_prepare(root / "nowhere", root), root / "nowhere")


def _write_unknown_class_folder(root: Path, ctx: Context) -> Scenario:
    base = _folder_dataset(root)
    _pair(base / "cancer", "x1", "malignant", seed=15)
    return Scenario(_prepare(base, root), base / "cancer", items=_n_good())


def _write_loose_image(root: Path, ctx: Context) -> Scenario:
    base = _folder_dataset(root)
    bad = _save(base / "loose.png", _grey())
    return Scenario(_prepare(base, root), bad, items=_n_good())


def _write_dicom_in_class_folder(root: Path, ctx: Context) -> Scenario:
    from pipeline.data.synthetic_dicom import write_dicom_series

    base = _folder_dataset(root)
    write_dicom_series((_grey().astype(np.int16) * 4)[..., None], base / "benign", file_prefix="scan")
    (base / "benign" / "notes.txt").write_text("a sidecar: ignored without a row")
    return Scenario(_prepare(base, root), base / "benign" / "scan0001.dcm", items=_n_good())


def _write_subfolder(root: Path, ctx: Context) -> Scenario:
    base = _folder_dataset(root)
    _pair(base / "benign" / "extra", "x2", "benign", seed=16)
    return Scenario(_prepare(base, root), base / "benign" / "extra", items=_n_good())


def _write_nan_tiff(root: Path, ctx: Context) -> Scenario:
    base = _folder_dataset(root)
    image = _grey().astype(np.float32)
    image[3, 3] = np.nan
    bad = _save(base / "benign" / "float.tif", image)
    _save(base / "benign" / "float_mask.png", (_lesion() * 255).astype(np.uint8))
    return Scenario(_prepare(base, root), bad, items=_n_good())


def _write_busi_busbra_wrong_folder(root: Path, ctx: Context) -> Scenario:
    base = root / "in"
    (base / "Images").mkdir(parents=True)
    _save(base / "Images" / "bus_0001-l.png", _grey())
    return Scenario(_prepare(base, root, "busi"), base)


# ------------------------------------------------------------------------------------------------ prepare: tables
def _udiat(root: Path, rows: list[dict[str, str]], header: list[str]) -> Path:
    base = root / "in"
    for i, name in enumerate(("000001", "000002", "000003", "000004")):
        cls = "benign" if i % 2 == 0 else "malignant"
        image, mask = _case(20 + i, cls)
        _save(base / "original" / f"{name}.png", image)
        _save(base / "GT" / f"{name}.png", (mask * 255).astype(np.uint8))
    with open(base / "labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return base


def _udiat_rows(classes=("benign", "malignant", "benign", "malignant")) -> list[dict[str, str]]:
    return [{"Image": f"00000{i + 1}", "Type": c} for i, c in enumerate(classes)]


def _write_csv_missing_column(root: Path, ctx: Context) -> Scenario:
    base = _udiat(root, _udiat_rows(), ["Image"])
    return Scenario(_prepare(base, root, "udiat"), base / "labels.csv")


def _write_csv_unknown_class(root: Path, ctx: Context) -> Scenario:
    base = _udiat(root, _udiat_rows(("benign", "malignant", "cancer", "malignant")), ["Image", "Type"])
    return Scenario(_prepare(base, root, "udiat"), base / "labels.csv", items=3)


# ---------------------------------------------------------------------------------------------- prepare: volumes
def _mr(root: Path, n: int = 3, fmt: str = "nifti") -> Path:
    from pipeline.data.synthetic_mr import make_mr_dataset

    return make_mr_dataset(root / "in", n=n, seed=0, shape=(24, 24, 6), fmt=fmt)


def _mr_prepare(base: Path, root: Path, source: str = "nifti") -> list[str]:
    return _prepare(base, root, source, "--negative-slices", "1")


def _replace_nifti(base: Path, case: str, make: Callable[[np.ndarray], np.ndarray]) -> Path:
    import nibabel as nib

    path = base / "images" / f"{case}.nii.gz"
    img = nib.load(path)
    data = make(np.asarray(img.dataobj))
    nib.save(nib.Nifti1Image(data, img.affine), path)
    return path


def _write_nifti_4d(root: Path, ctx: Context) -> Scenario:
    base = _mr(root)
    bad = _replace_nifti(base, "case_001", lambda a: np.stack([a, a], axis=-1))
    return Scenario(_mr_prepare(base, root), bad)


def _write_nifti_nan(root: Path, ctx: Context) -> Scenario:
    base = _mr(root)

    def poison(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float32)
        a[1, 1, 1] = np.nan
        return a

    bad = _replace_nifti(base, "case_001", poison)
    return Scenario(_mr_prepare(base, root), bad)


def _write_nifti_truncated(root: Path, ctx: Context) -> Scenario:
    base = _mr(root)
    bad = base / "images" / "case_001.nii.gz"
    bad.write_bytes(bad.read_bytes()[:300])
    return Scenario(_mr_prepare(base, root), bad)


def _write_nifti_not_gzip(root: Path, ctx: Context) -> Scenario:
    base = _mr(root)
    bad = base / "images" / "case_001.nii.gz"
    bad.write_bytes(b"this is not a NIfTI volume")
    return Scenario(_mr_prepare(base, root), bad)


def _write_metaimage_truncated(root: Path, ctx: Context) -> Scenario:
    import itk
    import nibabel as nib

    base = _mr(root)
    nifti = base / "images" / "case_001.nii.gz"
    bad = nifti.with_name("case_001.mha")
    itk.imwrite(itk.image_from_array(np.ascontiguousarray(np.asarray(nib.load(nifti).dataobj).T)), str(bad))
    nifti.unlink()
    bad.write_bytes(bad.read_bytes()[:-500])   # the header intact, the pixel data short
    return Scenario(_mr_prepare(base, root), bad)


def _write_nifti_label_shape(root: Path, ctx: Context) -> Scenario:
    import nibabel as nib

    base = _mr(root)
    label = base / "labels" / "case_001.nii.gz"
    img = nib.load(label)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:-2], img.affine), label)
    return Scenario(_mr_prepare(base, root), label)


def _write_nifti_no_label(root: Path, ctx: Context) -> Scenario:
    base = _mr(root)
    (base / "labels" / "case_001.nii.gz").unlink()
    return Scenario(_mr_prepare(base, root), base / "images" / "case_001.nii.gz")


def _write_nifti_label_no_image(root: Path, ctx: Context) -> Scenario:
    base = _mr(root)
    (base / "images" / "case_001.nii.gz").unlink()
    return Scenario(_mr_prepare(base, root), base / "labels" / "case_001.nii.gz")


def _write_classes_missing_column(root: Path, ctx: Context) -> Scenario:
    base = _mr(root)
    (base / "classes.csv").write_text("case,diagnosis\ncase_000,benign\ncase_001,malignant\ncase_002,benign\n")
    return Scenario(_mr_prepare(base, root), base / "classes.csv")


def _write_classes_unknown(root: Path, ctx: Context) -> Scenario:
    base = _mr(root)
    text = (base / "classes.csv").read_text().splitlines()
    text = [line if not line.startswith("case_001,") else "case_001,cancer" for line in text]
    (base / "classes.csv").write_text("\n".join(text) + "\n")
    return Scenario(_mr_prepare(base, root), base / "images" / "case_001.nii.gz")


def _write_classes_missing_case(root: Path, ctx: Context) -> Scenario:
    base = _mr(root)
    text = [line for line in (base / "classes.csv").read_text().splitlines() if not line.startswith("case_001,")]
    (base / "classes.csv").write_text("\n".join(text) + "\n")
    return Scenario(_mr_prepare(base, root), base / "images" / "case_001.nii.gz")


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".dcm")


def _write_dicom_no_pixels(root: Path, ctx: Context) -> Scenario:
    import pydicom

    base = _mr(root, fmt="dicom")
    series = base / "images" / "case_001"
    for path in _dicom_files(series):
        ds = pydicom.dcmread(path)
        del ds.PixelData
        ds.save_as(path)
    return Scenario(_mr_prepare(base, root, "dicom"), series)


def _write_dicom_mixed_sizes(root: Path, ctx: Context) -> Scenario:
    import pydicom

    base = _mr(root, fmt="dicom")
    series = base / "images" / "case_001"
    path = _dicom_files(series)[2]
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 16, 20
    ds.PixelData = np.zeros((16, 20), np.uint16).tobytes()
    ds.save_as(path)
    return Scenario(_mr_prepare(base, root, "dicom"), series)


def _write_dicom_not_dicom(root: Path, ctx: Context) -> Scenario:
    base = _mr(root, fmt="dicom")
    series = base / "images" / "case_001"
    for path in _dicom_files(series):
        path.write_bytes(b"not DICOM " * 20)
    return Scenario(_mr_prepare(base, root, "dicom"), series)


# ------------------------------------------------------------------------------------------ training / evaluation
def _datalist_copy(root: Path, ctx: Context, edit: Callable[[dict[str, Any], Path], None]) -> Path:
    """A copy of the context's datalist (paths made absolute) edited by ``edit(data, folder)``."""
    assert ctx.datalist is not None
    data = json.loads(Path(ctx.datalist).read_text(encoding="utf-8"))
    src = Path(ctx.datalist).resolve().parent
    for section in ("training", "test"):
        for item in data.get(section, []):
            for key in ("image", "label"):
                if item.get(key):
                    item[key] = str(src / item[key])
    folder = root / "data"
    folder.mkdir(parents=True, exist_ok=True)
    edit(data, folder)
    path = folder / "datalist.json"
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def _train(ctx: Context, root: Path, **override: Any) -> dict[str, Any]:
    args = {"datalist": str(ctx.datalist), "preset": str(ctx.preset), "output_dir": str(root / "run"),
            "epochs": 1, "use_mlflow": False}
    args.update(override)
    return args


def _write_datalist_missing_key(root: Path, ctx: Context) -> Scenario:
    path = _datalist_copy(root, ctx, lambda d, f: d["training"][3].pop("fold"))
    return Scenario(_train(ctx, root, datalist=str(path)), path)


def _write_datalist_bad_class(root: Path, ctx: Context) -> Scenario:
    path = _datalist_copy(root, ctx, lambda d, f: d["training"][0].update(cls=7))
    return Scenario(_train(ctx, root, datalist=str(path)), path)


def _write_datalist_not_json(root: Path, ctx: Context) -> Scenario:
    path = root / "datalist.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"name": "x", "training": [', encoding="utf-8")
    return Scenario(_train(ctx, root, datalist=str(path)), path)


def _write_datalist_missing(root: Path, ctx: Context) -> Scenario:
    path = root / "nowhere" / "datalist.json"
    return Scenario(_train(ctx, root, datalist=str(path)), path)


def _write_datalist_missing_image(root: Path, ctx: Context) -> Scenario:
    gone = root / "data" / "deleted.png"
    path = _datalist_copy(root, ctx, lambda d, f: d["training"][2].update(image=str(gone)))
    return Scenario(_train(ctx, root, datalist=str(path)), gone)


def _write_datalist_expression(root: Path, ctx: Context) -> Scenario:
    sentinel = root / "code_ran"
    expression = f"$__import__('pathlib').Path({str(sentinel)!r}).touch()"
    path = _datalist_copy(root, ctx, lambda d, f: (d["training"][1].update(image=expression, label="@network"),
                                                   d.update(name="$exit(3)")))
    return Scenario(_train(ctx, root, datalist=str(path)), expression, never_created=[sentinel])


def _write_corrupt_prepared_image(root: Path, ctx: Context) -> Scenario:
    bad = root / "data" / "truncated.png"

    def edit(data: dict[str, Any], folder: Path) -> None:
        original = Path(data["training"][0]["image"]).read_bytes()
        bad.write_bytes(original[: len(original) // 2])
        data["training"][0]["image"] = str(bad)

    path = _datalist_copy(root, ctx, edit)
    return Scenario(_train(ctx, root, datalist=str(path)), bad)


def _tiny_preset_with(root: Path, ctx: Context, **changes: Any) -> Path:
    import yaml

    from pipeline.presets import load_preset

    preset = load_preset(ctx.preset)
    preset.update(changes)
    path = root / "preset.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(preset))
    return path


def _write_unknown_network(root: Path, ctx: Context) -> Scenario:
    preset = _tiny_preset_with(root, ctx, network_name="no_such_net")
    return Scenario(_train(ctx, root, preset=str(preset)), "no_such_net")


def _write_unknown_preset(root: Path, ctx: Context) -> Scenario:
    return Scenario(_train(ctx, root, preset="no_such_preset"), "no_such_preset")


def _write_fold_out_of_range(root: Path, ctx: Context) -> Scenario:
    return Scenario(_train(ctx, root, fold=7), Path(ctx.datalist))


def _other_network_checkpoint(path: Path, ctx: Context, full: bool) -> Path:
    """A checkpoint of another network (segresnet_effnet at its smallest) where ``ctx.preset``'s run would look."""
    import torch

    from pipeline.registry import create_network

    net = create_network("segresnet_effnet", in_channels=1, num_classes=3, init_filters=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = net.state_dict()
    torch.save({"network": state, "optimizer": {}, "trainer": {}} if full else state, path)
    (path.parent.parent / "run_config.json").write_text(
        json.dumps({"preset": "segresnet_effnet", "network_name": "segresnet_effnet"}))
    return path


def _write_resume_other_network(root: Path, ctx: Context) -> Scenario:
    ckpt = _other_network_checkpoint(root / "run" / "models" / "last.pt", ctx, full=True)
    return Scenario(_train(ctx, root), ckpt)


def _write_resume_truncated(root: Path, ctx: Context) -> Scenario:
    import torch

    ckpt = root / "run" / "models" / "last.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"network": {"w": torch.zeros(1000)}}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:1500])
    return Scenario(_train(ctx, root), ckpt)


class _RunsCode:
    """Pickles to a call that creates ``path``: what a malicious checkpoint does when unpickled unsafely."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def _write_resume_code(root: Path, ctx: Context) -> Scenario:
    import torch

    sentinel = root / "code_ran"
    ckpt = root / "run" / "models" / "last.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"network": {}, "trainer": _RunsCode(sentinel)}, ckpt)
    return Scenario(_train(ctx, root), ckpt, never_created=[sentinel])


def _write_evaluate_other_network(root: Path, ctx: Context) -> Scenario:
    ckpt = _other_network_checkpoint(root / "run" / "models" / "model.pt", ctx, full=False)
    return Scenario(_train(ctx, root), ckpt)


def _write_evaluate_missing_checkpoint(root: Path, ctx: Context) -> Scenario:
    return Scenario(_train(ctx, root), root / "run" / "models" / "model.pt")


def _write_evaluate_empty_test(root: Path, ctx: Context) -> Scenario:
    path = _datalist_copy(root, ctx, lambda d, f: d.update(test=[]))
    return Scenario(_train(ctx, root, datalist=str(path), split="test"), path)


# ------------------------------------------------------------------------------------------------------ prediction
def _predict_folder(root: Path, ctx: Context) -> tuple[Path, list[str]]:
    """``root/in`` with one good 40x40 PNG, and the ``bmtl predict`` arguments for it."""
    folder = root / "in"
    _save(folder / "good.png", _grey(size=40))
    args = ["predict", "--bundle", str(ctx.bundle), "--input", str(folder), "--output", str(root / "out"),
            "--no-progress"]
    return folder, args


def _predict_file(name: str, data: Callable[[], bytes], accepted: bool = False) -> Callable[[Path, Context], Scenario]:
    def write(root: Path, ctx: Context) -> Scenario:
        folder, args = _predict_folder(root, ctx)
        path = folder / name
        path.write_bytes(data())
        return Scenario(args, path, items=2 if accepted else 1)

    return write


def _nifti_bytes(array: np.ndarray, descrip: str = "") -> bytes:
    import nibabel as nib

    img = nib.Nifti1Image(array, np.eye(4))
    if descrip:
        img.header["descrip"] = descrip.encode()[:79]
    return img.to_bytes()


def _sentinel_expression(root: Path) -> tuple[Path, str]:
    sentinel = root / "code_ran"
    return sentinel, f"$__import__('pathlib').Path({str(sentinel)!r}).touch()"


def _write_predict_pickle_png(root: Path, ctx: Context) -> Scenario:
    import pickle

    folder, args = _predict_folder(root, ctx)
    sentinel = root / "code_ran"
    path = folder / "evil.png"
    path.write_bytes(pickle.dumps(_RunsCode(sentinel)))
    return Scenario(args, path, items=1, never_created=[sentinel])


def _write_predict_png_text(root: Path, ctx: Context) -> Scenario:
    from PIL.PngImagePlugin import PngInfo

    folder, args = _predict_folder(root, ctx)
    sentinel, expression = _sentinel_expression(root)
    info = PngInfo()
    for key in ("Comment", "Description", "filename_or_obj"):
        info.add_text(key, expression)
    path = _save(folder / "text.png", _grey(size=40), pnginfo=info)
    return Scenario(args, path, items=2, never_created=[sentinel])


def _write_predict_nifti_descrip(root: Path, ctx: Context) -> Scenario:
    folder, args = _predict_folder(root, ctx)
    sentinel, expression = _sentinel_expression(root)
    path = folder / "header.nii.gz"
    path.write_bytes(gzip_bytes(_nifti_bytes(_grey(size=40).astype(np.float32) / 255.0, descrip=expression[:79])))
    return Scenario(args, path, items=2, never_created=[sentinel])


def _dicom_slice(folder: Path, **kw: Any) -> Path:
    from pipeline.data.synthetic_dicom import write_dicom_series

    volume = (_grey(size=40).astype(np.int16) * 4)[..., None]
    write_dicom_series(volume, folder, file_prefix="US", **kw)
    return folder / "US0001.dcm"


def _write_predict_dicom_expression(root: Path, ctx: Context) -> Scenario:
    folder, args = _predict_folder(root, ctx)
    sentinel, expression = _sentinel_expression(root)
    path = _dicom_slice(folder / "dicom", series_description=expression[:64], PatientName="@network",
                        PatientID="$exit(3)")
    return Scenario(args, path, items=2, never_created=[sentinel])


def _write_predict_dicom_no_pixels(root: Path, ctx: Context) -> Scenario:
    import pydicom

    folder, args = _predict_folder(root, ctx)
    path = _dicom_slice(folder / "dicom")
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    return Scenario(args, path, items=1)


def _write_predict_missing_input(root: Path, ctx: Context) -> Scenario:
    folder, args = _predict_folder(root, ctx)
    args[args.index("--input") + 1] = str(root / "nowhere")
    return Scenario(args, root / "nowhere")


def _write_predict_output_above_input(root: Path, ctx: Context) -> Scenario:
    folder, args = _predict_folder(root, ctx)
    args[args.index("--output") + 1] = str(root)   # holds in/: every input would be left out as an output
    return Scenario(args, folder)


def _write_predict_long_name(root: Path, ctx: Context) -> Scenario:
    folder, args = _predict_folder(root, ctx)
    path = _save(folder / ("long_" + "x" * 245 + ".png"), _grey(size=40))   # 254 bytes: the longest valid name
    return Scenario(args, path, items=2)


def _with_raw_ds(path: Path, keyword: str, stored: bytes) -> Path:
    """A DS element of ``path`` stored as a European-locale vendor writes it (``0,5``): pydicom refuses to set such a
    value, so the raw element is replaced."""
    import pydicom
    from pydicom.dataelem import RawDataElement
    from pydicom.datadict import tag_for_keyword

    ds = pydicom.dcmread(path)
    tag = pydicom.tag.Tag(tag_for_keyword(keyword))
    stored = stored.ljust(len(stored) + len(stored) % 2)   # DICOM values have an even length
    ds._dict[tag] = RawDataElement(tag, "DS", len(stored), stored, 0, False, True)
    ds.save_as(path)
    return path


def _write_predict_dicom_rescale_comma(root: Path, ctx: Context) -> Scenario:
    folder, args = _predict_folder(root, ctx)
    path = _with_raw_ds(_dicom_slice(folder / "dicom"), "RescaleSlope", b"0,5")
    return Scenario(args, path, items=1)


def _write_predict_dicom_spacing_comma(root: Path, ctx: Context) -> Scenario:
    folder, args = _predict_folder(root, ctx)
    path = _with_raw_ds(_pydicom_file("MR_small.dcm", folder), "PixelSpacing", b"0,3125\\0,3125")
    return Scenario(args, path, items=2)


def _write_predict_series_position_comma(root: Path, ctx: Context) -> Scenario:
    from pipeline.data.synthetic_dicom import write_dicom_series

    folder, args = _predict_folder(root, ctx)
    series = folder / "series"
    write_dicom_series((_grey(size=40).astype(np.int16)[..., None] * np.ones(3, np.int16)), series,
                       spacing=(0.7, 0.7, 2.5))
    _with_raw_ds(sorted(series.iterdir())[1], "ImagePositionPatient", b"0\\0\\2,5")
    return Scenario(args, series, items=1)


def _pydicom_file(name: str, folder: Path) -> Path:
    """A copy of a DICOM file that pydicom ships (written by other software; never downloaded)."""
    import shutil

    from pydicom.data import get_testdata_file

    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(get_testdata_file(name, download=False), folder / name))


def _predict_pydicom_file(name: str, accepted: bool = False) -> Callable[[Path, Context], Scenario]:
    def write(root: Path, ctx: Context) -> Scenario:
        folder, args = _predict_folder(root, ctx)
        return Scenario(args, _pydicom_file(name, folder), items=2 if accepted else 1)

    return write


def _write_predict_too_many_pixels(root: Path, ctx: Context) -> Scenario:
    folder, args = _predict_folder(root, ctx)   # good.png: 40 x 40 = 1,600 pixels
    path = _save(folder / "huge.png", _grey(size=64))
    return Scenario([*args, "--max-pixels", "2000"], path, items=1)


def gzip_bytes(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)


# ------------------------------------------------------------------------------------------------------ the table
def _jpeg() -> bytes:
    return _png_bytes(_grey(), format="JPEG", quality=90)


BAD_INPUTS: list[BadInput] = [
    # --- 2D images and masks, `bmtl prepare` (the class-folder layout; BUSI/UDIAT/BUS-BRA share the readers)
    BadInput("truncated-png", "image PNG cut in half", "prepare", "skipped", "unreadable or truncated image",
             _bad_image("cut.png", lambda: _png_bytes(_grey())[:200])),
    BadInput("corrupt-jpg", "JPEG with garbage after the first 40 bytes", "prepare", "skipped",
             "not an image Pillow can read", _bad_image("noise.jpg", lambda: _jpeg()[:40] + bytes(range(256)) * 4)),
    BadInput("truncated-jpg", "JPEG cut at 60% of its length", "prepare", "skipped", "unreadable or truncated image",
             _bad_image("cut.jpg", lambda: _jpeg()[: len(_jpeg()) * 6 // 10])),
    BadInput("zero-byte-image", "0-byte image file", "prepare", "skipped", "file is empty (0 bytes)",
             _bad_image("empty.png", lambda: b"")),
    BadInput("zero-byte-mask", "0-byte mask file", "prepare", "skipped", "file is empty (0 bytes)",
             _bad_image("emptymask.png", lambda: b"", named_mask=True)),
    BadInput("wrong-magic", "text file named .png", "prepare", "skipped", "not an image Pillow can read",
             _bad_image("notes.png", lambda: b"patient notes, not an image\n" * 4)),
    BadInput("png-named-jpg", "PNG data in a .jpg file", "prepare", "accepted",
             "read by content, not by extension", _accepted_image("swapped.jpg", lambda: _png_bytes(_grey()))),
    BadInput("decompression-bomb", "PNG header claiming 20000x10000 pixels", "prepare", "skipped",
             "image is too large", _bad_image("bomb.png", lambda: _png_header_only(20000, 10000))),
    BadInput("tiny-image", "1x1 pixel image", "prepare", "skipped", "image is too small (1x1 pixels)",
             _bad_image("dot.png", lambda: _png_bytes(np.zeros((1, 1), np.uint8)))),
    BadInput("nan-float-tiff", "32-bit float TIFF holding NaN", "prepare", "skipped",
             "image holds NaN or infinite values", _write_nan_tiff),
    BadInput("16-bit-png", "16-bit grey PNG image", "prepare", "accepted", "min-max scaled to 8 bits",
             _accepted_image("deep.png", lambda: _png_bytes(_grey().astype(np.uint16) * 257))),
    BadInput("palette-png", "palette (P mode) PNG image", "prepare", "accepted", "converted to grey",
             _accepted_image("pal.png", lambda: _palette_png())),
    BadInput("cmyk-jpeg", "CMYK JPEG image", "prepare", "accepted", "converted to grey through its colours",
             _accepted_image("ink.jpg", lambda: _cmyk_jpeg())),
    BadInput("multi-page-tiff", "2-page TIFF image", "prepare", "skipped", "multi-page or animated image (2 frames)",
             _bad_image("pages.tif", lambda: _multi_page_tiff())),
    BadInput("rgba-image", "RGBA image (grey content, alpha channel)", "prepare", "accepted",
             "converted to grey, alpha dropped",
             _accepted_image("alpha.png", lambda: _png_bytes(_rgba()))),
    BadInput("palette-mask", "palette (P mode) mask", "prepare", "accepted", "lesion = non-zero colour pixels",
             _accepted_image("pmask.png", lambda: _png_bytes(_grey()), mask=lambda m: _palette_mask(m))),
    BadInput("rgba-alpha-mask", "RGBA mask drawn in the alpha channel only", "prepare", "accepted",
             "lesion read from alpha when the colour channels are empty",
             _accepted_image("amask.png", lambda: _png_bytes(_grey()),
                             mask=lambda m: _png_bytes(np.dstack([np.zeros((32, 32), np.uint8)] * 3
                                                                 + [(m * 255).astype(np.uint8)])))),
    BadInput("mask-larger", "mask 40x40 for a 32x32 image", "prepare", "skipped",
             "mask size 40x40 differs from its image's size 32x32", _mask_of_size(40)),
    BadInput("mask-smaller", "mask 24x24 for a 32x32 image", "prepare", "skipped",
             "mask size 24x24 differs from its image's size 32x32", _mask_of_size(24)),
    BadInput("mask-0-128", "mask with values {0, 128}", "prepare", "accepted", "any 0/v mask: lesion = v",
             _write_mask_values),
    BadInput("mask-antialiased", "mask with 5 grey levels (anti-aliased)", "prepare", "skipped",
             "mask is not binary: it has 5 distinct values", _write_antialiased_mask),
    BadInput("jpeg-mask", "lossy JPEG mask", "prepare", "skipped", "mask is not binary",
             _bad_image("lossy.jpg", lambda: _png_bytes((_lesion() * 255).astype(np.uint8), format="JPEG",
                                                        quality=60), named_mask=True)),
    BadInput("multi-mask-sizes", "_mask.png 32x32 and _mask_1.png 40x40", "prepare", "skipped",
             "mask size 40x40 differs from its image's size 32x32", _write_multimask_sizes),
    BadInput("missing-mask", "malignant image without a mask", "prepare", "skipped",
             "mask missing for a malignant image", _write_missing_mask),
    BadInput("orphan-mask", "mask without its image", "prepare", "skipped", "orphan mask: no image named 'ghost'",
             _write_orphan_mask),
    BadInput("empty-lesion-mask", "benign image with an all-zero mask", "prepare", "skipped",
             "mask is empty (all zero) on a benign image", _write_empty_mask),
    BadInput("normal-with-lesion", "normal image whose mask has a lesion", "prepare", "skipped",
             "normal image has a non-empty mask", _write_normal_with_lesion),
    BadInput("same-name-two-classes", "benign/case1.png and malignant/case1.png", "prepare", "accepted",
             "both kept, as benign_case1 and malignant_case1", _write_duplicate_names),
    BadInput("same-stem-two-images", "twin.png and twin.jpg in one folder", "prepare", "skipped",
             "several images share the name stem 'twin'", _write_same_stem),
    BadInput("non-utf8-name", "file name in Latin-1 bytes (not UTF-8)", "prepare", "accepted",
             "read; id made of safe characters", _write_non_utf8_name),
    BadInput("non-utf8-name-broken", "0-byte file with a non-UTF-8 name", "prepare", "skipped",
             "file is empty (0 bytes)", _write_bad_non_utf8_name),
    BadInput("spaces-parentheses", "'my scan (3) [left].png'", "prepare", "accepted",
             "id my_scan_3_left", _write_spaces_parentheses),
    BadInput("empty-input", "empty input folder", "prepare", "error", "input folder is empty", _write_empty_input),
    BadInput("empty-class-folders", "class folders without images", "prepare", "error", "no images found",
             _write_empty_class_folders),
    BadInput("missing-input", "input folder that does not exist", "prepare", "error", "input folder not found",
             _write_missing_input),
    BadInput("unknown-class-folder", "a 'cancer/' folder beside benign/ and malignant/", "prepare", "skipped",
             "unknown class folder 'cancer'", _write_unknown_class_folder),
    BadInput("loose-image", "image directly in the input folder", "prepare", "skipped",
             "image outside a class folder", _write_loose_image),
    BadInput("dicom-in-class-folder", "DICOM file inside a class folder of --source folder", "prepare", "skipped",
             "DICOM file: the folder source does not read DICOM", _write_dicom_in_class_folder),
    BadInput("nested-folder", "sub-folder inside a class folder", "prepare", "skipped",
             "unexpected sub-folder inside a class folder", _write_subfolder),
    BadInput("wrong-layout", "BUS-BRA layout given as --source busi", "prepare", "error", "no images found",
             _write_busi_busbra_wrong_folder),
    BadInput("csv-missing-column", "UDIAT label CSV without the Type column", "prepare", "error",
             "missing column(s): Type", _write_csv_missing_column),
    BadInput("csv-unknown-class", "UDIAT label CSV with class 'cancer'", "prepare", "skipped",
             "unknown class 'cancer' in column 'Type'", _write_csv_unknown_class),
    # --- MRI volumes, `bmtl prepare --source nifti|dicom`
    BadInput("nifti-4d", "4D NIfTI (two volumes)", "prepare", "skipped", "4D image (shape (24, 24, 6, 2)",
             _write_nifti_4d),
    BadInput("nifti-nan", "NIfTI with a NaN voxel", "prepare", "skipped",
             "image holds non-finite voxels (1 NaN, 0 inf)", _write_nifti_nan),
    BadInput("nifti-truncated", ".nii.gz cut after 300 bytes", "prepare", "skipped",
             "unreadable NIfTI file", _write_nifti_truncated),
    BadInput("nifti-not-nifti", "text in a .nii.gz file", "prepare", "skipped",
             "unreadable NIfTI file (ImageFileError", _write_nifti_not_gzip),
    BadInput("metaimage-truncated", "MetaImage (.mha) volume cut 500 bytes short", "prepare", "skipped",
             "unreadable MetaImage file", _write_metaimage_truncated),
    BadInput("nifti-label-shape", "label volume 2 voxels shorter than its image", "prepare", "skipped",
             "label shape (22, 24, 6) differs from its image's shape (24, 24, 6)", _write_nifti_label_shape),
    BadInput("nifti-no-label", "benign volume without a label", "prepare", "skipped",
             "no label for this benign image", _write_nifti_no_label),
    BadInput("nifti-label-no-image", "label without an image", "prepare", "skipped",
             "label without an image", _write_nifti_label_no_image),
    BadInput("classes-missing-column", "classes.csv without the class column", "prepare", "error",
             "missing column(s): class", _write_classes_missing_column),
    BadInput("classes-unknown", "classes.csv with class 'cancer'", "prepare", "skipped", "unknown class 'cancer'",
             _write_classes_unknown),
    BadInput("classes-missing-case", "a case missing from classes.csv", "prepare", "skipped",
             "is not in the classes CSV", _write_classes_missing_case),
    BadInput("dicom-no-pixels", "DICOM series without PixelData", "prepare", "skipped",
             "DICOM series without pixel data", _write_dicom_no_pixels),
    BadInput("dicom-mixed-sizes", "DICOM series with one 20x16 slice among 24x24", "prepare", "skipped",
             "mixed slice sizes in the series", _write_dicom_mixed_sizes),
    BadInput("dicom-not-dicom", "series folder of non-DICOM files", "prepare", "skipped",
             "no DICOM file in the series folder", _write_dicom_not_dicom),
    # --- training (`python -m monai.bundle run training ...`)
    BadInput("datalist-missing-key", "datalist item without 'fold'", "train", "error", "missing key(s) fold",
             _write_datalist_missing_key),
    BadInput("datalist-bad-class", "datalist item with cls 7 of 3 classes", "train", "error",
             "'cls' must be an integer class index in 0..2", _write_datalist_bad_class),
    BadInput("datalist-not-json", "datalist.json cut in the middle", "train", "error", "not valid JSON",
             _write_datalist_not_json),
    BadInput("datalist-missing", "--datalist pointing nowhere", "train", "error", "datalist file not found",
             _write_datalist_missing),
    BadInput("datalist-missing-image", "datalist naming a deleted image", "train", "error",
             "image file not found (item", _write_datalist_missing_image),
    BadInput("datalist-expression",
             "datalist whose paths and name are '$'/'@' expressions (read as file names, never evaluated)", "train",
             "error", "image file not found (item", _write_datalist_expression),
    BadInput("prepared-image-truncated", "prepared PNG truncated after `prepare`", "train", "error",
             "unreadable or truncated image (OSError: image file is truncated)", _write_corrupt_prepared_image),
    BadInput("unknown-network", "preset naming network 'no_such_net'", "train", "error",
             "unknown network 'no_such_net'; registered networks:", _write_unknown_network),
    BadInput("unknown-preset", "--preset no_such_preset", "train", "error", "unknown preset 'no_such_preset'",
             _write_unknown_preset),
    BadInput("fold-out-of-range", "--fold 7 with 3 folds", "train", "error", "fold 7 is out of range",
             _write_fold_out_of_range),
    BadInput("resume-other-network", "last.pt of another network in the run folder (resume: auto)", "train",
             "error", "checkpoint does not fit the network 'network'", _write_resume_other_network),
    BadInput("resume-truncated", "truncated last.pt in the run folder", "train", "error",
             "not a readable PyTorch checkpoint", _write_resume_truncated),
    BadInput("resume-pickle-code", "last.pt holding a pickled function call (never run: weights_only)", "train",
             "error", "refused to load", _write_resume_code),
    # --- evaluation (`python -m monai.bundle run evaluating ...`)
    BadInput("evaluate-other-network", "model.pt of another network (another --preset)", "evaluate", "error",
             "checkpoint does not fit the network 'network'", _write_evaluate_other_network),
    BadInput("evaluate-missing-checkpoint", "no model.pt in the run folder", "evaluate", "error",
             "checkpoint not found", _write_evaluate_missing_checkpoint),
    BadInput("evaluate-empty-split", "--split test on a datalist without test items", "evaluate", "error",
             "the 'test' split of", _write_evaluate_empty_test),
    # --- prediction (`bmtl predict` with an exported bundle): a bad file gets an error row, the others are predicted
    BadInput("predict-truncated-png", "PNG cut in half", "predict", "skipped", "unreadable or truncated image",
             _predict_file("cut.png", lambda: _png_bytes(_grey(size=40))[:150])),
    BadInput("predict-zero-byte", "0-byte PNG", "predict", "skipped", "file is empty (0 bytes)",
             _predict_file("empty.png", lambda: b"")),
    BadInput("predict-unsupported", "a .txt file in the input folder", "predict", "skipped",
             "unsupported file type '.txt'", _predict_file("notes.txt", lambda: b"not an image")),
    BadInput("predict-tiny", "1x1 pixel PNG", "predict", "skipped", "image is too small (1x1 pixels)",
             _predict_file("dot.png", lambda: _png_bytes(np.zeros((1, 1), np.uint8)))),
    BadInput("predict-nifti-4d", "4D NIfTI", "predict", "skipped", "4D volume (shape (8, 8, 4, 3)",
             _predict_file("dce.nii.gz", lambda: gzip_bytes(_nifti_bytes(np.zeros((8, 8, 4, 3), np.float32))))),
    BadInput("predict-nifti-nan", "2D NIfTI with a NaN pixel", "predict", "skipped",
             "non-finite pixels (1 NaN, 0 inf)",
             _predict_file("nan.nii.gz", lambda: gzip_bytes(_nifti_bytes(
                 np.where(np.arange(256).reshape(16, 16) == 20, np.nan, 1.0).astype(np.float32))))),
    BadInput("predict-dicom-no-pixels", "DICOM file without PixelData", "predict", "skipped",
             "DICOM file without pixel data", _write_predict_dicom_no_pixels),
    BadInput("predict-multi-page-tiff", "2-page TIFF", "predict", "skipped",
             "multi-page or animated image (2 frames)", _predict_file("pages.tif", lambda: _multi_page_tiff())),
    BadInput("predict-palette-png", "palette (P mode) PNG", "predict", "accepted",
             "read through its colours, as `prepare` reads it",
             _predict_file("pal.png", lambda: _palette_png(), accepted=True)),
    BadInput("predict-pickle-png", "a pickle that runs code, named .png (never unpickled)", "predict", "skipped",
             "not an image Pillow can read", _write_predict_pickle_png),
    BadInput("predict-png-text", "PNG whose text chunks hold a `$`-expression", "predict", "accepted",
             "metadata is data: nothing evaluated", _write_predict_png_text),
    BadInput("predict-nifti-descrip", "NIfTI whose header description is a `$`-expression", "predict", "accepted",
             "metadata is data: nothing evaluated", _write_predict_nifti_descrip),
    BadInput("predict-dicom-expression", "DICOM whose SeriesDescription/PatientName are expressions", "predict",
             "accepted", "metadata is data: nothing evaluated", _write_predict_dicom_expression),
    BadInput("predict-missing-input", "--input pointing nowhere", "predict", "error", "not found",
             _write_predict_missing_input),
    BadInput("predict-output-above-input", "--output a folder that holds --input", "predict", "error",
             "contains the input folder", _write_predict_output_above_input),
    BadInput("predict-long-name", "PNG with a 254-byte file name", "predict", "accepted",
             "derived file names shortened (readable start + hash)", _write_predict_long_name),
    BadInput("predict-dicom-rescale-comma", "2D DICOM with RescaleSlope '0,5' (decimal comma)", "predict", "skipped",
             "malformed DICOM header: RescaleSlope '0,5' is not a number", _write_predict_dicom_rescale_comma),
    BadInput("predict-too-many-pixels", "64x64 PNG with --max-pixels 2000", "predict", "skipped",
             "above the limit of 2,000 pixels", _write_predict_too_many_pixels),
    BadInput("predict-cmyk-jpeg", "CMYK JPEG (as Adobe tools save it)", "predict", "accepted",
             "read through its colours, as `prepare` reads it",
             _predict_file("ink.jpg", lambda: _cmyk_jpeg(), accepted=True)),
    BadInput("predict-exif-rotated", "JPEG with EXIF orientation 6 (a phone photo)", "predict", "accepted",
             "predicted as displayed (EXIF orientation applied); the mask in the displayed orientation",
             _predict_file("photo.jpg", lambda: _exif_rotated_jpeg(), accepted=True)),
    BadInput("predict-animated-png", "animated PNG (2 frames)", "predict", "skipped",
             "multi-page or animated image (2 frames)", _predict_file("cine.png", lambda: _animated_png())),
    BadInput("predict-palette-colour-dicom", "PALETTE COLOR DICOM (pydicom's examples_palette.dcm)", "predict",
             "accepted", "read through its colour lookup table",
             _predict_pydicom_file("examples_palette.dcm", accepted=True)),
    BadInput("predict-rtdose", "RT dose grid DICOM (pydicom's rtdose.dcm)", "predict", "skipped",
             "DICOM RTDOSE object (an RT dose grid), not an image to predict", _predict_pydicom_file("rtdose.dcm")),
    BadInput("predict-rtstruct", "RT structure set without the file preamble (pydicom's rtstruct.dcm)", "predict",
             "skipped", "DICOM RTSTRUCT object (an RT structure set), not an image to predict",
             _predict_pydicom_file("rtstruct.dcm")),
    BadInput("predict-dicom-spacing-comma", "DICOM with PixelSpacing '0,3125\\0,3125' (decimal commas)", "predict",
             "accepted", "predicted; no mm figures, `spacing_note` quotes the value (never 1 x 1 mm)",
             _write_predict_dicom_spacing_comma),
    BadInput("predict-series-position-comma", "DICOM series with ImagePositionPatient '0\\0\\2,5' in one slice",
             "predict", "skipped", "ImagePositionPatient '0\\0\\2,5' is not 3 numbers",
             _write_predict_series_position_comma),
]


def _rgba() -> np.ndarray:
    return np.dstack([_grey()] * 3 + [np.full((32, 32), 200, np.uint8)])


def _cmyk_jpeg() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.stack([_grey()] * 3, -1)).convert("CMYK").save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _exif_rotated_jpeg() -> bytes:
    import io

    from PIL import Image

    image = Image.fromarray(_grey(size=40)[:, :30])   # 30 wide, 40 high as stored; 40 x 30 as displayed
    exif = image.getexif()
    exif[0x0112] = 6   # Orientation: rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    return buffer.getvalue()


def _animated_png() -> bytes:
    import io

    from PIL import Image

    frames = [Image.fromarray(_grey(seed)) for seed in (7, 8)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "PNG", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def _multi_page_tiff() -> bytes:
    import io

    from PIL import Image

    pages = [Image.fromarray(_grey(seed)) for seed in (7, 8)]
    buffer = io.BytesIO()
    pages[0].save(buffer, "TIFF", save_all=True, append_images=pages[1:])
    return buffer.getvalue()


def _palette_png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.stack([_grey()] * 3, -1)).convert("P", palette=Image.Palette.ADAPTIVE).save(buffer, "PNG")
    return buffer.getvalue()


def _palette_mask(lesion: np.ndarray) -> bytes:
    import io

    from PIL import Image

    img = Image.fromarray((lesion * 255).astype(np.uint8)).convert("P")
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return buffer.getvalue()


def bad_input_table() -> str:
    """The README table of ``BAD_INPUTS``: one Markdown row per case (case, command, result, message)."""
    rows = ["| Case | Command | Result | Message (fragment) or handling |", "|---|---|---|---|"]
    for case in BAD_INPUTS:
        result = {"skipped": "skipped, listed; the rest goes on", "error": "stops with an error",
                  "accepted": "accepted"}[case.outcome]
        message = case.message.replace("|", "\\|")
        rows.append(f"| {case.case.replace('|', '/')} | `{case.command}` | {result} | "
                    f"{'`' + message + '`' if case.outcome != 'accepted' else message} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(bad_input_table())
