"""Synthetic breast MRI volumes with lesion masks (NIfTI, or DICOM through ``pipeline.data.synthetic_dicom``).

``make_mr_dataset`` writes the layout that ``prepare("nifti", ...)`` (or, with ``fmt="dicom"``, ``prepare("dicom",
...)``) reads, see ``pipeline.data.sources.volumes``::

    out_dir/images/case_000.nii.gz     int16 image volume            (fmt="dicom": images/case_000/ DICOM series)
    out_dir/labels/case_000.nii.gz     uint8 lesion mask (0/1), same grid
    out_dir/classes.csv                columns case,class (benign | malignant)

A volume looks like one breast of a fat-suppressed T1-weighted post-contrast (DCE) acquisition, in its array
frame ``(i, j, k)``: ``i`` runs across the breast (left-right), ``j`` from the back (chest) to the front (nipple),
``k`` is the slice (feet-head) axis. From the back: dark thorax (sometimes a bright enhancing heart), the pectoral
muscle (grey), then the breast, a half-ellipsoid whose cross-section shrinks towards the first and last slices, with
a grey skin line, suppressed (dark) fat and fibroglandular tissue (smoothed noise thresholded at a per-case breast
density, denser towards the centre, with background parenchymal enhancement), and one bright enhancing lesion; around
the breast, air. Then a smooth multiplicative bias field, slight partial-volume blur, Rician noise and a random scanner
scale (integers).

Geometry: voxels are ``0.7 x 0.7 x 2.0`` mm (anisotropic, like a 2 mm-slice DCE) and the affine is not diagonal: the
array's first axis is stored reversed (points to the patient's left, radiological convention), and the volume is rotated
by a few degrees about the feet-head axis and tilted slightly; the origin is random. A reader that ignores the affine or
mixes up the axes gets a different world position, which is what the geometry tests check.

What separates the classes (each cue overlaps between the classes, so none is decisive alone):

* **Benign** (fibroadenoma-like): smooth oval (ellipsoid elongated in the plane), sharp margin, homogeneous
  enhancement. About 30% are gently lobulated; about 10% show faint rim enhancement.
* **Malignant** (invasive carcinoma-like): irregular margin (higher-frequency lobulation) and usually spicules, an
  indistinct (blurred) margin, heterogeneous enhancement or rim enhancement with a darker (necrotic) centre. About 20%
  are fairly smooth with few or no spicules.
* **Shared on purpose**: lesion size (equivalent radius 7-15% vs 8-17% of the in-plane field of view), position,
  enhancement level, breast density, noise, bias field and scanner scale.

Everything is drawn from NumPy generators: a seed gives identical arrays. Case ``i`` is drawn from its own stream seeded
by ``(seed, i)``; the class of each case comes from a balanced, shuffled list drawn from ``seed``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from numbers import Integral
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from pipeline.atomic import atomic_path, write_rows_atomic
from pipeline.data.synthetic_dicom import write_dicom_series

__all__ = [
    "MR_CLASSES",
    "DEFAULT_SPACING",
    "synthetic_affine",
    "make_mr_case",
    "make_mr_dataset",
]

MR_CLASSES: tuple[str, str] = ("benign", "malignant")
DEFAULT_SPACING: tuple[float, float, float] = (0.7, 0.7, 2.0)


# ------------------------------------------------------------------------------------------------------- helpers
def _rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_mm: float, spacing) -> np.ndarray:
    """Gaussian noise smoothed with a ``sigma_mm`` kernel (physical units), scaled to zero mean and unit std."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), [sigma_mm / s for s in spacing], mode="reflect")
    return (field - field.mean()) / (field.std() + 1e-12)


def _low_frequency(rng: np.random.Generator, coords, wavelength_mm: float, n_terms: int = 4) -> np.ndarray:
    """A smooth random field (sum of plane waves of about ``wavelength_mm``) on the grid of the 1D ``coords``, with
    zero mean and unit amplitude; far cheaper than smoothing noise with a wide kernel."""
    field = 0.0
    for _ in range(n_terms):
        k = _random_direction(rng) * 2 * np.pi / (wavelength_mm * rng.uniform(0.7, 1.4))
        # cos(k.p + phase) = Re(exp(i kx x) exp(i ky y) exp(i kz z) exp(i phase)): separable, no coordinate grids
        wave = np.exp(1j * (k[0] * coords[0] + rng.uniform(0, 2 * np.pi)))
        for axis in (1, 2):
            wave = np.multiply.outer(wave, np.exp(1j * k[axis] * coords[axis]))
        field = field + wave.real
    return field / np.sqrt(n_terms / 2)


def _random_direction(rng: np.random.Generator, z_scale: float = 1.0) -> np.ndarray:
    v = rng.standard_normal(3)
    v[2] *= z_scale
    return v / (np.linalg.norm(v) + 1e-12)


def _check_shape(shape) -> tuple[int, int, int]:
    if len(shape) != 3 or not all(isinstance(s, Integral) for s in shape):
        raise ValueError(f"shape must be three integers, got {shape!r}")
    if min(shape[:2]) < 16 or shape[2] < 4:
        raise ValueError(f"shape {tuple(shape)} is too small: at least 16 x 16 in-plane and 4 slices")
    return tuple(int(s) for s in shape)


# ------------------------------------------------------------------------------------------------------ geometry
def synthetic_affine(
    rng: np.random.Generator, shape: Sequence[int], spacing: Sequence[float] = DEFAULT_SPACING
) -> np.ndarray:
    """A RAS voxel-to-world affine like a scanner's: first axis reversed (radiological), a rotation of up to 12 degrees
    about the feet-head axis, a tilt of up to 6 degrees about the left-right axis, random origin, voxel ``spacing``."""
    direction = _rotation(2, rng.uniform(-12, 12)) @ _rotation(0, rng.uniform(-6, 6)) @ np.diag([-1.0, 1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(spacing, dtype=float)[None, :]
    centre = (np.asarray(shape, dtype=float) - 1) / 2
    target = np.array([rng.uniform(-60, 60), rng.uniform(10, 60), rng.uniform(-50, 0)])  # world mm of the centre
    affine[:3, 3] = target - affine[:3, :3] @ centre
    return affine


# ------------------------------------------------------------------------------------------------------- anatomy
def _anatomy(rng, shape, spacing):
    """Tissue intensity map (arbitrary units, fat-suppressed post-contrast) and the breast interior mask."""
    nx, ny, nz = shape
    sx, sy, sz = spacing
    x = (np.arange(nx) - (nx - 1) / 2) * sx
    y = np.arange(ny) * sy
    z = (np.arange(nz) - (nz - 1) / 2) * sz
    xx, yy, zz = np.meshgrid(x, y, z, indexing="ij")
    fov_x, fov_y, fov_z = nx * sx, ny * sy, nz * sz

    # chest wall: slightly curved, the breast hangs in front of it (towards larger j)
    y_chest = fov_y * rng.uniform(0.14, 0.24) + fov_y * rng.uniform(0.02, 0.06) * (2 * xx / fov_x) ** 2
    muscle_w = fov_y * rng.uniform(0.05, 0.09)
    a = fov_x * rng.uniform(0.38, 0.47)
    b = (fov_y - y_chest.min()) * rng.uniform(0.78, 0.93)
    c = fov_z * rng.uniform(0.85, 1.3)
    x0 = fov_x * rng.uniform(-0.05, 0.05)
    rho = np.sqrt(((xx - x0) / a) ** 2 + ((yy - y_chest) / b) ** 2 + (zz / c) ** 2)
    breast = (yy >= y_chest) & (rho <= 1.0)
    muscle = (yy < y_chest) & (yy >= y_chest - muscle_w)
    thorax = yy < y_chest - muscle_w

    # distance to the breast surface ~ (1 - rho) / |grad rho| (no skin along the chest wall)
    grad = np.sqrt(((xx - x0) / a**2) ** 2 + ((yy - y_chest) / b**2) ** 2 + (zz / c**2) ** 2) / np.maximum(rho, 1e-6)
    skin = breast & ((1 - rho) / grad < rng.uniform(1.2, 2.0))
    inner = breast & ~skin

    # fibroglandular tissue: smoothed noise, denser centrally, thresholded at the case's density
    density = rng.uniform(0.15, 0.55)
    g = _smooth_noise(rng, shape, rng.uniform(1.2, 2.4), spacing) + rng.uniform(0.8, 1.6) * (1 - np.clip(rho, 0, 1))
    threshold = np.quantile(g[inner], 1 - density) if inner.any() else np.inf
    gland = 1 / (1 + np.exp(-(g - threshold) / 0.12))  # soft edge = partial volume
    bpe = 1 + rng.uniform(0.05, 0.2) * _low_frequency(rng, (x, y, z), 12.0)  # background parenchymal enhancement

    fat, gland_level = rng.uniform(0.09, 0.15), rng.uniform(0.28, 0.42)
    tissue = np.zeros(shape)
    tissue[thorax] = rng.uniform(0.03, 0.07)
    tissue[muscle] = rng.uniform(0.2, 0.28)
    tissue[skin] = rng.uniform(0.3, 0.4)
    tissue[inner] = (fat + (gland_level * bpe - fat) * gland)[inner]
    if rng.random() < 0.5:  # the heart, enhancing, in the thorax
        hx, hy = rng.uniform(-0.3, 0.3) * fov_x, y_chest.min() - muscle_w - fov_y * rng.uniform(0.08, 0.12)
        heart = thorax & ((((xx - hx) / (0.25 * fov_x)) ** 2 + ((yy - hy) / (0.1 * fov_y)) ** 2) <= 1)
        tissue[heart] = rng.uniform(0.45, 0.7)
    return tissue, inner, (x, y, z), (x0, y_chest, a, b)


# -------------------------------------------------------------------------------------------------------- lesion
def _lesion_params(rng: np.random.Generator, cls: str, fov: float) -> dict[str, Any]:
    if cls == "benign":
        kind = rng.choice(["oval", "lobulated", "irregular"], p=[0.55, 0.35, 0.1])
        amp = {"oval": (0.0, 0.04), "lobulated": (0.06, 0.14), "irregular": (0.08, 0.14)}[kind]
        freq = (3, 6) if kind == "irregular" else (1, 4)
        return {
            "r0": fov * rng.uniform(0.07, 0.15),
            "elong": (rng.uniform(1.05, 1.5), rng.uniform(0.7, 1.0), rng.uniform(0.75, 1.05)),
            "lobes": [(rng.uniform(*amp), rng.integers(*freq)) for _ in range(2)],
            "spicules": int(rng.integers(0, 2)) if kind == "irregular" else 0,
            "margin_sigma": rng.uniform(0.15, 0.35),  # mm: sharp
            "level": rng.uniform(0.65, 0.95),
            "texture": rng.uniform(0.02, 0.07),
            "rim": rng.uniform(0.75, 0.9) if rng.random() < 0.1 else None,  # centre/rim ratio
        }
    kind = rng.choice(["smooth", "irregular", "spiculated"], p=[0.25, 0.3, 0.45])
    amp = {"smooth": (0.02, 0.06), "irregular": (0.08, 0.18), "spiculated": (0.05, 0.14)}[kind]
    spicules = {"smooth": (0, 2), "irregular": (0, 3), "spiculated": (3, 8)}[kind]
    freq = (2, 5) if kind == "smooth" else (3, 7)
    return {
        "r0": fov * rng.uniform(0.08, 0.17),
        "elong": (rng.uniform(0.85, 1.25), rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.2)),
        "lobes": [(rng.uniform(*amp), rng.integers(*freq)) for _ in range(4)],
        "spicules": int(rng.integers(*spicules)),
        "margin_sigma": rng.uniform(0.4, 0.9),  # mm: indistinct
        "level": rng.uniform(0.7, 1.0),
        "texture": rng.uniform(0.08, 0.2),
        "rim": rng.uniform(0.35, 0.7) if rng.random() < 0.55 else None,
    }


def _lesion_mask(rng, p, centre, coords, spacing) -> np.ndarray:
    """The lesion as a boolean volume: a lobulated ellipsoid plus spicules, drawn in a box around ``centre``."""
    rot = _rotation(2, rng.uniform(0, 180)) @ _rotation(0, rng.uniform(-15, 15))
    radii = p["r0"] * np.asarray(p["elong"]) * np.array([1.0, 1.0, 0.8])
    lobes = [(amp, freq, _random_direction(rng), rng.uniform(0, 2 * np.pi)) for amp, freq in p["lobes"]]
    spicules = []
    for _ in range(p["spicules"]):  # thin tapering rays, mostly in-plane
        v = _random_direction(rng, z_scale=0.35)
        spicules.append((v, v * p["r0"] * 0.5, p["r0"] * rng.uniform(1.2, 2.0), rng.uniform(0.5, 0.9)))
    reach = max(radii.max() * (1 + sum(abs(a) for a, *_ in lobes)),
                max((0.5 * p["r0"] + length for _, _, length, _ in spicules), default=0.0)) + 2 * max(spacing)
    box = tuple(slice(int(np.searchsorted(c, centre[a] - reach)), int(np.searchsorted(c, centre[a] + reach, "right")))
                for a, c in enumerate(coords))
    mask = np.zeros(tuple(len(c) for c in coords), dtype=bool)
    sub = [c[b] - centre[a] for a, (c, b) in enumerate(zip(coords, box))]
    if min(len(s) for s in sub) == 0:
        return mask
    d = np.stack(np.meshgrid(*sub, indexing="ij"), axis=-1)  # offset from the centre, mm
    local = d @ rot / radii  # in the lesion frame, normalised by the radii
    rho = np.linalg.norm(local, axis=-1)
    u = local / (rho[..., None] + 1e-9)
    surface = np.ones(rho.shape)
    for amp, freq, v, phase in lobes:
        surface += amp * np.cos(np.pi * freq * (u @ v) + phase)
    inside = rho <= surface
    for v, start, length, width in spicules:
        t = np.clip((d - start) @ v / length, 0, 1)
        dist = np.linalg.norm(d - start - (t * length)[..., None] * v, axis=-1)
        inside |= dist <= width * (1 - 0.75 * t) + 0.5 * min(spacing[:2])
    mask[box] = inside
    return mask


def _lesion_intensity(rng, p, mask, shape, spacing) -> np.ndarray:
    level = p["level"]
    enh = level * (1 + p["texture"] * _smooth_noise(rng, shape, rng.uniform(0.8, 1.6), spacing))
    if p["rim"] is not None and mask.any():
        box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in np.nonzero(mask))
        depth = np.zeros(shape)
        depth[box] = ndimage.distance_transform_edt(mask[box], sampling=spacing)
        rim_w = rng.uniform(1.0, 2.0)
        enh = enh * (p["rim"] + (1 - p["rim"]) * np.exp(-np.maximum(depth - 0.5, 0) / rim_w))
    return np.clip(enh, 0.2, 1.4)


def make_mr_case(
    rng: np.random.Generator,
    cls: str,
    shape: Sequence[int] = (64, 64, 16),
    spacing: Sequence[float] = DEFAULT_SPACING,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic breast MRI volume with its lesion.

    Args:
        rng: the random stream (everything is drawn from it).
        cls: ``"benign"`` or ``"malignant"``.
        shape: ``(i, j, k)`` voxels: two in-plane axes and the slice axis (at least 16 x 16 x 4).
        spacing: voxel size in mm along ``i, j, k``.

    Returns:
        ``(image int16 (i, j, k), mask uint8 0/1 (i, j, k), affine 4x4 RAS voxel-to-world)``. The lesion never
        reaches the first and last slice, so every volume has lesion-free slices.
    """
    if cls not in MR_CLASSES:
        raise ValueError(f"cls must be one of {MR_CLASSES}, got {cls!r}")
    shape = _check_shape(tuple(shape))
    spacing = tuple(float(s) for s in spacing)
    affine = synthetic_affine(rng, shape, spacing)
    tissue, inner, coords, (x0, y_chest, a, b) = _anatomy(rng, shape, spacing)
    nz, sz = shape[2], spacing[2]
    fov = min(shape[0] * spacing[0], shape[1] * spacing[1])
    p = _lesion_params(rng, cls, fov)

    keep = inner.copy()
    keep[:, :, [0, nz - 1]] = False
    mask = np.zeros(shape, dtype=bool)
    for _ in range(20):  # place the lesion inside the breast; a lesion that falls mostly outside is redrawn
        centre = (
            x0 + a * rng.uniform(-0.4, 0.4),
            float(y_chest.min()) + b * rng.uniform(0.3, 0.6),
            nz * sz * rng.uniform(-0.12, 0.12),
        )
        full = _lesion_mask(rng, p, centre, coords, spacing)
        mask = full & keep
        if mask.sum() >= max(8, 0.7 * full.sum()):
            break
    if not mask.any():  # pragma: no cover - the breast always has room for a voxel at its centre
        mask[shape[0] // 2, shape[1] // 2, nz // 2] = True

    enh = _lesion_intensity(rng, p, mask, shape, spacing)
    alpha = ndimage.gaussian_filter(mask.astype(float), [p["margin_sigma"] / s for s in spacing])
    alpha = np.maximum(alpha, mask * 0.85)  # the lesion stays lesion-bright inside its mask
    image = tissue * (1 - alpha) + enh * alpha

    bias = 1 + rng.uniform(0.05, 0.18) * _low_frequency(rng, coords, 60.0)
    image = ndimage.gaussian_filter(image * bias, [0.35, 0.35, 0.2])
    sigma = rng.uniform(0.012, 0.03)
    image = np.hypot(image + sigma * rng.standard_normal(shape), sigma * rng.standard_normal(shape))  # Rician
    image = np.clip(np.round(image * rng.uniform(700, 1500)), 0, np.iinfo(np.int16).max).astype(np.int16)
    return image, mask.astype(np.uint8), affine


# ------------------------------------------------------------------------------------------------------- writing
def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    with atomic_path(path, fsync=False) as tmp:  # bulk output: atomic against a kill, no flush per file
        nib.save(img, str(tmp))


def make_mr_dataset(
    out_dir: str | os.PathLike,
    n: int = 12,
    seed: int = 0,
    shape: Sequence[int] = (64, 64, 16),
    *,
    fmt: str = "nifti",
    spacing: Sequence[float] = DEFAULT_SPACING,
) -> Path:
    """Write ``n`` synthetic breast MRI cases (half benign, half malignant, shuffled) in the NIfTI or DICOM layout.

    Args:
        out_dir: the dataset folder (created).
        n: number of cases (volumes), named ``case_000``...
        seed: random seed; the same seed gives the same volumes.
        shape: voxels per volume ``(i, j, k)``; ``k`` is the slice axis.
        fmt: ``"nifti"`` (``images/<case>.nii.gz``) or ``"dicom"`` (``images/<case>/`` a DICOM series of
            ``write_dicom_series``); labels are always ``labels/<case>.nii.gz`` on the image's grid.
        spacing: voxel size in mm.

    Returns:
        ``out_dir``.
    """
    if not isinstance(n, Integral) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if fmt not in ("nifti", "dicom"):
        raise ValueError(f"fmt must be 'nifti' or 'dicom', got {fmt!r}")
    shape = _check_shape(tuple(shape))
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    classes = list(np.random.default_rng(seed).permutation([MR_CLASSES[i % 2] for i in range(n)]))
    rows = []
    for i, cls in enumerate(classes):
        case = f"case_{i:03d}"
        image, mask, affine = make_mr_case(np.random.default_rng([seed, i]), str(cls), shape, spacing)
        if fmt == "nifti":
            _save_nifti(image, affine, out / "images" / f"{case}.nii.gz")
        else:
            write_dicom_series(image, out / "images" / case, affine=affine,
                               series_description="Ax T1 FS post-contrast (synthetic)",
                               PatientID=case, PatientName=case)
        _save_nifti(mask, affine, out / "labels" / f"{case}.nii.gz")
        rows.append({"case": case, "class": str(cls)})
    write_rows_atomic(out / "classes.csv", ["case", "class"], rows)
    from pipeline.data.synthetic import mark_synthetic  # here: that module re-exports this one

    mark_synthetic(out, "MR", n, seed, "NIfTI" if fmt == "nifti" else "DICOM series")
    return out
