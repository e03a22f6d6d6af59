from __future__ import annotations

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
