from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from pipeline import resources


def test_the_checkout_folders_come_first():
    assert resources.resource_dir("bundles") == resources._CHECKOUT / "bundles"
    assert (resources.resource_dir("configs") / "nmtnet.yaml").is_file()


def test_an_installed_copy_is_found_under_the_prefix(monkeypatch, tmp_path):
    (tmp_path / "share" / "breast-mtl" / "bundles").mkdir(parents=True)
    monkeypatch.setattr(resources, "_CHECKOUT", tmp_path / "not_a_checkout")
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.setattr(sys, "base_prefix", str(tmp_path))
    monkeypatch.setattr(resources.sysconfig, "get_path", lambda name: str(tmp_path))
    monkeypatch.setattr(resources.site, "USER_BASE", str(tmp_path / "user"))
    assert resources.resource_dir("bundles") == tmp_path / "share" / "breast-mtl" / "bundles"
    with pytest.raises(FileNotFoundError, match=r"configs/ folder was not found .*reinstall"):
        resources.resource_dir("configs")


def test_the_package_imports_without_the_project_folders(tmp_path):
    """An MLflow model (and an exported bundle's code copy) carries `pipeline/` alone: importing what its loader imports
    must not look for configs/ or bundles/ (mlflow models serve failed so on 2026-12-02)."""
    shutil.copytree(resources._CHECKOUT / "pipeline", tmp_path / "pipeline",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "BMTL_PRESETS": ""}
    code = "\n".join([
        "import pipeline.resources as resources",
        f"assert str(resources._CHECKOUT) == {str(tmp_path.resolve())!r}",   # the copy, not the checkout
        "resources._prefixes = lambda: []   # nor an installed share/breast-mtl",
        "import pipeline.deploy, pipeline.presets, pipeline.workflows, pipeline.mlflow_model",
        "import pipeline.inference.predictor",
    ])
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
