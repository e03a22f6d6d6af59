"""Synthetic breast ultrasound images with lesion masks: ``make_us_case`` makes one image and its mask in memory;
``pipeline.data.synthetic_busi.make_us_dataset`` writes them in the BUSI folder layout.

How an image is made (B-mode physics, simplified):

* **Field of view**: full frame, rectangular with black side margins, or a curvilinear sector (fan) with black
  corners. Tissue depth follows the beam (the radius, in a sector).
* **Tissue echogenicity map**, top to bottom: a dark coupling gap, a bright skin line, subcutaneous fat (dark,
  lobulated, crossed by bright curved septa), the fibroglandular layer (bright, streaky, with darker fat islands that
  can mimic a lesion), a thin bright fascia, the pectoral muscle (dark band with oblique striations) and sometimes
  the dark chest wall below. Layer boundaries undulate.
* **Lesion** (benign and malignant only), always hypoechoic with low-level internal echoes, see below.
* **Speckle**: a complex Gaussian field is filtered with an anisotropic point-spread function (lateral correlation
  longer than axial); its magnitude is Rayleigh-distributed, unit-mean multiplicative speckle.
* **Attenuation** with depth, imperfectly corrected by a wavy time-gain-compensation curve, a little lateral gain
  fall-off and additive electronic noise; then log compression with a random dynamic range, random gain, contrast
  and gamma; then mild smoothing (lateral > axial).
* **Overlays** like a scanner's: text-like glyph blocks in a corner, caliper crosses (on lesion and normal images
  alike) and depth-ruler dots.

What separates the classes (the cues a model can learn; each overlaps between classes, so none is decisive alone):

* **Benign**: smooth oval shape, wider than tall (parallel to the skin: width/height mostly 1.15-2.1), sharp
  well-circumscribed margin, often a thin echogenic capsule and posterior acoustic enhancement. Some (about 30%) are
  gently lobulated (2-5 lobes), some are nearly round, a few show weak shadowing; some are near-anechoic (cyst-like).
* **Malignant**: irregular margin with microlobulation (6-14 small lobes) and usually spicules, mostly taller than
  wide (non-parallel, width/height mostly 0.6-1.0), blurred (indistinct) margin with an echogenic halo, posterior
  acoustic shadowing (a darker band below the lesion; sometimes weak or absent). About 20% are fairly round and
  smooth, and about 30% are wider than tall.
* **Normal**: no lesion; the same layers, fat islands and overlays.
* **Shared on purpose**: lesion size (equivalent radius 7-19% vs 8-21% of the short image side), depth and lateral
  position, internal echo level and heterogeneity, and all the image-level settings (gain, contrast, dynamic range,
  speckle size and strength, field of view, overlays). Lesion brightness and area therefore separate benign from
  malignant poorly; shape (solidity, aspect ratio), margin and posterior features separate them well.

Everything is drawn from the generator given, so a seed gives the same image.
"""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np
from scipy import ndimage


__all__ = ["US_CLASSES", "make_us_case", "check_image_size"]

US_CLASSES: tuple[str, str, str] = ("normal", "benign", "malignant")


# ----------------------------------------------------------------------------------------------------------------------
# small helpers


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to zero mean and unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return (field - field.mean()) / (field.std() + 1e-8)


def _wave(rng: np.random.Generator, t: np.ndarray, amp: float, n_terms: int = 3, max_freq: float = 3.0) -> np.ndarray:
    """A smooth random curve of ``t`` in [0, 1]: a few sines, peak amplitude about ``amp``."""
    grid = np.linspace(float(t.min()), float(t.max()) + 1e-9, 257)  # evaluated on a 1D grid, then looked up
    out = np.zeros_like(grid)
    for _ in range(n_terms):
        freq = rng.uniform(0.3, max_freq)
        out += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * freq * grid + rng.uniform(0, 2 * np.pi))
    return np.interp(t, grid, out * (amp / n_terms))


def _step(d: np.ndarray, edge: np.ndarray | float, width: float) -> np.ndarray:
    """Soft step from 0 (above ``edge``) to 1 (below), ``width`` in the units of ``d``."""
    return 0.5 * (1.0 + np.tanh((d - edge) / width))


# ----------------------------------------------------------------------------------------------------------------------
# geometry: field of view, depth and lateral coordinates


def _geometry(rng: np.random.Generator, h: int, w: int):
    """Field of view mask, depth ``d`` and lateral ``lat`` coordinates in [0, 1] and pixels per unit depth."""
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    kind = rng.choice(3, p=[0.4, 0.35, 0.25])  # full, rectangle, sector
    if kind == 0:
        fov = np.ones((h, w), bool)
        depth_px = float(h)
        d, lat = yy / depth_px, xx / (w - 1)
    elif kind == 1:
        left, right = rng.uniform(0.03, 0.13, size=2) * w
        top, bottom = rng.uniform(0.0, 0.07) * h, rng.uniform(0.0, 0.05) * h
        fov = (xx >= left) & (xx < w - right) & (yy >= top) & (yy < h - bottom)
        depth_px = h - top - bottom
        d, lat = (yy - top) / depth_px, (xx - left) / (w - left - right)
    else:
        apex_y = -rng.uniform(0.5, 1.6) * h
        cx = (w - 1) / 2 + rng.uniform(-0.02, 0.02) * w
        r0 = -apex_y + rng.uniform(0.0, 0.05) * h
        depth_px = rng.uniform(0.9, 1.05) * h
        r1 = r0 + depth_px
        half_angle = math.asin(min(0.999, rng.uniform(0.42, 0.5) * w / r1))
        rho = np.hypot(yy - apex_y, xx - cx)
        theta = np.arctan2(xx - cx, yy - apex_y)
        fov = (rho >= r0) & (rho <= r1) & (np.abs(theta) <= half_angle)
        d, lat = (rho - r0) / depth_px, (theta / half_angle + 1) / 2
    return fov, np.clip(d, 0, 1.2), np.clip(lat, 0, 1), depth_px, yy, xx


# ----------------------------------------------------------------------------------------------------------------------
# tissue


def _tissue(rng, d, lat, depth_px, yy, xx, scale):
    """Echogenicity map (linear amplitude, about 0..1) of skin, fat, gland, fascia, muscle and chest wall."""
    shape = d.shape
    px = 1.0 / depth_px  # one pixel in depth units
    edge = 0.7 * px

    skin_top = rng.uniform(0.0, 0.03) + np.abs(_wave(rng, lat, 0.01))
    skin_bot = skin_top + max(rng.uniform(0.012, 0.025), 1.6 * px)
    fat_bot = skin_bot + rng.uniform(0.07, 0.28) + _wave(rng, lat, 0.05, n_terms=4, max_freq=2.0)
    gland_bot = fat_bot + rng.uniform(0.3, 0.55) + _wave(rng, lat, 0.07, n_terms=4, max_freq=1.5)
    muscle_bot = gland_bot + rng.uniform(0.1, 0.25) + _wave(rng, lat, 0.04, n_terms=4, max_freq=1.5)

    # subcutaneous fat: dark lobules separated by bright curved septa (zero crossings of a smooth random field)
    lobules = _smooth_noise(rng, shape, (3.0 * scale, 4.5 * scale))
    septa = np.exp(-((lobules / rng.uniform(0.12, 0.22)) ** 2))
    fat = rng.uniform(0.16, 0.3) * (1 + rng.uniform(0.8, 1.8) * septa)
    fat = fat * np.clip(1 + 0.15 * _smooth_noise(rng, shape, scale), 0.3, None)

    # fibroglandular layer: bright and streaky (horizontal fibres), with darker fat islands
    gland_level = rng.uniform(0.45, 0.8)
    fibres = _smooth_noise(rng, shape, (0.9 * scale, 3.5 * scale))
    mottle = _smooth_noise(rng, shape, 2.0 * scale)
    gland = gland_level * np.clip(1 + 0.25 * fibres + 0.2 * mottle, 0.2, None)
    islands = _smooth_noise(rng, shape, (3.0 * scale, 5.0 * scale))
    island_w = _step(islands, rng.uniform(1.0, 2.0), 0.15)
    gland = gland * (1 - island_w) + fat * island_w

    # pectoral muscle: dark with oblique striations
    angle = rng.uniform(0.05, 0.45) * rng.choice([-1, 1])
    u = -xx * math.sin(angle) + yy * math.cos(angle) + 1.5 * scale * _smooth_noise(rng, shape, 4 * scale)
    stripes = np.cos(2 * np.pi * u / (rng.uniform(5.0, 9.0) * scale))
    muscle = rng.uniform(0.18, 0.32) * (1 + rng.uniform(1.0, 2.0) * np.clip(stripes, 0, None) ** 3)
    wall = rng.uniform(0.08, 0.2) * np.clip(1 + 0.3 * _smooth_noise(rng, shape, 3 * scale), 0.2, None)

    s1, s2 = _step(d, skin_top, edge), _step(d, skin_bot, edge)
    s3 = _step(d, fat_bot, 1.5 * px)
    s4, s5 = _step(d, gland_bot, 1.5 * px), _step(d, muscle_bot, 2 * px)
    skin = rng.uniform(0.8, 1.1)
    echo = (1 - s1) * 0.02 + (s1 - s2) * skin + (s2 - s3) * fat + (s3 - s4) * gland + (s4 - s5) * muscle + s5 * wall
    fascia_amp = rng.uniform(0.2, 0.7)
    for boundary in (gland_bot, muscle_bot):
        echo = echo + fascia_amp * np.exp(-(((d - boundary) / (1.2 * px)) ** 2))
    return np.clip(echo, 0.005, None), (skin_bot, fat_bot, gland_bot)


# ----------------------------------------------------------------------------------------------------------------------
# lesion


def _lesion_params(rng: np.random.Generator, cls: str, m: int) -> dict:
    """Shape parameters of a benign or malignant lesion (see the module docstring for the intent)."""
    p: dict = {}
    if cls == "benign":
        p["r_eq"] = rng.uniform(0.07, 0.19) * m
        p["ratio"] = rng.uniform(1.15, 2.1) if rng.random() < 0.8 else rng.uniform(0.85, 1.2)  # width / height
        p["rot"] = rng.normal(0, 0.12)
        harmonics = [(int(rng.integers(2, 4)), rng.uniform(0.0, 0.04))]
        if rng.random() < 0.3:  # gently lobulated
            harmonics.append((int(rng.integers(2, 6)), rng.uniform(0.05, 0.13)))
        p["harmonics"], p["spicules"] = harmonics, []
    else:
        p["r_eq"] = rng.uniform(0.08, 0.21) * m
        p["ratio"] = rng.uniform(0.6, 1.0) if rng.random() < 0.7 else rng.uniform(0.95, 1.4)
        p["rot"] = rng.normal(0, 0.2)
        if rng.random() < 0.2:  # fairly round and smooth
            p["harmonics"] = [(int(rng.integers(5, 9)), rng.uniform(0.02, 0.05))]
            p["spicules"] = []
        else:
            p["harmonics"] = [
                (int(rng.integers(2, 5)), rng.uniform(0.04, 0.14)),  # angular, irregular outline
                (int(rng.integers(6, 15)), rng.uniform(0.04, 0.12)),  # microlobulation
            ]
            n_spic = int(rng.integers(2, 8)) if rng.random() < 0.75 else 0
            p["spicules"] = [
                (rng.uniform(0, 2 * np.pi), rng.uniform(0.15, 0.5), rng.uniform(0.03, 0.06)) for _ in range(n_spic)
            ]
    p["phases"] = [rng.uniform(0, 2 * np.pi) for _ in p["harmonics"]]
    return p


def _lesion_mask(p: dict, cy: float, cx: float, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Pixels inside the polar outline ``r(phi)`` of lesion ``p`` centred at (cy, cx)."""
    a = p["r_eq"] * math.sqrt(p["ratio"])  # half-width
    b = p["r_eq"] / math.sqrt(p["ratio"])  # half-height
    dy, dx = yy - cy, xx - cx
    c, s = math.cos(p["rot"]), math.sin(p["rot"])
    u, v = c * dx + s * dy, -s * dx + c * dy  # lesion frame
    rho = np.hypot(u, v)
    phi = np.arctan2(v, u)
    radius = a * b / np.sqrt((b * np.cos(phi)) ** 2 + (a * np.sin(phi)) ** 2)
    pert = np.zeros_like(phi)
    for (k, amp), phase in zip(p["harmonics"], p["phases"]):
        pert += amp * np.cos(k * phi + phase)
    for centre, amp, width in p["spicules"]:
        dphi = np.angle(np.exp(1j * (phi - centre)))
        pert += amp * np.exp(-0.5 * (dphi / width) ** 2)
    return rho <= radius * (1 + pert)


def _place_lesion(rng, cls, fov, layers, yy, xx):
    """Draw and place a lesion inside the field of view; returns its mask and parameters."""
    h, w = fov.shape
    _, fat_bot, gland_bot = layers
    for attempt in range(30):
        p = _lesion_params(rng, cls, min(h, w))
        half_h = p["r_eq"] / math.sqrt(p["ratio"])
        # depth: mostly within the fibroglandular layer, sometimes in the fat
        lo = max(float(np.mean(fat_bot)) - 0.05, 0.12) * h
        hi = min(float(np.mean(gland_bot)), 0.8) * h
        lo, hi = lo + 0.5 * half_h, max(lo + 0.5 * half_h + 1, hi - 0.5 * half_h)
        cy = rng.uniform(lo, hi)
        row = fov[int(np.clip(round(cy), 0, h - 1))]
        cols = np.flatnonzero(row)
        if cols.size < 8:
            continue
        x_lo, x_hi = float(cols[0]), float(cols[-1])
        half_w = p["r_eq"] * math.sqrt(p["ratio"])
        if attempt > 20:  # fall back to the middle of the field of view
            cx = (x_lo + x_hi) / 2
        elif rng.random() < 0.03:  # rarely: cut by the edge of the field of view
            cx = x_lo + rng.uniform(0.2, 0.7) * half_w if rng.random() < 0.5 else x_hi - rng.uniform(0.2, 0.7) * half_w
        else:
            margin = min(half_w + 0.05 * w, 0.45 * (x_hi - x_lo))
            cx = rng.uniform(x_lo + margin, x_hi - margin)
        full = _lesion_mask(p, cy, cx, yy, xx)
        mask = full & fov
        if mask.sum() >= max(12, 0.6 * full.sum()):
            return mask, p
    raise RuntimeError("could not place a lesion in the field of view")  # pragma: no cover - geometry always allows


def _apply_lesion(rng, cls, echo, mask, yy, scale):
    """Darken the lesion, add margin features (capsule or halo) and posterior enhancement or shadowing."""
    shape = echo.shape
    benign = cls == "benign"
    dist_out = ndimage.distance_transform_edt(~mask)

    # internal low-level echoes; margins sharp (benign) or indistinct (malignant)
    if benign and rng.random() < 0.15:
        level, het = rng.uniform(0.012, 0.035), rng.uniform(0.1, 0.4)  # near-anechoic, cyst-like
    else:
        level = rng.uniform(0.03, 0.11)
        het = rng.uniform(0.15, 0.6) if benign else rng.uniform(0.25, 0.8)
    inner = level * np.clip(1 + het * _smooth_noise(rng, shape, 1.5 * scale), 0.1, None)
    blur = rng.uniform(0.3, 0.7) * scale if benign else rng.uniform(0.8, 1.8) * scale
    alpha = np.clip(ndimage.gaussian_filter(mask.astype(float), blur), 0, 1)
    # keep the drawn lesion dark right up to the mask border even with a blurred margin
    alpha = np.maximum(alpha, mask * rng.uniform(0.75, 0.95))
    echo = echo * (1 - alpha) + inner * alpha

    if benign:
        if rng.random() < 0.45:  # thin echogenic capsule
            capsule = np.exp(-0.5 * ((dist_out - 0.5) / (0.6 * scale)) ** 2) * (~mask)
            echo = echo * (1 + rng.uniform(0.5, 1.5) * capsule)
        if rng.random() < 0.1:  # weak halo, to blur the cue
            echo = echo * (1 + rng.uniform(0.1, 0.35) * np.exp(-dist_out / (1.5 * scale)) * (~mask))
    elif rng.random() < 0.75:  # echogenic halo around an indistinct margin
        width = rng.uniform(1.0, 2.5) * scale
        halo = np.exp(-dist_out / width) * (~mask) * np.clip(1 + 0.4 * _smooth_noise(rng, shape, scale), 0, None)
        echo = echo * (1 + rng.uniform(0.3, 0.9) * halo)

    # posterior acoustic feature: a band below the lesion, straight down the beam
    u = rng.random()
    if benign:
        gain = rng.uniform(0.2, 0.9) if u < 0.7 else (-rng.uniform(0.05, 0.3) if u < 0.8 else 0.0)
        length = rng.uniform(0.15, 0.5)
    else:
        gain = -rng.uniform(0.5, 0.9) if u < 0.6 else (-rng.uniform(0.05, 0.35) if u < 0.85 else rng.uniform(0, 0.3))
        length = rng.uniform(0.5, 2.0)
    if gain != 0.0:
        h = shape[0]
        columns = mask.any(axis=0)
        bottom = np.where(columns, h - 1 - np.argmax(mask[::-1], axis=0), h)
        weight = ndimage.gaussian_filter1d(np.sqrt(mask.sum(axis=0) / max(mask.sum(axis=0).max(), 1)), 1.2 * scale)
        below = np.clip(yy - bottom[None, :], 0, None)
        band = (yy > bottom[None, :]) * np.exp(-below / (length * h)) * weight[None, :]
        band = ndimage.gaussian_filter(band, (1.0 * scale, 0.7 * scale))
        echo = echo * np.clip(1 + gain * band, 0.05, None)
    return echo


# ----------------------------------------------------------------------------------------------------------------------
# scanner: speckle, gain, compression, overlays


def _speckle(rng: np.random.Generator, shape, scale) -> np.ndarray:
    """Unit-mean Rayleigh speckle, correlated more laterally than axially."""
    sigma = (rng.uniform(0.6, 1.0) * scale, rng.uniform(1.1, 1.9) * scale)  # (axial, lateral)
    re = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    im = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    amp = np.hypot(re, im)
    amp /= amp.mean()
    strength = rng.uniform(0.7, 1.0)  # noise level varies between images
    return (1 - strength) + strength * amp


def _glyphs(rng, img, y0, x0, n_chars, scale, value):
    """Text-like overlay: a row of random 3x5 glyphs."""
    h, w = img.shape
    cell = max(1, int(round(scale)))
    for i in range(n_chars):
        bits = rng.random((5, 3)) < 0.55
        if rng.random() < 0.15:
            continue  # a space
        glyph = np.kron(bits, np.ones((cell, cell), bool))
        y, x = y0, x0 + i * 4 * cell
        gy, gx = min(glyph.shape[0], h - y), min(glyph.shape[1], w - x)
        if gy > 0 and gx > 0:
            img[y : y + gy, x : x + gx][glyph[:gy, :gx]] = value


def _cross(img, y, x, arm, value):
    h, w = img.shape
    y, x = int(round(y)), int(round(x))
    if 0 <= y < h and 0 <= x < w:
        img[y, max(0, x - arm) : x + arm + 1] = value
        img[max(0, y - arm) : y + arm + 1, x] = value


def _overlays(rng, img, fov, mask, scale):
    h, w = img.shape
    if rng.random() < 0.6:  # text-like annotation in a top corner
        n_chars = int(rng.integers(3, 9))
        x0 = 1 if rng.random() < 0.5 else max(1, w - 1 - n_chars * 4 * max(1, int(round(scale))))
        _glyphs(rng, img, 1, x0, n_chars, scale, int(rng.integers(170, 256)))
    if rng.random() < 0.35:  # caliper crosses
        arm = max(1, int(round(1.5 * scale)))
        value = int(rng.integers(200, 256))
        if mask.any():
            ys, xs = np.nonzero(mask)
            if rng.random() < 0.6:
                row = ys.mean()
                points = [(row, xs.min() - 2 * arm), (row, xs.max() + 2 * arm)]
            else:
                col = xs.mean()
                points = [(ys.min() - 2 * arm, col), (ys.max() + 2 * arm, col)]
        else:
            ys, xs = np.nonzero(fov)
            pick = rng.integers(0, ys.size, size=2)
            points = list(zip(ys[pick], xs[pick]))
        for y, x in points:
            _cross(img, y, x, arm, value)
    if rng.random() < 0.35:  # depth ruler dots down one side
        cols = np.flatnonzero(fov.any(axis=0))
        x = min(w - 1, cols[-1] + 2) if cols[-1] + 2 < w else w - 2
        for y in np.linspace(0.1 * h, 0.95 * h, int(rng.integers(4, 9))):
            img[int(y), max(0, x - 1) : x + 1] = 200
    return img


def make_us_case(
    rng: np.random.Generator, cls: str, size: tuple[int, int] = (128, 128)
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic breast ultrasound image and its lesion mask.

    Args:
        rng: the NumPy generator everything is drawn from (the same state gives the same case).
        cls: ``"normal"``, ``"benign"`` or ``"malignant"``.
        size: ``(H, W)``, each at least 32.

    Returns:
        ``(image, mask)``: a ``uint8`` ``(H, W)`` grey image and a ``bool`` ``(H, W)`` lesion mask (all False for
        ``"normal"``, non-empty otherwise).

    Raises:
        ValueError: unknown ``cls``, bad ``size`` or ``rng`` not a ``numpy.random.Generator``.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if cls not in US_CLASSES:
        raise ValueError(f"cls must be one of {', '.join(US_CLASSES)}; got {cls!r}")
    h, w = check_image_size(size)
    scale = min(h, w) / 128.0

    fov, d, lat, depth_px, yy, xx = _geometry(rng, h, w)
    echo, layers = _tissue(rng, d, lat, depth_px, yy, xx, scale)
    mask = np.zeros((h, w), bool)
    if cls != "normal":
        mask, _ = _place_lesion(rng, cls, fov, layers, yy, xx)
        echo = _apply_lesion(rng, cls, echo, mask, yy, scale)

    # attenuation with imperfect time-gain compensation, lateral fall-off
    alpha = rng.uniform(0.5, 2.0) * (1 - rng.uniform(0.4, 0.9))
    tgc = np.exp(-alpha * d) * np.exp(_wave(rng, np.clip(d, 0, 1), rng.uniform(0.1, 0.4), max_freq=2.0))
    lateral = 1 - rng.uniform(0.0, 0.3) * (2 * lat - 1) ** 2
    amplitude = echo * tgc * lateral * _speckle(rng, (h, w), scale)
    noise = rng.uniform(0.004, 0.02)
    amplitude = amplitude + noise * np.hypot(rng.standard_normal((h, w)), rng.standard_normal((h, w)))

    # log compression, gain, contrast, gamma, mild smoothing (lateral > axial)
    dynamic_range = rng.uniform(28.0, 42.0)
    db = 20 * np.log10(amplitude + 1e-6) + rng.uniform(-9.0, -4.0)
    grey = np.clip((db + dynamic_range) / dynamic_range, 0, 1)
    grey = np.clip(rng.uniform(0.85, 1.15) * (grey - 0.5) + 0.5 + rng.uniform(-0.06, 0.06), 0, 1)
    grey = grey ** rng.uniform(0.85, 1.3)
    grey = ndimage.gaussian_filter(grey, (0.4 * scale, 0.7 * scale))
    img = np.round(255 * grey).astype(np.uint8)
    img[~fov] = 0
    img = _overlays(rng, img, fov, mask, scale)
    return img, mask


# ----------------------------------------------------------------------------------------------------------------------
# dataset


def check_image_size(size) -> tuple[int, int]:
    if isinstance(size, Integral) and not isinstance(size, bool):
        size = (size, size)
    try:
        h, w = size
    except (TypeError, ValueError):
        raise ValueError(f"size must be (H, W), got {size!r}") from None
    for side in (h, w):
        if not isinstance(side, Integral) or isinstance(side, bool) or side < 32:
            raise ValueError(f"size must be two integers >= 32 (H, W), got {size!r}")
    return int(h), int(w)
