"""Synthetic breast ultrasound written in the BUSI folder layout (the images from ``pipeline.data.synthetic_us``).

``make_us_dataset`` writes ``out_dir/Dataset_BUSI_with_GT/{normal,benign,malignant}/<class> (N).png`` with
``<class> (N)_mask.png`` beside each image, exactly as the public BUSI release is laid out: images are 8-bit RGB with
grey content (R == G == B), masks are 8-bit 0/255, normal images carry an all-zero mask. About one lesion image in ten
(at least one when ``n >= 10``) also gets a ``<class> (N)_mask_1.png``: the lesion mask is cut in two along a line
through its centroid, ``_mask`` holds one part and ``_mask_1`` the other, so only their union is the full lesion (this
exercises the multi-mask union of the BUSI converter). Each image is ``pipeline.data.synthetic_us.make_us_case``.

Everything is drawn from the generator given, so a seed gives byte-identical files. Case ``<class> (N)`` is drawn
from its own stream seeded by ``(seed, class, N)``: it is the same whatever ``n`` and the class fractions.
"""

from __future__ import annotations

import math
import os
from numbers import Integral
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.atomic import atomic_path
from pipeline.data.synthetic_us import US_CLASSES, check_image_size, make_us_case

__all__ = ["make_us_dataset", "class_counts"]

_BUSI_DIR = "Dataset_BUSI_with_GT"
_MULTI_MASK_FRACTION = 0.1


def class_counts(n: int, class_fractions=(0.2, 0.45, 0.35)) -> dict[str, int]:
    """Images per class for ``n`` images: largest-remainder rounding of ``n * fraction``.

    ``class_fractions`` are in the order of ``US_CLASSES`` (normal, benign, malignant).
    """
    fractions = _check_fractions(class_fractions)
    exact = [n * f for f in fractions]
    counts = [int(math.floor(x)) for x in exact]
    order = sorted(range(3), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return dict(zip(US_CLASSES, counts))


def _check_fractions(class_fractions) -> tuple[float, float, float]:
    try:
        fractions = tuple(float(f) for f in class_fractions)
    except (TypeError, ValueError):
        raise ValueError(f"class_fractions must be three numbers (normal, benign, malignant), got {class_fractions!r}")
    if len(fractions) != 3:
        raise ValueError(f"class_fractions must be three numbers (normal, benign, malignant), got {class_fractions!r}")
    if any(not math.isfinite(f) or f < 0 for f in fractions):
        raise ValueError(f"class_fractions must be finite and >= 0, got {class_fractions!r}")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"class_fractions must sum to 1, got {class_fractions!r} (sum {sum(fractions):.6g})")
    return fractions  # type: ignore[return-value]


def _split_mask(mask: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``mask`` in two along a line through its centroid; both parts non-empty, union the full mask."""
    ys, xs = np.nonzero(mask)
    proj = (ys - ys.mean()) * math.sin(angle) + (xs - xs.mean()) * math.cos(angle)
    cut = np.median(proj) if (proj < 0).all() or (proj >= 0).all() else 0.0
    first = proj < cut
    if first.all() or not first.any():  # a one-pixel-wide mask: split by index
        first = np.arange(ys.size) < max(1, ys.size // 2)
    a, b = np.zeros_like(mask), np.zeros_like(mask)
    a[ys[first], xs[first]] = True
    b[ys[~first], xs[~first]] = True
    return a, b


def _save_grey_rgb(img: np.ndarray, path: Path) -> None:
    with atomic_path(path, fsync=False) as tmp:  # bulk output: atomic against a kill, no flush per file
        Image.fromarray(np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))).save(tmp)


def _save_mask(mask: np.ndarray, path: Path) -> None:
    with atomic_path(path, fsync=False) as tmp:
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp)


def make_us_dataset(
    out_dir: str | os.PathLike,
    n: int = 60,
    seed: int = 0,
    size: tuple[int, int] = (128, 128),
    class_fractions: tuple[float, float, float] = (0.2, 0.45, 0.35),
) -> Path:
    """Write ``n`` synthetic breast ultrasound images with masks in the BUSI layout.

    Layout: ``out_dir/Dataset_BUSI_with_GT/{normal,benign,malignant}/<class> (N).png`` (8-bit RGB, grey content) with
    ``<class> (N)_mask.png`` (8-bit, 0/255; all zero for normal images), numbered from 1 within each class. About 10% of
    the lesion images (at least one when ``n >= 10`` and there are lesion images) also get ``<class> (N)_mask_1.png``:
    then ``_mask`` and ``_mask_1`` are the two halves of the lesion and only their union is the full mask.

    Args:
        out_dir: where ``Dataset_BUSI_with_GT`` is created (existing files of the same names are overwritten).
        n: number of images (>= 1).
        seed: non-negative integer; the same seed (and arguments) gives byte-identical files.
        size: ``(H, W)`` of every image, each >= 32.
        class_fractions: fractions of normal, benign and malignant images (>= 0, summing to 1); counts are rounded
            by largest remainder (see ``class_counts``).

    Returns:
        The ``Dataset_BUSI_with_GT`` folder (the one holding the class folders).

    Raises:
        ValueError: an argument out of range (the message names it).
    """
    if not isinstance(n, Integral) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if not isinstance(seed, Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    size = check_image_size(size)
    counts = class_counts(int(n), class_fractions)

    root = Path(out_dir) / _BUSI_DIR
    lesion_cases = [(cls, k) for cls in ("benign", "malignant") for k in range(1, counts[cls] + 1)]
    n_multi = int(round(_MULTI_MASK_FRACTION * len(lesion_cases)))
    if n >= 10 and lesion_cases:
        n_multi = max(1, n_multi)
    pick_rng = np.random.default_rng([int(seed), 99])
    picked = pick_rng.choice(len(lesion_cases), size=n_multi, replace=False) if n_multi else []
    multi = {lesion_cases[i] for i in picked}

    for ci, cls in enumerate(US_CLASSES):
        folder = root / cls
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(1, counts[cls] + 1):
            rng = np.random.default_rng([int(seed), ci, k])
            img, mask = make_us_case(rng, cls, size)
            stem = f"{cls} ({k})"
            _save_grey_rgb(img, folder / f"{stem}.png")
            if (cls, k) in multi:
                first, second = _split_mask(mask, rng.uniform(0, np.pi))
                _save_mask(first, folder / f"{stem}_mask.png")
                _save_mask(second, folder / f"{stem}_mask_1.png")
            else:
                _save_mask(mask, folder / f"{stem}_mask.png")
                (folder / f"{stem}_mask_1.png").unlink(missing_ok=True)  # left over from an earlier run
    from pipeline.data.synthetic import mark_synthetic  # here: that module re-exports this one

    mark_synthetic(root, "US", n, seed, "BUSI")
    return root
