"""What ``bmtl predict`` draws and names: file names in titles are text, never matplotlib mathtext; derived names of
long inputs are shortened to the file system's limit, not failed."""

from __future__ import annotations

import os

import numpy as np
import pytest

from pipeline import plots
from pipeline.atomic import NAME_MAX, atomic_path
from pipeline.inference.outputs import (
    DRAW_MAX_SIDE,
    capped,
    capped_size,
    derived_name,
    heatmap_figure,
    write_heatmap,
    write_overlay,
)


def test_a_dollar_file_name_is_drawn_as_text(tmp_path):
    image = np.random.default_rng(0).random((24, 32))
    mask = np.zeros((24, 32), bool)
    mask[5:10, 5:12] = True
    name = "scan_$\\frac{1}{$_left.png"   # invalid mathtext: parsing it would fail the whole overlay
    path = write_overlay(tmp_path / "o.png", image, mask, [name, "benign p=0.80"])
    assert path.stat().st_size > 1000
    grid = plots.plot_overlays([image], [mask.astype(np.float32)], [mask.astype(np.float32)], [name],
                               tmp_path / "grid.png")
    assert grid.stat().st_size > 1000


def test_a_long_input_name_gives_short_unique_derived_names(tmp_path):
    short = derived_name("sub/case", "_overlay.png")
    assert short == "sub/case_overlay.png"   # names that fit are kept as they are
    stem_a, stem_b = "a" * 249 + "1", "a" * 249 + "2"   # 250-character stems that differ only at their end
    names = [derived_name(f"sub/{stem}", "_mask", reserve=len(".nii.gz")) for stem in (stem_a, stem_b)]
    assert names[0] != names[1] and all(n.startswith("sub/" + "a" * 200) and n.endswith("_mask") for n in names)
    assert all(len(os.fsencode(os.path.basename(n) + ".nii.gz")) == NAME_MAX for n in names)
    # multi-byte characters are never cut in half
    accented = derived_name("é" * 126, "_gradcam.png")
    assert len(os.fsencode(accented)) <= NAME_MAX and accented.startswith("é" * 100) and "\udcc3" not in accented
    written = tmp_path / derived_name(stem_a, "_overlay.png")
    written.write_bytes(b"x")   # the file system takes it
    assert written.exists()


def test_atomic_temporary_name_of_a_target_at_the_name_limit_fits(tmp_path):
    target = tmp_path / ("t" * (NAME_MAX - len(".nii.gz")) + ".nii.gz")   # a valid name of exactly 255 bytes
    with atomic_path(target, fsync=False) as tmp:
        assert len(os.fsencode(tmp.name)) <= NAME_MAX and tmp.name.endswith(".tmp.nii.gz")
        tmp.write_bytes(b"content")
    assert target.read_bytes() == b"content" and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_an_overlay_of_a_huge_input_is_drawn_from_a_capped_copy(tmp_path, monkeypatch):
    """matplotlib gets copies at most DRAW_MAX_SIDE pixels on their longest side (a full-size 8000 x 8000 float
    image took gigabytes); the contour of the shrunken mask still follows the lesion."""
    from matplotlib.axes import Axes

    drawn = {}
    for method in ("imshow", "contour"):
        real = getattr(Axes, method)

        def spy(self, data, *args, _real=real, _name=method, **kwargs):
            drawn[_name] = np.asarray(data)
            return _real(self, data, *args, **kwargs)

        monkeypatch.setattr(Axes, method, spy)
    h, w = 5000, 3000
    image = np.zeros((h, w), np.float32)
    mask = np.zeros((h, w), bool)
    mask[1000:3000, 500:2500] = True
    image[mask] = 200.0
    write_overlay(tmp_path / "o.png", image, mask, ["big", "benign"])
    expected = (DRAW_MAX_SIDE, round(w * DRAW_MAX_SIDE / h))
    assert drawn["imshow"].shape == expected and drawn["contour"].shape == expected
    shrunk = drawn["contour"] >= 0.5   # the lesion at the drawn size: the same box, scaled
    rows, cols = np.flatnonzero(shrunk.any(1)), np.flatnonzero(shrunk.any(0))
    scale = DRAW_MAX_SIDE / h
    assert abs(rows[0] - 1000 * scale) <= 1 and abs(rows[-1] + 1 - 3000 * scale) <= 1
    assert abs(cols[0] - 500 * scale) <= 1 and abs(cols[-1] + 1 - 2500 * scale) <= 1
    assert drawn["imshow"].max() == pytest.approx(200.0)


def test_capped_keeps_small_arrays_and_the_aspect_ratio():
    small = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert capped(small) is small or np.array_equal(capped(small), small)
    assert capped_size((8000, 8000)) == (DRAW_MAX_SIDE, DRAW_MAX_SIDE)
    assert capped_size((100, 9000), max_side=900) == (10, 900)
    assert capped(np.ones((4000, 10), bool), size=(2000, 5)).max() == pytest.approx(1.0)


def test_a_gradcam_heatmap_names_its_class_and_has_a_colour_bar(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    image, heat = rng.random((64, 64)), np.zeros((16, 16))
    heat[4:8, 10:14] = 1.0
    name = "scan_$\\frac{1}{$.png"   # invalid mathtext: drawn as text
    fig = heatmap_figure(image, heat, "malignant", name)
    image_ax, bar_ax = fig.axes   # the image, and the colour bar beside it
    assert image_ax.get_title() == f"Grad-CAM of class: malignant\n{name}"
    assert bar_ax.get_ylabel() == "Grad-CAM (class evidence, 0-1)"
    assert bar_ax.get_ylim() == (0.0, 1.0)
    path = write_heatmap(tmp_path / "h.png", image, heat, "malignant", name)
    width, height = Image.open(path).size
    assert width > height   # a square image under a two-line title: only the colour bar makes it wider
    assert bar_ax.get_position().x0 > image_ax.get_position().x1   # the bar is beside the image, not over it
    drawn = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    assert (drawn[..., 0] - drawn[..., 2]).max() > 100   # the hot spot (red) shows
