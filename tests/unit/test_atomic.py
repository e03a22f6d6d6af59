"""``pipeline.atomic``: a file (or folder) is replaced only when its new content is complete; a failure or a kill
before the rename leaves the previous one and no temporary file."""

from __future__ import annotations

import json
import os
import stat

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from pipeline import atomic
from pipeline.atomic import (
    atomic_dir,
    atomic_path,
    write_csv_atomic,
    write_json_atomic,
    write_rows_atomic,
    write_text_atomic,
)


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _kill_before_rename(monkeypatch) -> None:
    """``os.replace`` fails as if the process died between writing the new file and renaming it."""

    def killed(src, dst):
        raise OSError("killed before the rename")

    monkeypatch.setattr(atomic.os, "replace", killed)


def test_target_replaced_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old\n")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".table.csv.") and tmp.exists()
        tmp.write_text("new\n")
        assert target.read_text() == "old\n"  # nothing visible before the block ends
    assert target.read_text() == "new\n"
    assert _names(tmp_path) == ["table.csv"]


def test_exception_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text('{"old": 1}')
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text('{"new": ')  # half written
            raise RuntimeError("disk full")
    assert target.read_text() == '{"old": 1}'
    assert _names(tmp_path) == ["summary.json"]


def test_failed_rename_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "history.csv"
    target.write_text("epoch\n1\n")
    _kill_before_rename(monkeypatch)
    with pytest.raises(OSError, match="killed before the rename"):
        write_text_atomic(target, "epoch\n1\n2\n")
    assert target.read_text() == "epoch\n1\n"
    assert _names(tmp_path) == ["history.csv"]


def test_new_file_and_missing_folder(tmp_path):
    target = tmp_path / "a" / "b" / "new.txt"
    assert write_text_atomic(target, "x") == target
    assert target.read_text() == "x"
    assert _names(target.parent) == ["new.txt"]


@pytest.mark.parametrize("name, suffix", [("per_image.csv", ".csv"), ("mask.nii.gz", ".nii.gz"),
                                          ("MASK.NII.GZ", ".NII.GZ"), ("model.ts", ".ts"), ("LICENSE", "")])
def test_temporary_name_ends_with_the_target_suffix(tmp_path, name, suffix):
    with atomic_path(tmp_path / name) as tmp:
        assert tmp.name.startswith(f".{name}.")
        assert tmp.name.endswith(f".tmp{suffix}")
        tmp.write_bytes(b"")


def test_nifti_written_through_the_temporary_path_is_compressed(tmp_path):
    target = tmp_path / "mask.nii.gz"
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    with atomic_path(target) as tmp:
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp))  # nibabel picks the format from the suffix
    assert target.read_bytes()[:2] == b"\x1f\x8b"  # gzip
    np.testing.assert_array_equal(np.asarray(nib.load(str(target)).dataobj), data)
    assert _names(tmp_path) == ["mask.nii.gz"]


def test_permissions_follow_the_umask_and_an_existing_file(tmp_path):
    old_umask = os.umask(0o022)
    try:
        new = write_text_atomic(tmp_path / "new.txt", "x")
        assert stat.S_IMODE(os.stat(new).st_mode) == 0o644  # as open(path, "w"), not mkstemp's 0o600
        kept = tmp_path / "kept.txt"
        kept.write_text("x")
        os.chmod(kept, 0o640)
        write_text_atomic(kept, "y")
        assert stat.S_IMODE(os.stat(kept).st_mode) == 0o640
    finally:
        os.umask(old_umask)


def test_json_helper(tmp_path):
    path = write_json_atomic(tmp_path / "run_config.json", {"a": 1, "path": tmp_path})
    assert json.loads(path.read_text()) == {"a": 1, "path": str(tmp_path)}  # default=str
    assert path.read_text().endswith("}\n")
    with pytest.raises(ValueError):  # refused before the file is touched
        write_json_atomic(path, {"dice": float("nan")}, allow_nan=False)
    with pytest.raises(TypeError):
        write_json_atomic(path, {"x": object()}, default=None)
    assert json.loads(path.read_text())["a"] == 1
    assert _names(tmp_path) == ["run_config.json"]


def test_csv_helpers(tmp_path):
    frame = pd.DataFrame({"id": ["a", "b"], "dice": [0.5, 1.0]})
    path = write_csv_atomic(tmp_path / "per_image.csv", frame)
    pd.testing.assert_frame_equal(pd.read_csv(path), frame)  # index=False by default
    rows = write_rows_atomic(tmp_path / "rows.csv", ["file", "status"],
                             [{"file": "é.png", "status": "ok"}, {"file": "b.png"}])
    assert rows.read_text(encoding="utf-8") == "file,status\né.png,ok\nb.png,\n"
    with pytest.raises(ValueError):
        write_rows_atomic(rows, ["file"], [{"file": "x", "extra": 1}])
    write_rows_atomic(rows, ["file"], [{"file": "x", "extra": 1}], extrasaction="ignore")
    assert rows.read_text() == "file\nx\n"
    assert _names(tmp_path) == ["per_image.csv", "rows.csv"]


def test_atomic_dir_swaps_only_a_complete_folder(tmp_path):
    target = tmp_path / "bundle"
    (target / "models").mkdir(parents=True)
    (target / "models" / "model.pt").write_bytes(b"old")
    with pytest.raises(RuntimeError, match="parity"):
        with atomic_dir(target) as staging:
            (staging / "models").mkdir()
            (staging / "models" / "model.pt").write_bytes(b"new")
            assert (target / "models" / "model.pt").read_bytes() == b"old"
            raise RuntimeError("parity check failed")
    assert (target / "models" / "model.pt").read_bytes() == b"old"
    assert _names(tmp_path) == ["bundle"]

    with atomic_dir(target) as staging:
        (staging / "models").mkdir()
        (staging / "models" / "model.ts").write_bytes(b"new")
    assert _names(target / "models") == ["model.ts"]  # replaced, not merged
    assert _names(tmp_path) == ["bundle"]


def test_atomic_dir_puts_the_old_folder_back_when_the_swap_fails(tmp_path, monkeypatch):
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    real = os.replace

    def second_rename_fails(src, dst):
        if str(src).endswith(".tmpdir"):
            raise OSError("killed before the rename")
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", second_rename_fails)
    with pytest.raises(OSError, match="killed"):
        with atomic_dir(target) as staging:
            (staging / "new.txt").write_text("new")
    assert _names(target) == ["keep.txt"] and (target / "keep.txt").read_text() == "old"
    assert _names(tmp_path) == ["bundle"]
