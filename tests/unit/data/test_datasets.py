"""Item errors of the bundles' datasets name the file, and never make an exception chain that loops."""

from __future__ import annotations

import traceback

import numpy as np
import pytest
from PIL import Image

from pipeline.data.datasets import Dataset
from pipeline.data.io import DataError
from pipeline.data.readers import LoadRasterd


def test_a_readers_error_reaches_the_user_naming_the_file(tmp_path):
    image = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(image)
    image.write_bytes(image.read_bytes()[:200])
    mask = tmp_path / "m.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(mask)
    dataset = Dataset([{"image": str(image), "label": str(mask)}], transform=LoadRasterd(keys=["image", "label"]))
    with pytest.raises(DataError) as info:
        dataset[0]
    assert info.value.path == image and "unreadable or truncated image" in info.value.problem
    text = "".join(traceback.format_exception(info.value))   # finite: no cycle in the chain
    assert text.count("unreadable or truncated image") < 10
