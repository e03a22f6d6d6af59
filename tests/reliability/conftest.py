"""Fixtures of the reliability tests: one tiny prepared ultrasound datalist and a tiny preset."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.data.prepare import prepare
from pipeline.data.synthetic import make_us_dataset
from tests.integration.conftest import tiny_preset


@pytest.fixture(scope="session")
def small_datalist(tmp_path_factory) -> Path:
    """24 synthetic 64x64 ultrasound images in 3 folds: 16 train (2 batches of 8), 8 validation."""
    root = tmp_path_factory.mktemp("reliability_us")
    raw = make_us_dataset(root / "raw", n=24, seed=0, size=(64, 64))
    _, paths = prepare("busi", raw, root / "prepared", n_folds=3, seed=0)
    return paths["datalist"]


@pytest.fixture(scope="session")
def small_preset(tmp_path_factory) -> Path:
    return tiny_preset(tmp_path_factory.mktemp("preset") / "preset.yaml")


@pytest.fixture(scope="session")
def exported_bundle(tmp_path_factory) -> Path:
    """The US bundle exported (TorchScript) from an untrained tiny run: enough for `bmtl predict` on bad inputs."""
    from pipeline.deploy import export_bundle
    from tests.integration.conftest import US_BUNDLE
    from tests.integration.test_export_bundle import make_run

    root = tmp_path_factory.mktemp("reliability_exported")
    run = make_run(root / "run", "segresnet_shared")
    export_bundle(US_BUNDLE, run, root / "exported", formats=["torchscript"])
    return root / "exported"
