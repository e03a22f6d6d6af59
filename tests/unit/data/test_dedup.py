"""Duplicate search (``pipeline.data.dedup``): planted copies found, distinct images not; reports and curation."""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from scipy import ndimage

from pipeline.cli import main
from pipeline.data.datalist import load_datalist, validate_datalist
from pipeline.data.dedup import (
    DEFAULT_SSIM_THRESHOLD,
    candidate_pairs,
    cluster_ids,
    find_duplicates,
    scan_duplicates,
    thumbnail,
    thumbnail_ssim,
)
from pipeline.data.curate import run_dedup
from pipeline.data.splits import check_splits
from pipeline.data.synthetic_us import US_CLASSES, make_us_case

# ---------------------------------------------------------------------------------------------------------- helpers


def _lesion_image(seed: int, cls: str = "benign", size=(128, 128)) -> np.ndarray:
    return make_us_case(np.random.default_rng([seed, 7]), cls, size)[0]


def _speckle_image(seed: int, size=(128, 128)) -> np.ndarray:
    """Fully developed speckle (Rayleigh magnitude of a filtered complex field) on a smooth depth ramp."""
    rng = np.random.default_rng([seed, 11])
    re = ndimage.gaussian_filter(rng.standard_normal(size), (1.0, 1.6))
    im = ndimage.gaussian_filter(rng.standard_normal(size), (1.0, 1.6))
    amp = np.hypot(re, im)
    ramp = np.linspace(1.0, 0.6, size[0])[:, None]
    return np.clip(amp / amp.mean() * ramp * 90, 0, 255).astype(np.uint8)


def _save(path: Path, image: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, **kwargs)
    return path


def _noisy(image: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, image.shape)
    return np.clip(image.astype(float) + noise, 0, 255).round().astype(np.uint8)


def _rescaled(image: np.ndarray, factor: float, back: bool = False) -> np.ndarray:
    h, w = image.shape
    img = Image.fromarray(image).resize((round(w * factor), round(h * factor)), Image.Resampling.BICUBIC)
    if back:
        img = img.resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(img)


def _resave_with_metadata(src: Path, dst: Path) -> Path:
    """The same pixels in another PNG file: RGB instead of grey, extra text chunk, other compression."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "another scanner export")
    grey = np.asarray(Image.open(src))
    Image.fromarray(np.repeat(grey[..., None], 3, axis=2)).save(dst, pnginfo=info, compress_level=1)
    return dst


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Distinct lesion and speckle images plus planted copies (also one with scanner marks).

    Returns ``(paths by name, expected clusters as sets of names)``.
    """
    root = tmp_path_factory.mktemp("planted")
    paths: dict[str, Path] = {}
    for i in range(12):
        paths[f"lesion{i}"] = _save(root / f"lesion{i}.png", _lesion_image(i, US_CLASSES[i % 3]))
    for i in range(6):
        paths[f"speckle{i}"] = _save(root / f"speckle{i}.png", _speckle_image(i))
    l1 = np.asarray(Image.open(paths["lesion1"]))
    l2 = np.asarray(Image.open(paths["lesion2"]))
    s0 = np.asarray(Image.open(paths["speckle0"]))
    paths["l0_exact"] = Path(shutil.copyfile(paths["lesion0"], root / "l0_exact.png"))
    paths["l0_resaved"] = _resave_with_metadata(paths["lesion0"], root / "l0_resaved.png")
    paths["l1_noisy"] = _save(root / "l1_noisy.png", _noisy(l1, 5, seed=1))
    paths["l1_down"] = _save(root / "l1_down.png", _rescaled(l1, 0.8))
    paths["l2_up"] = _save(root / "l2_up.png", _rescaled(l2, 1.25))
    paths["l2_back"] = _save(root / "l2_back.png", _rescaled(l2, 0.8, back=True))
    paths["l2_jpeg"] = _save(root / "l2_jpeg.jpg", l2, quality=75)
    paths["s0_jpeg"] = _save(root / "s0_jpeg.jpg", s0, quality=75)
    brighter = np.clip(_lesion_image(3, "normal").astype(int) + 8, 0, 255).astype(np.uint8)
    paths["l3_bright"] = _save(root / "l3_bright.png", brighter)
    marked = np.asarray(Image.open(paths["lesion4"])).copy()
    marked[40, 30:41] = marked[35:46, 35] = 255  # a caliper cross
    marked[2:6, 90:120] = 240  # a text block
    paths["l4_marked"] = _save(root / "l4_marked.png", marked)
    expected = [
        {"lesion0", "l0_exact", "l0_resaved"},
        {"lesion1", "l1_noisy", "l1_down"},
        {"lesion2", "l2_up", "l2_back", "l2_jpeg"},
        {"speckle0", "s0_jpeg"},
        {"lesion3", "l3_bright"},
        {"lesion4", "l4_marked"},
    ]
    return paths, expected


def _named_clusters(clusters: list[list[int]], names: list[str]) -> list[set[str]]:
    return [{names[i] for i in c} for c in clusters]


# ------------------------------------------------------------------------------------------------- find_duplicates


def test_planted_copies_found_and_nothing_else(planted):
    paths, expected = planted
    names = list(paths)
    clusters = find_duplicates(list(paths.values()))
    found = _named_clusters(clusters, names)
    assert sorted(map(sorted, found)) == sorted(map(sorted, expected))
    # clusters are ascending index lists ordered by their first index
    assert all(c == sorted(c) and len(c) >= 2 for c in clusters)
    assert [c[0] for c in clusters] == sorted(c[0] for c in clusters)


def test_distinct_images_are_not_clustered():
    """Different synthetic lesions of every class and size, and different speckle fields, stay apart."""
    images = [_lesion_image(100 + i, US_CLASSES[i % 3], (128, 128) if i % 2 else (96, 144)) for i in range(24)]
    images += [_speckle_image(100 + i) for i in range(8)]
    thumbs = [thumbnail(x) for x in images]
    worst = max(thumbnail_ssim(a, b) for i, a in enumerate(thumbs) for b in thumbs[i + 1 :])
    assert worst < DEFAULT_SSIM_THRESHOLD - 0.2, worst


def test_distinct_images_not_clustered_on_disk(tmp_path):
    paths = [_save(tmp_path / f"l{i}.png", _lesion_image(200 + i, US_CLASSES[i % 3])) for i in range(15)]
    paths += [_save(tmp_path / f"s{i}.png", _speckle_image(200 + i)) for i in range(5)]
    assert find_duplicates(paths) == []
    assert cluster_ids(paths) == list(range(len(paths)))


def test_resaved_copy_is_exact_by_pixels_not_bytes(planted):
    paths, _ = planted
    a, b = paths["lesion0"], paths["l0_resaved"]
    assert a.read_bytes() != b.read_bytes()
    scan = scan_duplicates([a, b, paths["l1_noisy"]])
    assert scan.clusters == [[0, 1]]
    assert scan.pixel_hash[0] == scan.pixel_hash[1] != scan.pixel_hash[2]
    assert scan.has_exact_copy(1, [0, 1]) and scan.pair_ssim(0, 1) == 1.0


def test_exact_copy_of_a_near_duplicate(tmp_path):
    """An exact copy takes the SSIM of the image it copies, not of the cluster's first member."""
    a = _lesion_image(1)
    b = _noisy(a, 4, seed=1)
    scan = scan_duplicates([_save(tmp_path / "a.png", a), _save(tmp_path / "b.png", b), _save(tmp_path / "c.png", b)])
    assert scan.clusters == [[0, 1, 2]]
    assert scan.pair_ssim(1, 2) == 1.0
    assert scan.pair_ssim(0, 2) == scan.pair_ssim(0, 1) < 1.0
    assert not scan.has_exact_copy(0, [0, 1, 2]) and scan.has_exact_copy(2, [0, 1, 2])


def test_copies_score_well_above_threshold(planted):
    paths, _ = planted
    orig = thumbnail(np.asarray(Image.open(paths["lesion1"])))
    for name in ("l1_noisy", "l1_down"):
        copy = thumbnail(np.asarray(Image.open(paths[name]).convert("L")))
        assert thumbnail_ssim(orig, copy) > DEFAULT_SSIM_THRESHOLD + 0.05, name


def test_threshold_argument(planted):
    paths, _ = planted
    names = ["lesion0", "l0_exact", "lesion1", "l1_noisy"]
    # at SSIM 1.0 only pixel-identical images remain duplicates
    assert find_duplicates([paths[n] for n in names], threshold=1.0) == [[0, 1]]
    assert find_duplicates([paths[n] for n in names]) == [[0, 1], [2, 3]]
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="threshold"):
            find_duplicates([paths[n] for n in names], threshold=bad)


def test_prefilter_keeps_copies_and_bounds_comparisons(planted):
    paths, expected = planted
    names = list(paths)
    scan = scan_duplicates(list(paths.values()))
    n_reps = len(names) - 2  # the exact and the re-saved copy of lesion0 are not compared again
    assert 0 < scan.n_candidates <= n_reps * 10
    # every planted near-duplicate pair was a candidate
    index = {n: i for i, n in enumerate(names)}
    for group in expected:
        members = sorted(index[n] for n in group if n not in ("l0_exact", "l0_resaved"))
        for other in members:
            compared = [(min(a, other), max(a, other)) in scan.ssim for a in members if a != other]
            assert not compared or any(compared), group


def test_cluster_larger_than_top_k(tmp_path):
    """25 noisy copies of one image (more than the prefilter's 10 partners per image) form one cluster."""
    base = _lesion_image(600, "malignant")
    paths = [_save(tmp_path / f"copy{k:02d}.png", _noisy(base, 3, seed=k)) for k in range(25)]
    paths += [_save(tmp_path / f"other{k}.png", _lesion_image(610 + k, "benign")) for k in range(5)]
    assert find_duplicates(paths) == [list(range(25))]


def test_candidate_pairs_among_many_distinct():
    rng = np.random.default_rng(0)
    base = [ndimage.gaussian_filter(rng.random((64, 64)), 3) for _ in range(300)]
    thumbs = np.stack([thumbnail(x) for x in base] + [thumbnail(base[17] + rng.normal(0, 0.01, (64, 64)))])
    pairs = candidate_pairs(thumbs, top_k=5, min_corr=0.5)
    assert (17, 300) in pairs
    assert len(pairs) <= 301 * 5
    assert all(i < j for i, j in pairs) and pairs == sorted(set(pairs))


def test_cluster_ids_stable_and_ordered(planted):
    paths, _ = planted
    names = list(paths)
    plist = list(paths.values())
    ids = cluster_ids(plist)
    assert ids == cluster_ids(plist)
    assert len(ids) == len(plist)
    # numbered 0, 1, ... in order of first appearance
    seen = []
    for i in ids:
        if i not in seen:
            seen.append(i)
    assert seen == list(range(len(seen)))
    # the partition does not depend on the order of the paths
    rev = cluster_ids(plist[::-1])[::-1]
    partition = {frozenset(n for n, c in zip(names, ids) if c == k) for k in set(ids)}
    partition_rev = {frozenset(n for n, c in zip(names, rev) if c == k) for k in set(rev)}
    assert partition == partition_rev
    assert ids[names.index("lesion0")] == ids[names.index("l0_resaved")] != ids[names.index("lesion1")]


def test_unreadable_files_are_reported_not_fatal(planted, tmp_path):
    paths, _ = planted
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.png"
    plist = [paths["lesion0"], broken, paths["l0_exact"], empty, missing]
    with pytest.warns(UserWarning, match="3 unreadable"):
        clusters = find_duplicates(plist)
    assert clusters == [[0, 2]]
    scan = scan_duplicates(plist)
    assert [i for i, _ in scan.unreadable] == [1, 3, 4]
    assert "empty" in scan.unreadable[1][1] and "not found" in scan.unreadable[2][1]
    with pytest.warns(UserWarning):
        ids = cluster_ids(plist)
    assert ids[0] == ids[2] and len(set(ids)) == 4


def test_empty_and_single_input():
    assert find_duplicates([]) == []
    assert cluster_ids([]) == []


# ------------------------------------------------------------------------------------------------------- run_dedup


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture()
def busi_like(tmp_path):
    """A BUSI-like folder: class folders with masks, a cross-class exact copy and a same-class noisy copy."""
    root = tmp_path / "Dataset_BUSI_with_GT"
    for cls in ("benign", "malignant", "normal"):
        for k in range(1, 4):
            img, mask = make_us_case(np.random.default_rng([300, len(cls), k]), cls, (96, 96))
            _save(root / cls / f"{cls} ({k}).png", img)
            _save(root / cls / f"{cls} ({k})_mask.png", mask.astype(np.uint8) * 255)
    shutil.copyfile(root / "benign" / "benign (1).png", root / "malignant" / "malignant (9).png")
    noisy = _noisy(np.asarray(Image.open(root / "benign" / "benign (2).png")), 4, seed=3)
    _save(root / "benign" / "benign (9).png", noisy)
    return root


def test_run_dedup_folder(busi_like, tmp_path):
    out = tmp_path / "report"
    paths = run_dedup(busi_like, out)
    assert set(paths) == {"duplicates", "conflicts", "unreadable"}
    rows = _read_csv(paths["duplicates"])
    assert not any("_mask" in r["path"] for r in rows)
    by_cluster: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_cluster.setdefault(r["cluster"], []).append(r)
    groups = sorted(sorted(r["path"] for r in members) for members in by_cluster.values())
    assert groups == [
        ["benign/benign (1).png", "malignant/malignant (9).png"],
        ["benign/benign (2).png", "benign/benign (9).png"],
    ]
    kinds = {r["path"]: (r["kind"], float(r["ssim_to_first"]), r["class"]) for r in rows}
    assert kinds["malignant/malignant (9).png"] == ("exact", 1.0, "malignant")
    assert kinds["benign/benign (9).png"][0] == "near"
    assert DEFAULT_SSIM_THRESHOLD <= kinds["benign/benign (9).png"][1] < 1.0
    conflicts = _read_csv(paths["conflicts"])
    assert len(conflicts) == 1
    assert conflicts[0]["classes"] == "benign:1;malignant:1"
    assert conflicts[0]["paths"] == "benign/benign (1).png;malignant/malignant (9).png"
    assert _read_csv(paths["unreadable"]) == []


def test_run_dedup_folder_default_output_and_curate_refused(busi_like):
    paths = run_dedup(busi_like)
    assert paths["duplicates"].parent == busi_like.parent / f"{busi_like.name}_dedup"
    with pytest.raises(ValueError, match="curate"):
        run_dedup(busi_like, curate="keep-one")
    with pytest.raises(ValueError, match="curate"):
        run_dedup(busi_like, curate="drop-some")


def test_run_dedup_missing_input(tmp_path):
    from pipeline.data.io import DataError

    with pytest.raises(DataError, match="not found"):
        run_dedup(tmp_path / "nothing_here")


def _write_datalist(root: Path) -> tuple[Path, dict[str, int]]:
    """A datalist with 10 distinct images, a consistent triple, a cross-class pair and a test copy.

    Items without patient id have no group (None) or a ``cluster_*`` group; two carry patient ids.
    """
    images = root / "images"
    items, test = [], []
    classes = ["benign", "malignant"]
    for i in range(10):
        cls = i % 2
        _save(images / f"img{i:02d}.png", _lesion_image(400 + i, classes[cls]))
        group = f"patient{i}" if i < 2 else (None if i % 3 else f"cluster_{i:05d}")
        items.append(
            {"image": f"images/img{i:02d}.png", "label": "", "cls": cls, "group": group, "fold": i % 5, "source": "t"}
        )
    base = _lesion_image(500, "benign")
    _save(images / "tripleA.png", base)
    _save(images / "tripleB.png", _noisy(base, 4, seed=5))
    _save(images / "tripleC.png", _rescaled(base, 1.25))
    for name, fold in (("tripleA", 0), ("tripleB", 3), ("tripleC", 4)):  # a duplicate cluster straddling folds
        items.append({"image": f"images/{name}.png", "label": "", "cls": 0, "group": None, "fold": fold, "source": "t"})
    other = _lesion_image(501, "malignant")
    _save(images / "conflict1.png", other)
    _save(images / "conflict2.png", other)
    items.append({"image": "images/conflict1.png", "label": "", "cls": 0, "group": None, "fold": 1, "source": "t"})
    items.append({"image": "images/conflict2.png", "label": "", "cls": 1, "group": None, "fold": 2, "source": "t"})
    _save(images / "test0.png", _lesion_image(502, "benign"))
    _save(images / "test0_copy.png", _rescaled(_lesion_image(502, "benign"), 0.8, back=True))
    test.append({"image": "images/test0.png", "label": "", "cls": 0, "group": "tp", "source": "t"})
    test.append({"image": "images/test0_copy.png", "label": "", "cls": 0, "group": "tp", "source": "t"})
    datalist = {"name": "planted", "modality": "US", "classes": classes, "training": items, "test": test}
    validate_datalist(datalist)
    path = root / "datalist.json"
    path.write_text(json.dumps(datalist, indent=2))
    return path, {"training": len(items), "test": len(test)}


def test_run_dedup_datalist_report(tmp_path):
    path, _ = _write_datalist(tmp_path)
    paths = run_dedup(path)
    assert paths["duplicates"].parent == tmp_path  # beside the datalist
    rows = _read_csv(paths["duplicates"])
    clusters: dict[str, set[str]] = {}
    for r in rows:
        clusters.setdefault(r["cluster"], set()).add(r["path"])
    assert sorted(map(sorted, clusters.values())) == [
        ["images/conflict1.png", "images/conflict2.png"],
        ["images/test0.png", "images/test0_copy.png"],
        ["images/tripleA.png", "images/tripleB.png", "images/tripleC.png"],
    ]
    conflicts = _read_csv(paths["conflicts"])
    assert [c["paths"] for c in conflicts] == ["images/conflict1.png;images/conflict2.png"]
    assert conflicts[0]["classes"] == "benign:1;malignant:1"


@pytest.mark.parametrize("mode, dropped", [("keep-one", 4), ("drop-all", 5)])
def test_curate(tmp_path, mode, dropped):
    path, counts = _write_datalist(tmp_path)
    original = json.loads(path.read_text())
    paths = run_dedup(path, curate=mode)
    curated = load_datalist(paths["datalist"])  # valid per the contract
    kept = [item["image"] for item in curated["training"] + curated["test"]]
    assert len(kept) == counts["training"] + counts["test"] - dropped
    assert len(set(kept)) == len(kept)
    # the first of each cluster (by path) is kept; conflicting clusters go entirely with drop-all
    assert "images/tripleA.png" in kept and "images/tripleB.png" not in kept and "images/tripleC.png" not in kept
    assert "images/test0.png" in kept and "images/test0_copy.png" not in kept
    assert ("images/conflict1.png" in kept) == (mode == "keep-one")
    assert "images/conflict2.png" not in kept
    # folds kept; patient ids kept; items without one get their duplicate cluster
    before = {item["image"]: item for item in original["training"]}
    for item in curated["training"]:
        assert item["fold"] == before[item["image"]]["fold"]
        if str(before[item["image"]]["group"]).startswith("patient"):
            assert item["group"] == before[item["image"]]["group"]
        else:
            assert item["group"].startswith("cluster_")
    groups = [item["group"] for item in curated["training"]]
    assert len(set(groups)) == len(groups)  # one image per duplicate cluster remains
    assert check_splits(curated)["ok"]
    assert curated["curation"]["mode"] == mode and curated["curation"]["dropped"] == dropped
    for item in curated["training"] + curated["test"]:
        assert (paths["datalist"].parent / item["image"]).is_file()


def test_curate_into_another_folder_rebases_paths(tmp_path):
    path, _ = _write_datalist(tmp_path / "data")
    out = tmp_path / "elsewhere" / "report"
    paths = run_dedup(path, out, curate="keep-one")
    curated = load_datalist(paths["datalist"])
    assert paths["datalist"].parent == out
    for item in curated["training"] + curated["test"]:
        assert (out / item["image"]).is_file(), item["image"]


def test_curate_is_deterministic(tmp_path):
    path, _ = _write_datalist(tmp_path)
    first = run_dedup(path, tmp_path / "a", curate="drop-all")["datalist"].read_text()
    second = run_dedup(path, tmp_path / "b", curate="drop-all")["datalist"].read_text()
    strip = lambda text: {k: v for k, v in json.loads(text).items() if k != "curation"}  # noqa: E731
    assert strip(first) == strip(second)


def test_run_dedup_datalist_with_missing_image(tmp_path):
    path, counts = _write_datalist(tmp_path)
    (tmp_path / "images" / "img05.png").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # run_dedup reports in unreadable.csv, it does not warn
        paths = run_dedup(path, curate="keep-one")
    rows = _read_csv(paths["unreadable"])
    assert [r["path"] for r in rows] == ["images/img05.png"] and "not found" in rows[0]["problem"]
    curated = load_datalist(paths["datalist"])
    assert len(curated["training"]) + len(curated["test"]) == counts["training"] + counts["test"] - 4


# ------------------------------------------------------------------------------------------------------------- CLI


def test_cli_dedup(busi_like, tmp_path, capsys):
    out = tmp_path / "cli_report"
    assert main(["dedup", "--input", str(busi_like), "--output", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert Path(printed["duplicates"]) == out / "duplicates.csv" and (out / "conflicts.csv").is_file()


def test_cli_dedup_curate(tmp_path, capsys):
    path, _ = _write_datalist(tmp_path)
    assert main(["dedup", "--input", str(path), "--curate", "drop-all", "--threshold", "0.8"]) == 0
    assert (tmp_path / "datalist_curated.json").is_file()
    capsys.readouterr()
    assert main(["dedup", "--input", str(tmp_path / "images"), "--curate", "keep-one"]) == 2
    assert "curate" in capsys.readouterr().err
