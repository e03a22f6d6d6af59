"""Exact and near-duplicate images: find them (reports and curated datalists: ``pipeline.data.curate``).

Public datasets repeat images: BUSI holds exact copies, re-saved copies and near-identical frames, some of them filed
under different classes (Aumente-Maestro, Diez & Remeseiro, "A multi-task framework for breast cancer segmentation and
classification in ultrasound imaging", CMPB 2025, and the Curated BUSI data set, Zenodo 10.5281/zenodo.19047974: an
SSIM-based duplicate search found 5 quadruplets, 22 triplets and 122 pairs; 330 images were removed and inconsistent
ones dropped, leaving 450 images). Duplicates that straddle folds inflate cross-validation scores, and a duplicate
filed under two classes is a label error. This module finds them in three steps:

1. **Exact duplicates**: the same file bytes (BLAKE2 hash of the file) or the same decoded grey pixels (hash of the
   pixel array with its shape and dtype), so a PNG re-saved with other metadata or compression settings is still an
   exact copy.
2. **Candidate pairs (prefilter)**: every image (one per exact group) becomes a ``size x size`` grey thumbnail
   (anti-aliased bilinear reduction with Pillow, squashing the aspect ratio, scaled to 0..1 between its 1st and 99th
   percentiles, near-black floored: see ``thumbnail``), and a ``16 x 16`` thumbnail made from it by block averaging,
   standardised to zero mean and unit norm. The Pearson correlation of two tiny thumbnails is one dot product, so all
   pairs cost one matrix product (done in row chunks: memory stays ``O(chunk * n)``). Each image keeps its ``top_k``
   (default 10) most correlated partners whose correlation is at least ``min_corr`` (default 0.5). Planted copies
   correlate above 0.98 with their original at this size (measured on 150 BUS-BRA and 60 synthetic images: noise and
   JPEG artefacts average out), so the prefilter keeps them, and SSIM then runs on about ``n * top_k`` pairs instead
   of ``n^2 / 2``. A cluster of more than ``top_k + 1`` near-identical images is still found whole as long as its
   members chain through their partners (a test plants 25 noisy copies of one image).
3. **Near duplicates**: ``skimage.metrics.structural_similarity`` (7x7 uniform window, ``data_range=1``) of the two
   ``size x size`` thumbnails; a pair is a near duplicate when SSIM >= ``threshold``. Clusters are the connected
   components of the exact and near pairs (``scipy.sparse.csgraph.connected_components``); a chain A~B~C is one
   cluster even when A and C alone fall under the threshold.

Unreadable files are reported (``DuplicateScan.unreadable``, a warning from ``find_duplicates``, ``unreadable.csv``
from ``run_dedup``) and otherwise ignored: they are singletons.

Choice of ``DEFAULT_SSIM_THRESHOLD = 0.8`` (``benchmarks/dedup_threshold.py`` prints these numbers; seed 0, 64x64
thumbnails). Copies were planted from every image: Gaussian noise sigma 5 and 10 grey levels, rescaled by 0.8 and 1.25
(kept at that size, or brought back), JPEG quality 75, an offset of +-10 grey levels (clipped to 0..255) and a gain of
0.9 / 1.1 (exact re-saves are found by hash and score 1). Synthetic images come from
``pipeline.data.synthetic_us.make_us_case`` (120 images, 128x128 and 160x208); real ones from BUS-BRA (1,875 images of
1,064 patients; ``Case`` in ``bus_data.csv`` is the patient):

==========================================  ======  ======  ======  ======  ======  ======
SSIM                                         n       min     p1      p50     p99     max
==========================================  ======  ======  ======  ======  ======  ======
synthetic: planted copies                    1,320   0.954   0.983   1.000   1.000   1.000
synthetic: all distinct pairs                7,140   -0.058  -0.025  0.056   0.261   0.389
synthetic: nearest distinct neighbour        120     0.097   0.101   0.221   0.386   0.389
BUS-BRA: planted copies (200 images)         2,200   0.918   0.980   1.000   1.000   1.000
BUS-BRA: random pairs of two patients        20,000  -0.089  -0.033  0.068   0.240   0.408
BUS-BRA: nearest other-patient neighbour     1,875   0.113   0.142   0.245   0.445   0.502
BUS-BRA: pairs of one patient's images       811     -0.011  0.049   0.235   0.491   0.628
==========================================  ======  ======  ======  ======  ======  ======

The weakest copies are a -10 offset of images that are 30-50% near-black (0.918) and sigma-10 noise (0.928). The
threshold 0.8 sits 0.12 under the weakest planted copy, 0.30 over the most similar images of two different patients
(0.502) and 0.17 over the most similar images of one patient (0.628: bus_1019-l and bus_1019-r). Edits the
threshold is not made for: scanner marks (calipers, a text block) still score 0.83-0.999 (p1 0.93), but crops are not
found (2% per side: 0.62-0.85; 5%: 0.21-0.62).

BUS-BRA at 0.8 has no duplicate cluster (none exact, none near; none across patients, none across classes; the first
clusters appear at 0.6: 2 pairs of one patient's images; at 0.5: 7 clusters, 1 across patients). The search takes about
12 s of CPU on 1,875 images, reading included (15,210 SSIMs instead of 1.76 million). With 120 planted copies written
beside the 1,875 originals, all 120 were clustered with their original and no other cluster appeared. Prefilter
recall: of the 117 pairs with SSIM >= 0.4 among each image's 30 best-correlated partners, the default prefilter skips
15, the highest at SSIM 0.483, far under the threshold.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.metrics import structural_similarity

from pipeline.data.io import DataError, read_grey
from pipeline.progress import progress

__all__ = [
    "DEFAULT_SSIM_THRESHOLD",
    "DuplicateScan",
    "thumbnail",
    "thumbnail_ssim",
    "candidate_pairs",
    "scan_duplicates",
    "find_duplicates",
    "cluster_ids",
]

DEFAULT_SSIM_THRESHOLD = 0.8
PREFILTER_SIZE = 16
DEFAULT_TOP_K = 10
DEFAULT_MIN_CORR = 0.5
BLACK_LEVEL = 0.04


def thumbnail(image: np.ndarray, size: int = 64) -> np.ndarray:
    """A ``size x size`` float64 thumbnail of a grey image, scaled to 0..1 between its percentiles 1 and 99.

    The reduction is anti-aliased (Pillow's bilinear filter widens its support when shrinking) and squashes the
    aspect ratio, so a copy rescaled by any factor maps onto (nearly) the same thumbnail. Scaling between the 1st and
    99th percentiles (clipped) rather than min and max keeps a few bright marks (calipers, text) from changing the
    contrast of the whole thumbnail (measured on BUS-BRA: worst marked copy 0.74 -> 0.89), and it works for any dtype.
    Values under ``BLACK_LEVEL`` (4% of the range, about 10 grey levels of 255) are set to it: the faint texture of
    near-black areas (field-of-view margins, anechoic lesions) is what noise, or a darker copy clipped at 0, changes
    most, and it tells distinct images apart least (measured: copies' SSIM rose from 0.83 to 0.99 for Gaussian noise
    and from 0.86 to 0.95 for a -10 offset; distinct pairs moved by < 0.01). A constant image gives a constant
    thumbnail.
    """
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"thumbnail expects a 2D grey image, got shape {arr.shape}")
    small = np.asarray(Image.fromarray(arr, mode="F").resize((size, size), Image.Resampling.BILINEAR), np.float64)
    lo, hi = (float(v) for v in np.percentile(small, (1.0, 99.0)))
    if hi <= lo:  # mostly constant: fall back to the full range
        lo, hi = float(small.min()), float(small.max())
    scaled = np.clip((small - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(small)
    return np.maximum(scaled, BLACK_LEVEL)


def thumbnail_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two thumbnails made by ``thumbnail`` (7x7 uniform window, data range 1)."""
    return float(structural_similarity(a, b, data_range=1.0))


def _tiny(thumbs: np.ndarray, size: int) -> np.ndarray:
    """Flattened ``16 x 16`` block means of the thumbnails, standardised to zero mean and unit norm."""
    n = thumbs.shape[0]
    t = PREFILTER_SIZE if size % PREFILTER_SIZE == 0 and size >= PREFILTER_SIZE else None
    if t is not None:
        f = size // t
        tiny = thumbs.reshape(n, t, f, t, f).mean(axis=(2, 4)).reshape(n, -1)
    else:
        tiny = np.stack([thumbnail(x, PREFILTER_SIZE) for x in thumbs]).reshape(n, -1) if n else thumbs.reshape(0, 1)
    tiny = tiny - tiny.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(tiny, axis=1, keepdims=True)
    return np.divide(tiny, norm, out=np.zeros_like(tiny), where=norm > 0)


def candidate_pairs(
    thumbs: np.ndarray, top_k: int = DEFAULT_TOP_K, min_corr: float = DEFAULT_MIN_CORR, chunk: int = 1024
) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, worth an SSIM: each image's ``top_k`` most correlated partners on 16x16 thumbnails,
    kept when their correlation is at least ``min_corr``. Sorted, without repeats."""
    n = thumbs.shape[0]
    if n < 2:
        return []
    size = thumbs.shape[1]
    tiny = _tiny(thumbs, size)
    k = min(top_k, n - 1)
    pairs: set[tuple[int, int]] = set()
    for start in range(0, n, chunk):
        corr = tiny[start : start + chunk] @ tiny.T
        rows = np.arange(corr.shape[0])
        corr[rows, start + rows] = -np.inf  # not oneself
        top = np.argpartition(-corr, k - 1, axis=1)[:, :k]
        for r, cols in enumerate(top):
            i = start + r
            for j in cols[corr[r, cols] >= min_corr]:
                j = int(j)
                pairs.add((i, j) if i < j else (j, i))
    return sorted(pairs)


@dataclass
class DuplicateScan:
    """What ``scan_duplicates`` found.

    Attributes:
        paths: the scanned paths, in the order given.
        threshold: the SSIM threshold used.
        clusters: index lists (length >= 2, ascending), ordered by their first index.
        unreadable: ``(index, problem)`` for files that could not be read (they are in no cluster).
        pixel_hash: hash of the decoded pixels per path (``None`` when unreadable).
        ssim: SSIM of every pair compared (prefilter candidates), keyed ``(i, j)`` with ``i < j``.
        n_candidates: number of SSIM comparisons made after the prefilter.
    """

    paths: list[Path]
    threshold: float
    clusters: list[list[int]]
    unreadable: list[tuple[int, str]]
    pixel_hash: list[str | None]
    ssim: dict[tuple[int, int], float] = field(default_factory=dict)
    n_candidates: int = 0
    _thumbs: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _rep: dict[int, int] = field(default_factory=dict, repr=False)  # exact copy -> the image with its thumbnail

    def pair_ssim(self, i: int, j: int) -> float:
        """SSIM of images ``i`` and ``j`` (1.0 for pixel-identical images; computed when not cached)."""
        if i == j or (self.pixel_hash[i] is not None and self.pixel_hash[i] == self.pixel_hash[j]):
            return 1.0
        key = (min(i, j), max(i, j))
        if key not in self.ssim:
            a, b = self._thumbs[self._rep.get(i, i)], self._thumbs[self._rep.get(j, j)]
            self.ssim[key] = thumbnail_ssim(a, b)
        return self.ssim[key]

    def cluster_ids(self) -> list[int]:
        """One id per path: clusters and singletons numbered in order of their first path."""
        owner = {i: c for c, members in enumerate(self.clusters) for i in members}
        ids: list[int] = []
        mapping: dict[Any, int] = {}
        for i in range(len(self.paths)):
            key = ("cluster", owner[i]) if i in owner else ("single", i)
            if key not in mapping:
                mapping[key] = len(mapping)
            ids.append(mapping[key])
        return ids

    def has_exact_copy(self, i: int, members: Sequence[int]) -> bool:
        """Whether image ``i`` has a pixel-identical copy among ``members``."""
        h = self.pixel_hash[i]
        return h is not None and any(j != i and self.pixel_hash[j] == h for j in members)


def _file_hash(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pixel_hash(arr: np.ndarray) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{arr.dtype.str}{arr.shape}".encode())
    digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()


def scan_duplicates(
    paths: Sequence[str | os.PathLike],
    threshold: float | None = None,
    size: int = 64,
    top_k: int = DEFAULT_TOP_K,
    min_corr: float = DEFAULT_MIN_CORR,
) -> DuplicateScan:
    """Find exact and near-duplicate images (see the module docstring for the method) and keep the evidence.

    Args:
        paths: image files.
        threshold: SSIM at or above which two thumbnails are near duplicates (default ``DEFAULT_SSIM_THRESHOLD``).
        size: thumbnail side for SSIM (default 64).
        top_k: prefilter: SSIM partners kept per image.
        min_corr: prefilter: lowest 16x16 correlation for a pair to be compared.

    Raises:
        ValueError: ``threshold`` outside (0, 1] or ``size`` < 7 (the SSIM window).
    """
    threshold = DEFAULT_SSIM_THRESHOLD if threshold is None else float(threshold)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if size < 7:
        raise ValueError(f"size must be at least 7 (the SSIM window), got {size}")
    paths = [Path(p) for p in paths]
    n = len(paths)
    unreadable: list[tuple[int, str]] = []
    pixel_hash: list[str | None] = [None] * n
    edges: list[tuple[int, int]] = []
    first_by_hash: dict[tuple[str, str], int] = {}
    thumbs: dict[int, np.ndarray] = {}
    rep_of: dict[int, int] = {}
    for i, path in enumerate(progress(paths, "dedup: reading")):
        try:
            arr = read_grey(path)
            fhash = _file_hash(path)
        except DataError as e:
            unreadable.append((i, e.problem))
            continue
        except OSError as e:  # e.g. a folder or a file without read permission
            unreadable.append((i, f"cannot read ({e.strerror or e})"))
            continue
        pixel_hash[i] = _pixel_hash(arr)
        for key in (("file", fhash), ("pixels", pixel_hash[i])):
            if key in first_by_hash:
                edges.append((first_by_hash[key], i))
                rep_of[i] = first_by_hash[key]  # the first image with these bytes or pixels: it has a thumbnail
            else:
                first_by_hash[key] = i
        if i not in rep_of:  # one representative per exact group takes part in the near-duplicate search
            thumbs[i] = thumbnail(arr, size)

    scan = DuplicateScan(paths, threshold, [], unreadable, pixel_hash, _thumbs=thumbs, _rep=rep_of)
    reps = sorted(thumbs)
    if len(reps) >= 2:
        stack = np.stack([thumbs[i] for i in reps])
        pairs = candidate_pairs(stack, top_k=top_k, min_corr=min_corr)
        scan.n_candidates = len(pairs)
        for a, b in pairs:
            i, j = reps[a], reps[b]
            value = thumbnail_ssim(thumbs[i], thumbs[j])
            scan.ssim[(i, j)] = value
            if value >= threshold:
                edges.append((i, j))
    scan.clusters = _components(n, edges)
    return scan


def _components(n: int, edges: list[tuple[int, int]]) -> list[list[int]]:
    if not edges:
        return []
    rows, cols = zip(*edges)
    graph = coo_matrix((np.ones(len(edges), dtype=np.int8), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    groups: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(int(label), []).append(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def find_duplicates(
    paths: Sequence[str | os.PathLike], threshold: float | None = None, size: int = 64
) -> list[list[int]]:
    """Clusters of exact and near-duplicate images among ``paths``.

    Exact duplicates share file bytes or decoded grey pixels. Near duplicates have SSIM >= ``threshold`` on
    ``size x size`` anti-aliased thumbnails; SSIM runs only on prefiltered candidate pairs (each image's 10 partners
    best correlated on standardised 16x16 thumbnails, correlation >= 0.5), so 1,875 images take seconds rather than
    the 1.76 million SSIMs of all pairs. Clusters are connected components of the duplicate pairs.

    Args:
        paths: image files; an unreadable one is reported with a warning and left out of every cluster.
        threshold: SSIM threshold (default ``DEFAULT_SSIM_THRESHOLD``).
        size: thumbnail side for SSIM.

    Returns:
        Index lists into ``paths`` (length >= 2, ascending), ordered by their first index.
    """
    scan = scan_duplicates(paths, threshold=threshold, size=size)
    _warn_unreadable(scan)
    return scan.clusters


def _warn_unreadable(scan: DuplicateScan) -> None:
    if scan.unreadable:
        shown = "; ".join(f"{scan.paths[i]}: {problem}" for i, problem in scan.unreadable[:5])
        more = f" (and {len(scan.unreadable) - 5} more)" if len(scan.unreadable) > 5 else ""
        warnings.warn(f"{len(scan.unreadable)} unreadable image(s) left out of the duplicate search: {shown}{more}")


def cluster_ids(paths: Sequence[str | os.PathLike], threshold: float | None = None) -> list[int]:
    """One duplicate-cluster id per path; clusters and singletons are numbered 0, 1, ... in order of first appearance.

    The same paths (and files) always give the same ids. Unreadable files are singletons (with a warning).
    """
    scan = scan_duplicates(paths, threshold=threshold)
    _warn_unreadable(scan)
    return scan.cluster_ids()
