"""What ``bmtl predict`` draws: file names in titles are text, never matplotlib mathtext."""

from __future__ import annotations

import numpy as np

from pipeline import plots
from pipeline.inference.outputs import write_overlay


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
