"""Synthetic breast ultrasound generator: BUSI layout, file formats, determinism, and that the class cues exist
but are not trivial."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage.measure import regionprops
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.data.synthetic_busi import class_counts, make_us_dataset
from pipeline.data.synthetic_us import US_CLASSES, make_us_case

N = 120
SIZE = (96, 96)  # small images keep the module fast; the cues are checked on these
NAME = re.compile(r"^(normal|benign|malignant) \((\d+)\)(_mask(_1)?)?\.png$")


@pytest.fixture(scope="module")
def busi(tmp_path_factory) -> Path:
    return make_us_dataset(tmp_path_factory.mktemp("synth_us"), n=N, seed=0, size=SIZE)


def _grey(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.mode == "RGB", path
        rgb = np.asarray(img)
    assert rgb.dtype == np.uint8
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all(), f"{path} is not grey"
    return rgb[..., 0]


def _mask(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.mode == "L", path
        m = np.asarray(img)
    assert m.dtype == np.uint8
    assert set(np.unique(m)) <= {0, 255}, f"{path} is not 0/255"
    return m > 0


def _cases(root: Path, cls: str):
    """(image, union of masks, has _mask_1) of every case of ``cls``."""
    count = class_counts(N)[cls]
    for k in range(1, count + 1):
        img = _grey(root / cls / f"{cls} ({k}).png")
        mask = _mask(root / cls / f"{cls} ({k})_mask.png")
        extra = root / cls / f"{cls} ({k})_mask_1.png"
        if extra.exists():
            mask = mask | _mask(extra)
        yield img, mask, extra.exists()


def _shape_features(root: Path):
    feats, labels = [], []
    for label, cls in enumerate(("benign", "malignant")):
        for img, mask, _ in _cases(root, cls):
            props = regionprops(mask.astype(np.uint8))[0]
            height, width = props.bbox[2] - props.bbox[0], props.bbox[3] - props.bbox[1]
            feats.append([img[mask].mean(), mask.sum(), props.solidity, height / width])
            labels.append(label)
    return np.array(feats), np.array(labels)


# ----------------------------------------------------------------------------------------------------------------------
# layout and formats


def test_layout_and_counts(busi):
    assert busi.name == "Dataset_BUSI_with_GT"
    assert sorted(p.name for p in busi.iterdir()) == sorted([*US_CLASSES, "SYNTHETIC.json"])
    counts = class_counts(N)
    assert counts == {"normal": 24, "benign": 54, "malignant": 42}
    for cls in US_CLASSES:
        names = sorted(p.name for p in (busi / cls).iterdir())
        for name in names:
            m = NAME.match(name)
            assert m and m.group(1) == cls, name
        images = [n for n in names if "_mask" not in n]
        assert sorted(images) == sorted(f"{cls} ({k}).png" for k in range(1, counts[cls] + 1))
        for image in images:
            assert image.replace(".png", "_mask.png") in names


def test_class_counts_follow_fractions():
    assert class_counts(60) == {"normal": 12, "benign": 27, "malignant": 21}
    assert class_counts(1) == {"normal": 0, "benign": 1, "malignant": 0}
    assert class_counts(7, (0.0, 0.5, 0.5)) == {"normal": 0, "benign": 4, "malignant": 3}
    for n in (1, 2, 3, 10, 33, 101):
        assert sum(class_counts(n, (0.3, 0.3, 0.4)).values()) == n


def test_images_grey_rgb_and_masks_binary(busi):
    for cls in US_CLASSES:
        for img, mask, _ in _cases(busi, cls):
            assert img.shape == mask.shape == SIZE
            assert img.std() > 10, "image should not be flat"
            if cls == "normal":
                assert not mask.any()
            else:
                assert mask.sum() >= 12


def test_multi_masks_split_a_lesion(busi):
    seen = 0
    for ci, cls in enumerate(US_CLASSES):
        for k in range(1, class_counts(N)[cls] + 1):
            extra = busi / cls / f"{cls} ({k})_mask_1.png"
            if not extra.exists():
                continue
            assert cls != "normal"
            seen += 1
            first, second = _mask(busi / cls / f"{cls} ({k})_mask.png"), _mask(extra)
            assert first.any() and second.any() and not (first & second).any()
            union = first | second
            # each part alone is only part of the lesion; the union is the whole documented case mask
            _, full = make_us_case(np.random.default_rng([0, ci, k]), cls, SIZE)
            assert (union == full).all()
            labels, n_parts = ndimage.label(union)
            assert np.bincount(labels.ravel())[1:].max() >= 0.8 * union.sum(), "union should be one lesion"
    n_lesions = class_counts(N)["benign"] + class_counts(N)["malignant"]
    assert 1 <= seen <= 0.2 * n_lesions


def test_small_dataset_has_one_multi_mask_and_any_size(tmp_path):
    root = make_us_dataset(tmp_path, n=10, seed=3, size=(48, 80))
    assert len(list(root.glob("*/*_mask_1.png"))) == 1
    img = _grey(root / "benign" / "benign (1).png")
    assert img.shape == (48, 80)
    one = make_us_dataset(tmp_path / "one", n=1, seed=0, size=32)
    assert [p.name for p in one.glob("*/*.png")] and not list(one.glob("*/*_mask_1.png"))


# ----------------------------------------------------------------------------------------------------------------------
# determinism


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = _snapshot(make_us_dataset(tmp_path / "a", n=12, seed=7, size=(64, 64)))
    b = _snapshot(make_us_dataset(tmp_path / "b", n=12, seed=7, size=(64, 64)))
    c = _snapshot(make_us_dataset(tmp_path / "c", n=12, seed=8, size=(64, 64)))
    assert a == b
    shared = set(a) & set(c)
    assert shared and any(a[name] != c[name] for name in shared if not name.endswith("_mask.png"))


def test_make_us_case_deterministic_and_typed():
    for cls in US_CLASSES:
        img1, mask1 = make_us_case(np.random.default_rng(5), cls, (96, 160))
        img2, mask2 = make_us_case(np.random.default_rng(5), cls, (96, 160))
        assert img1.dtype == np.uint8 and img1.shape == (96, 160)
        assert mask1.dtype == bool and mask1.shape == (96, 160)
        assert (img1 == img2).all() and (mask1 == mask2).all()
        assert mask1.any() == (cls != "normal")


# ----------------------------------------------------------------------------------------------------------------------
# realism: the cues exist, and are not trivial


def test_lesions_are_hypoechoic(busi):
    ratios = []
    for cls in ("benign", "malignant"):
        for img, mask, _ in _cases(busi, cls):
            ring = ndimage.binary_dilation(mask, iterations=6) & ~ndimage.binary_dilation(mask, iterations=2)
            ring &= img > 0  # inside the field of view
            ratios.append(img[mask].mean() / img[ring].mean())
    ratios = np.array(ratios)
    assert np.mean(ratios < 1) >= 0.95
    assert ratios.mean() < 0.6


def test_malignant_taller_and_less_convex(busi):
    x, y = _shape_features(busi)
    solidity, aspect = x[:, 2], x[:, 3]  # aspect = height / width of the bounding box
    assert aspect[y == 1].mean() > 1.0 > aspect[y == 0].mean()
    assert solidity[y == 1].mean() < solidity[y == 0].mean() - 0.05
    # overlap on purpose: some benign are not wider than tall, some malignant are
    assert (aspect[y == 0] >= 1).any() and (aspect[y == 1] < 1).any()


def test_naive_features_do_not_separate_but_shape_does(busi):
    x, y = _shape_features(busi)
    cv = StratifiedKFold(5, shuffle=True, random_state=0)

    def accuracy(cols):
        clf = make_pipeline(StandardScaler(), LogisticRegression())
        return cross_val_score(clf, x[:, cols], y, cv=cv).mean(), clf.fit(x[:, cols], y).score(x[:, cols], y)

    chance = max(np.mean(y), 1 - np.mean(y))
    naive_cv, naive_fit = accuracy([0, 1])  # mean lesion intensity, area
    shape_cv, _ = accuracy([2, 3])  # solidity, aspect ratio
    assert naive_fit < 1.0 and naive_cv < 0.85
    assert shape_cv >= chance + 0.15 and shape_cv > naive_cv


# ----------------------------------------------------------------------------------------------------------------------
# argument validation


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"n": 0}, "n"),
        ({"n": 2.5}, "n"),
        ({"n": True}, "n"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"size": (31, 128)}, "size"),
        ({"size": (128,)}, "size"),
        ({"size": (128.0, 128)}, "size"),
        ({"class_fractions": (0.2, 0.4, 0.3)}, "class_fractions"),
        ({"class_fractions": (-0.2, 0.6, 0.6)}, "class_fractions"),
        ({"class_fractions": (0.5, 0.5)}, "class_fractions"),
        ({"class_fractions": (float("nan"), 0.5, 0.5)}, "class_fractions"),
    ],
)
def test_bad_arguments_raise(tmp_path, kwargs, word):
    with pytest.raises(ValueError, match=rf"^{word} "):
        make_us_dataset(tmp_path, **kwargs)
    assert not (tmp_path / "Dataset_BUSI_with_GT").exists(), "validate before writing anything"


def test_make_us_case_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="cls"):
        make_us_case(rng, "cyst", (64, 64))
    with pytest.raises(ValueError, match="size"):
        make_us_case(rng, "benign", (16, 64))
    with pytest.raises(ValueError, match="rng"):
        make_us_case(0, "benign", (64, 64))


def test_prepared_synthetic_data_is_labelled_synthetic_not_busi(busi, tmp_path):
    """The BUSI layout is borrowed, BUSI's name, licence and citation are not: dataset.json and the datalist say
    synthetic, for MR (NIfTI) too."""
    import json

    from pipeline.data.prepare import prepare
    from pipeline.data.synthetic import make_mr_dataset

    _, paths = prepare("busi", busi.parent, tmp_path / "us", n_folds=3)
    dataset = json.loads(paths["dataset"].read_text())
    assert dataset["synthetic"] is True and dataset["name"] == "synthetic_us"
    assert "Synthetic US data" in dataset["description"] and "BUSI layout" in dataset["description"]
    assert dataset["citation"] == "" and "CC0" not in dataset["license"]
    assert json.loads(paths["datalist"].read_text())["name"] == "synthetic_us"

    mr = make_mr_dataset(tmp_path / "mr_raw", n=2, seed=0, shape=(32, 32, 6))
    _, paths = prepare("nifti", mr, tmp_path / "mr", n_folds=2, negative_slices=1)
    assert json.loads(paths["dataset"].read_text())["name"] == "synthetic_mr"
