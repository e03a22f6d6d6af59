"""Input discovery of `bmtl predict` with symbolic links: folders reached through links are read (each real folder
once, so a loop ends), a broken link is an error row, not a silent omission."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from pipeline.inference import discover_inputs

pytestmark = pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="POSIX symbolic links")


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    return path


def test_symbolic_links_are_followed_once_and_broken_ones_reported(tmp_path):
    _png(tmp_path / "in" / "a.png")
    _png(tmp_path / "elsewhere" / "b.png")
    (tmp_path / "in" / "sub").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "in" / "linked")        # a linked folder: read
    os.symlink("..", tmp_path / "in" / "sub" / "loop")                     # a loop back to in/: not read twice
    os.symlink(tmp_path / "gone.png", tmp_path / "in" / "broken.png")      # a broken link: reported
    items = {item.name: item for item in discover_inputs(tmp_path / "in")}
    assert set(items) == {"a", "linked/b", "broken"}
    assert items["linked/b"].kind == "raster"
    assert items["broken"].kind == "unsupported"
    assert items["broken"].problem == f"broken symbolic link (its target {tmp_path / 'gone.png'} does not exist)"


def test_the_output_folder_is_skipped_even_through_a_link(tmp_path):
    _png(tmp_path / "in" / "a.png")
    _png(tmp_path / "out" / "masks" / "a_mask.png")
    os.symlink(tmp_path / "out", tmp_path / "in" / "results")
    assert [item.name for item in discover_inputs(tmp_path / "in", exclude=tmp_path / "out")] == ["a"]
