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


def test_an_unreadable_folder_is_an_error_row_naming_it(tmp_path, monkeypatch):
    """A folder that cannot be listed (simulated: the tests run as root, where chmod does not stop reading) is an
    ``unsupported`` item naming the folder and the OS error; its readable siblings are found as usual."""
    _png(tmp_path / "in" / "a.png")
    _png(tmp_path / "in" / "locked" / "b.png")
    _png(tmp_path / "in" / "open" / "c.png")
    real_scandir = os.scandir

    def scandir(path="."):
        if os.path.basename(os.fspath(path)) == "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    items = {item.name: item for item in discover_inputs(tmp_path / "in")}
    assert set(items) == {"a", "locked", "open/c"}
    locked = items["locked"]
    assert locked.kind == "unsupported" and locked.path == tmp_path / "in" / "locked" and locked.relative == "locked"
    assert locked.problem == "unreadable folder, its files are not predicted (PermissionError: Permission denied)"


def test_an_unreadable_input_folder_itself_is_one_error_row(tmp_path, monkeypatch):
    _png(tmp_path / "in" / "a.png")

    def scandir(path="."):
        raise OSError(5, "Input/output error", os.fspath(path))

    monkeypatch.setattr(os, "scandir", scandir)
    [item] = discover_inputs(tmp_path / "in")
    assert (item.kind, item.name, item.relative) == ("unsupported", "in", "in")
    assert "OSError: Input/output error" in item.problem


def test_an_output_folder_holding_the_input_folder_is_refused(tmp_path):
    """Discovery leaves the output folder out; an output above (or equal to) the input would leave out every input:
    refused before any work, naming both folders. Inside the input, or beside a single file, it is fine."""
    from pipeline.inference import predict

    _png(tmp_path / "data" / "in" / "a.png")
    inputs = tmp_path / "data" / "in"
    for output, relation in ((tmp_path / "data", "contains"), (tmp_path, "contains"), (inputs, "is")):
        with pytest.raises(ValueError, match=f"the output folder {output} {relation} the input folder {inputs}"):
            discover_inputs(inputs, exclude=output)
        # predict refuses it before the bundle is even opened (this one does not exist) and writes nothing
        with pytest.raises(ValueError, match=f"the output folder {output} {relation} the input folder"):
            predict(tmp_path / "no_bundle", inputs, output, progress=False)
    os.symlink(tmp_path / "data", tmp_path / "link")   # the same folder through a link
    with pytest.raises(ValueError, match="contains the input folder"):
        discover_inputs(inputs, exclude=tmp_path / "link")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.png", "data", "in", "link"]
    assert [i.name for i in discover_inputs(inputs, exclude=inputs / "out")] == ["a"]
    assert [i.name for i in discover_inputs(inputs / "a.png", exclude=inputs)] == ["a"]
