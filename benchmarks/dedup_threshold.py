"""Measure the SSIM of planted copies against distinct images, to choose ``pipeline.data.dedup.DEFAULT_SSIM_THRESHOLD``.

Two data sets:

* synthetic ultrasound-like images (``pipeline.data.synthetic_us.make_us_case`` when it is there, else a small speckle
  generator here), so the numbers are reproducible anywhere;
* BUS-BRA (``--busbra``, default ``../shared/data/BUSBRA``; read in place, never copied), whose ``bus_data.csv`` gives
  the patient (``Case``) of every image, so distinct images of different patients can be told from images of one
  patient (left/right views of one lesion may genuinely look alike).

Every copy is made in memory from an original: exact re-save (pixel-identical), Gaussian noise (sigma 5 and 10 grey
levels), rescaled by 0.8 / 1.25 (kept at that size, or brought back to the original size), JPEG at quality 75,
brightness +-10 grey levels (an offset, clipped to 0..255) and gain 0.9 / 1.1. The SSIM is the one ``dedup`` uses
(``thumbnail`` + ``thumbnail_ssim``: 64x64 anti-aliased thumbnails). Crops and scanner marks are reported too, for
information: the threshold is not chosen for them.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dedup_threshold.py [--busbra DIR] [--n-synthetic 120]
        [--n-planted 200] [--n-random-pairs 20000] [--exhaustive 300] [--n-end-to-end 120] [--seed 0]
"""

from __future__ import annotations

import argparse
import io
import itertools
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.data.dedup import (  # noqa: E402
    DEFAULT_MIN_CORR,
    DEFAULT_SSIM_THRESHOLD,
    DEFAULT_TOP_K,
    _components,
    candidate_pairs,
    scan_duplicates,
    thumbnail,
    thumbnail_ssim,
)
from pipeline.data.io import read_grey  # noqa: E402

PERCENTILES = (0, 1, 5, 50, 95, 99, 100)


# ---------------------------------------------------------------------------------------------------------- copies
def _resize(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((shape[1], shape[0]), Image.Resampling.BICUBIC))


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("L"))


def planted_copies(img: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Transformed copies of a uint8 grey image, by transform name."""
    h, w = img.shape
    f32 = img.astype(np.float32)
    copies = {"resaved": img.copy()}
    for sigma in (5, 10):
        copies[f"noise{sigma}"] = np.clip(f32 + rng.normal(0, sigma, img.shape), 0, 255).round().astype(np.uint8)
    for factor in (0.8, 1.25):
        scaled = _resize(img, (max(8, round(h * factor)), max(8, round(w * factor))))
        copies[f"scale{factor}"] = scaled
        copies[f"scale{factor}_back"] = _resize(scaled, (h, w))
    copies["jpeg75"] = _jpeg(img, 75)
    for delta in (10, -10):
        copies[f"bright{delta:+d}"] = np.clip(f32 + delta, 0, 255).astype(np.uint8)
    for gain in (0.9, 1.1):
        copies[f"gain{gain}"] = np.clip(f32 * gain, 0, 255).round().astype(np.uint8)
    return copies


def harder_edits(img: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Edits the threshold is not chosen for (reported for information): crops and scanner-like marks."""
    h, w = img.shape
    edits = {}
    for pct in (2, 5):
        dy, dx = max(1, round(h * pct / 100)), max(1, round(w * pct / 100))
        edits[f"crop{pct}%"] = img[dy : h - dy, dx : w - dx].copy()
    marked = img.copy()
    for _ in range(2):  # caliper crosses
        y, x = int(rng.integers(h // 4, 3 * h // 4)), int(rng.integers(w // 4, 3 * w // 4))
        arm = max(2, min(h, w) // 40)
        marked[y, max(0, x - arm) : x + arm + 1] = 255
        marked[max(0, y - arm) : y + arm + 1, x] = 255
    marked[2 : 2 + max(3, h // 40), 2 : 2 + w // 5] = 230  # a text block
    edits["marks"] = marked
    return edits


# ------------------------------------------------------------------------------------------------------- synthetic
def _fallback_us_case(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A speckled ultrasound-like image: tissue layers, one hypoechoic elliptical lesion with posterior shadow."""
    from scipy.ndimage import gaussian_filter

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    profile = gaussian_filter(rng.normal(0, 1, size), size / 16)  # echogenicity of horizontal tissue layers
    tissue = 0.5 + 0.15 * np.tile((profile / (profile.std() + 1e-6))[:, None], (1, size))
    tissue = tissue + 0.1 * gaussian_filter(rng.normal(0, 1, (size, size)), 12)
    cy, cx = rng.uniform(0.3, 0.7) * size, rng.uniform(0.25, 0.75) * size
    ry, rx = rng.uniform(0.06, 0.18) * size, rng.uniform(0.08, 0.25) * size
    angle = rng.uniform(0, np.pi)
    u = ((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) / rx
    v = (-(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)) / ry
    lesion = (u**2 + v**2) <= 1
    tissue[lesion] *= rng.uniform(0.15, 0.4)
    shadow = (np.abs(xx - cx) < rx * 0.8) & (yy > cy + ry)
    tissue[shadow] *= rng.uniform(0.5, 0.9)
    speckle = gaussian_filter(rng.rayleigh(1.0, (size, size)), 0.8)
    img = tissue * speckle * (1 - 0.4 * yy / size)
    return np.clip(img / np.percentile(img, 99.5) * 230, 0, 255).astype(np.uint8)


def synthetic_images(n: int, seed: int) -> tuple[list[np.ndarray], str]:
    """``n`` synthetic images: the project's generator (classes and sizes in turn) when present, else the fallback."""
    try:
        from pipeline.data.synthetic_us import US_CLASSES, make_us_case
    except ImportError:
        rng = np.random.default_rng(seed)
        return [_fallback_us_case(rng) for _ in range(n)], "fallback speckle generator (benchmarks/dedup_threshold.py)"
    sizes = ((128, 128), (160, 208))
    images = [
        make_us_case(np.random.default_rng([seed, i]), US_CLASSES[i % 3], sizes[(i // 3) % 2])[0] for i in range(n)
    ]
    return images, "pipeline.data.synthetic_us.make_us_case (128x128 and 160x208)"


# ------------------------------------------------------------------------------------------------------- reporting
def describe(name: str, values) -> dict[str, float]:
    values = np.asarray(list(values), dtype=np.float64)
    if values.size == 0:
        print(f"  {name:<44} (none)")
        return {}
    pct = np.percentile(values, PERCENTILES)
    cells = "  ".join(f"{v:7.3f}" for v in pct)
    print(f"  {name:<44} n={values.size:<7d} {cells}")
    return dict(zip(PERCENTILES, pct))


def header() -> None:
    cells = "  ".join(f"{('min' if p == 0 else 'max' if p == 100 else f'p{p}'):>7}" for p in PERCENTILES)
    print(f"  {'':<44} {'':<9} {cells}")


def copy_ssims(images: list[np.ndarray], rng: np.random.Generator, make=planted_copies) -> dict[str, list[float]]:
    by_kind: dict[str, list[float]] = defaultdict(list)
    for img in images:
        ref = thumbnail(img)
        for kind, copy in make(img, rng).items():
            by_kind[kind].append(thumbnail_ssim(ref, thumbnail(copy)))
    return by_kind


def report_copies(images: list[np.ndarray], rng: np.random.Generator, label: str) -> list[float]:
    by_kind = copy_ssims(images, rng)
    for kind, values in by_kind.items():
        describe(f"{label} copy: {kind}", values)
    non_exact = [v for kind, vs in by_kind.items() if kind != "resaved" for v in vs]
    describe(f"{label} copies, all but exact", non_exact)
    for kind, values in copy_ssims(images, rng, harder_edits).items():
        describe(f"{label} (not targeted) {kind}", values)
    return non_exact


def run_synthetic(n: int, seed: int) -> tuple[list[float], list[float]]:
    images, origin = synthetic_images(n, seed)
    print(f"\nSynthetic ultrasound: {len(images)} images from {origin}")
    header()
    copies = report_copies(images, np.random.default_rng(seed + 1), "synthetic")
    thumbs = [thumbnail(x) for x in images]
    distinct = [thumbnail_ssim(thumbs[i], thumbs[j]) for i, j in itertools.combinations(range(len(thumbs)), 2)]
    describe("synthetic distinct pairs (all)", distinct)
    n = len(thumbs)
    nearest = [max(thumbnail_ssim(thumbs[i], thumbs[j]) for j in range(n) if j != i) for i in range(n)]
    describe("synthetic nearest distinct neighbour", nearest)
    return copies, nearest


def run_busbra(root: Path, args: argparse.Namespace) -> tuple[list[float], list[float]] | None:
    import pandas as pd

    table = root / "bus_data.csv"
    if not table.is_file():
        print(f"\nBUS-BRA: {table} not found; skipped")
        return None
    meta = pd.read_csv(table)
    ids = list(meta["ID"])
    case = dict(zip(meta["ID"], meta["Case"]))
    pathology = dict(zip(meta["ID"], meta["Pathology"]))
    paths = [root / "Images" / f"{i}.png" for i in ids]
    rng = np.random.default_rng(args.seed)

    t0, c0 = time.perf_counter(), time.process_time()
    scan = scan_duplicates(paths)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"\nBUS-BRA: {len(paths)} images of {len(set(case.values()))} patients")
    print(
        f"  dedup at threshold {scan.threshold}: {elapsed:.1f} s wall, {cpu:.1f} s CPU (reading included), "
        f"{scan.n_candidates} SSIM "
        f"comparisons after the prefilter (all pairs: {len(paths) * (len(paths) - 1) // 2})"
    )
    cross = [c for c in scan.clusters if len({case[ids[i]] for i in c}) > 1]
    cross_class = [c for c in scan.clusters if len({pathology[ids[i]] for i in c}) > 1]
    exact = [c for c in scan.clusters if any(scan.has_exact_copy(i, c) for i in c)]
    sizes = Counter(len(c) for c in scan.clusters)
    print(
        f"  clusters: {len(scan.clusters)} ({sum(len(c) for c in scan.clusters)} images; "
        f"sizes {dict(sorted(sizes.items()))}); "
        f"{len(scan.clusters) - len(cross)} within one patient, {len(cross)} across patients "
        f"({len(cross_class)} across classes); {len(exact)} with exact copies; {len(scan.unreadable)} unreadable"
    )
    for level in (0.5, 0.6, 0.7, 0.8, 0.9):
        at = _components(len(paths), [pair for pair, value in scan.ssim.items() if value >= level])
        n_cross = sum(len({case[ids[i]] for i in c}) > 1 for c in at)
        n_class = sum(len({pathology[ids[i]] for i in c}) > 1 for c in at)
        print(
            f"    at SSIM >= {level}: {len(at)} clusters ({sum(map(len, at))} images), {n_cross} across patients, "
            f"{n_class} across classes"
        )
    for c in cross:
        names = ", ".join(f"{ids[i]} (case {case[ids[i]]}, {pathology[ids[i]]})" for i in c)
        print(f"    cross-patient cluster: {names}; SSIM to first {[round(scan.pair_ssim(c[0], i), 3) for i in c[1:]]}")

    greys = [read_grey(p) for p in paths]
    thumbs = np.stack([thumbnail(g) for g in greys])
    print()
    header()
    planted = rng.choice(len(greys), size=min(args.n_planted, len(greys)), replace=False)
    copies = report_copies([greys[i] for i in planted], rng, "BUS-BRA")

    pairs = []
    while len(pairs) < args.n_random_pairs:
        i, j = rng.integers(len(ids), size=2)
        if case[ids[i]] != case[ids[j]]:
            pairs.append((int(i), int(j)))
    describe("BUS-BRA random cross-patient pairs", [thumbnail_ssim(thumbs[i], thumbs[j]) for i, j in pairs])

    by_case = defaultdict(list)
    for k, i in enumerate(ids):
        by_case[case[i]].append(k)
    same = [thumbnail_ssim(thumbs[i], thumbs[j]) for ks in by_case.values() for i, j in itertools.combinations(ks, 2)]
    describe("BUS-BRA same-patient pairs (all)", same)

    # nearest cross-patient neighbour of every image, searched among its 30 best-correlated partners
    wide = candidate_pairs(thumbs, top_k=30, min_corr=-1.0)
    default = set(candidate_pairs(thumbs, top_k=DEFAULT_TOP_K, min_corr=DEFAULT_MIN_CORR))
    nearest = np.full(len(ids), -1.0)
    similar, missed = 0, []
    for i, j in wide:
        s = thumbnail_ssim(thumbs[i], thumbs[j])
        if s >= 0.4:
            similar += 1
            if (i, j) not in default:
                missed.append(s)
        if case[ids[i]] != case[ids[j]]:
            nearest[i], nearest[j] = max(nearest[i], s), max(nearest[j], s)
    describe("BUS-BRA nearest cross-patient neighbour", nearest)
    print(f"    images whose nearest cross-patient neighbour has SSIM > 0.7: {int((nearest > 0.7).sum())}")
    print(
        f"    pairs with SSIM >= 0.4 among each image's 30 best-correlated partners: {similar}, "
        f"missed by the default prefilter (top {DEFAULT_TOP_K}, correlation >= {DEFAULT_MIN_CORR}): {len(missed)}"
        + (f" (highest SSIM {max(missed):.3f})" if missed else "")
    )

    if args.exhaustive > 1:  # recall of the prefilter against all pairs of a random subset
        subset = sorted(rng.choice(len(ids), size=min(args.exhaustive, len(ids)), replace=False).tolist())
        kept = set(candidate_pairs(thumbs, top_k=DEFAULT_TOP_K, min_corr=DEFAULT_MIN_CORR))
        full = [(i, j, thumbnail_ssim(thumbs[i], thumbs[j])) for i, j in itertools.combinations(subset, 2)]
        describe(f"BUS-BRA all pairs of {len(subset)} random images", [s for *_, s in full])
        for level in (0.4, 0.5, 0.6):
            high = [(i, j) for i, j, s in full if s >= level]
            missed = [p for p in high if p not in kept]
            print(f"    pairs with SSIM >= {level}: {len(high)}, missed by the prefilter: {len(missed)}")

    if args.n_end_to_end > 0:  # planted copies on disk (a temporary folder), searched among all originals
        import tempfile

        kinds = [k for k in planted_copies(greys[0], rng) if k != "resaved"]
        chosen = rng.choice(len(greys), size=min(args.n_end_to_end, len(greys)), replace=False)
        with tempfile.TemporaryDirectory() as tmp:
            extra, origin = [], []
            for n, i in enumerate(chosen):
                kind = kinds[n % len(kinds)]
                copy = planted_copies(greys[i], rng)[kind] if kind != "jpeg75" else None
                if kind == "jpeg75":  # a real JPEG file
                    path = Path(tmp) / f"copy{n:04d}_{kind}.jpg"
                    Image.fromarray(greys[i]).save(path, quality=75)
                else:
                    path = Path(tmp) / f"copy{n:04d}_{kind}.png"
                    Image.fromarray(copy).save(path)
                extra.append(path)
                origin.append(int(i))
            t0, c0 = time.perf_counter(), time.process_time()
            scan2 = scan_duplicates(paths + extra)
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        cluster_of = {i: c for c, members in enumerate(scan2.clusters) for i in members}
        found = sum(
            1 for n, i in enumerate(origin) if cluster_of.get(len(paths) + n, -1) == cluster_of.get(i, -2)
        )
        other = [c for c in scan2.clusters if not any(i >= len(paths) for i in c)]
        print(
            f"\n  end to end: {len(extra)} planted copies ({', '.join(kinds)}) among the {len(paths)} originals: "
            f"{found} found with their original; {len(other)} clusters without a planted copy; "
            f"{elapsed:.1f} s wall, {cpu:.1f} s CPU for {len(paths) + len(extra)} images"
        )
    return copies, list(nearest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busbra", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/BUSBRA")
    parser.add_argument("--n-synthetic", type=int, default=120)
    parser.add_argument("--n-planted", type=int, default=200)
    parser.add_argument("--n-random-pairs", type=int, default=20000)
    parser.add_argument("--exhaustive", type=int, default=300, help="images in the prefilter recall check (0: off)")
    parser.add_argument("--n-end-to-end", type=int, default=120, help="planted copies searched on disk (0: off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-busbra", action="store_true")
    args = parser.parse_args(argv)

    syn_copies, syn_nearest = run_synthetic(args.n_synthetic, args.seed)
    real = None if args.skip_busbra else run_busbra(args.busbra, args)
    copies = syn_copies + (real[0] if real else [])
    distinct = syn_nearest + ([v for v in real[1] if v >= 0] if real else [])
    lo_copy = float(np.min(copies))
    hi_distinct = float(np.percentile(distinct, 99))
    print(
        f"\nweakest planted copy: {lo_copy:.3f}; 99th percentile of nearest distinct neighbours: {hi_distinct:.3f}; "
        f"midpoint {(lo_copy + hi_distinct) / 2:.3f}"
    )
    print(
        f"chosen DEFAULT_SSIM_THRESHOLD = {DEFAULT_SSIM_THRESHOLD}: margin {lo_copy - DEFAULT_SSIM_THRESHOLD:+.3f} "
        f"below the weakest copy, {DEFAULT_SSIM_THRESHOLD - hi_distinct:+.3f} above p99 of nearest distinct images"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
