"""Fixtures of the bundle tests: tiny synthetic datasets prepared through `prepare`, and a tiny preset."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.data.prepare import prepare
from pipeline.data.synthetic import make_mr_dataset, make_us_dataset

REPO = Path(__file__).resolve().parents[2]
US_BUNDLE = REPO / "bundles" / "breast_us_mtl"
MR_BUNDLE = REPO / "bundles" / "breast_mri_mtl"


@pytest.fixture(scope="session")
def us_datalist(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("us")
    raw = make_us_dataset(root / "raw", n=30, seed=0, size=(64, 64))
    _, paths = prepare("busi", raw, root / "prepared", n_folds=3, seed=0)
    return paths["datalist"]


@pytest.fixture(scope="session")
def mr_datalist(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mr")
    raw = make_mr_dataset(root / "raw", n=6, seed=0, shape=(64, 64, 12))
    _, paths = prepare("nifti", raw, root / "prepared", n_folds=3, seed=0, negative_slices=1)
    return paths["datalist"]


def tiny_preset(path: Path, preset: str = "segresnet_shared_lesion", **values) -> Path:
    """``preset`` (the ultrasound bundle's default unless named) with its network at its smallest, 64x64 images and
    batches of 8, for fast tests; ``values`` replace more of its keys (e.g. ``seg_weight=0.0``)."""
    from pipeline.presets import load_preset

    base = load_preset(preset)
    base["network_kwargs"] = {**base["network_kwargs"], "init_filters": 8}
    base.update(image_size=[64, 64], batch_size=8, **values)
    path.write_text(yaml.safe_dump(base))
    return path
