"""``benchmarks/recipe_archive.py``: finished runs kept in the repository without this machine's paths, and back."""

from __future__ import annotations

import json
import shutil
import subprocess

import pandas as pd
import pytest

import bench            # benchmarks/ is on the path (tests/conftest.py)
import recipe_archive


def _run(output, name, finished=True, dice=(0.8, 0.6, 0.9, 0.7)):
    """A recipe run folder as the benchmark leaves it: checkpoints beside the small files, absolute paths inside."""
    run = output / "splitA" / "runs" / name
    (run / "models").mkdir(parents=True)
    (run / "models" / "model.pt").write_bytes(b"weights")   # never archived
    (run / "models" / "operating_point.json").write_text(json.dumps({"threshold": 0.4}))
    config = {"network_name": "segresnet_shared", "classes": ["benign", "malignant"],
              "datalist": str(output / "data_A" / "datalist.json"),
              "mlflow": {"tracking_uri": f"sqlite:///{output}/mlruns.db"}}
    (run / "run_config.json").write_text(json.dumps(config))
    (run / "history.csv").write_text("epoch,epoch_seconds\n1,40.0\n")
    for split in ("test", "val"):
        (run / f"eval_{split}").mkdir()
        (run / f"eval_{split}" / "summary.json").write_text(json.dumps({"classification": {"auc": 0.9}}))
        pd.DataFrame({"id": list("abcd"), "file": [str(output / "data_A" / "images" / f"{i}.png") for i in "abcd"],
                      "true_class": ["benign", "malignant"] * 2, "prob_malignant": [0.2, 0.7, 0.4, 0.6],
                      "dice": list(dice)}).to_csv(
            run / f"eval_{split}" / "per_image.csv", index=False)
        (run / f"log_eval_{split}.txt").write_text("log")   # never archived
    if finished:
        (run / "done.json").write_text(json.dumps({"epochs": 1}))
    return run


def test_save_keeps_finished_runs_without_paths_and_restore_puts_them_back(tmp_path):
    output, archive = tmp_path / "machine1" / "runs", tmp_path / "repo" / "results"
    output.mkdir(parents=True)
    (output / "splitA").mkdir()
    (output / "splitA" / "plan.json").write_text(json.dumps({"default": {"epoch_seconds": 40.0}}))
    _run(output, "default_seed0")
    _run(output, "reference_seed0", dice=(0.7, 0.5, 0.8, 0.6))
    _run(output, "lever_seed0", finished=False)      # still training: not a result

    assert recipe_archive.save(output, archive) == (17, 0)
    kept = sorted(p.relative_to(archive).as_posix() for p in archive.rglob("*") if p.is_file())
    assert "splitA/plan.json" in kept and "splitA/runs/default_seed0/eval_val/per_image.csv" in kept
    assert not [k for k in kept if "lever_seed0" in k or k.endswith((".pt", ".txt"))]
    for path in archive.rglob("*.*"):
        assert str(tmp_path) not in path.read_text(), path
    config = json.loads((archive / "splitA/runs/default_seed0/run_config.json").read_text())
    assert config["datalist"] == "<output>/data_A/datalist.json"
    assert config["mlflow"]["tracking_uri"] == "sqlite:///<output>/mlruns.db"
    assert recipe_archive.save(output, archive) == (0, 17)   # again: nothing changed

    # a new machine: the paired comparison from the restored files, paths pointing at the new output
    elsewhere = tmp_path / "machine2" / "runs"
    assert recipe_archive.restore(archive, elsewhere) == (17, 0)
    restored = pd.read_csv(elsewhere / "splitA/runs/default_seed0/eval_test/per_image.csv")
    assert restored["file"].tolist() == [str(elsewhere / "data_A" / "images" / f"{i}.png") for i in "abcd"]
    diff = bench.paired_bootstrap(elsewhere / "splitA/runs/default_seed0/eval_test/per_image.csv",
                                  elsewhere / "splitA/runs/reference_seed0/eval_test/per_image.csv", n_resamples=50)
    assert diff["dice"]["diff"] == pytest.approx(0.1)
    # restored into the original folder: byte for byte what was saved from it
    assert recipe_archive.restore(archive, output) == (0, 17)


def test_a_different_run_under_the_same_name_is_not_overwritten(tmp_path):
    output, archive = tmp_path / "runs", tmp_path / "results"
    _run(output, "default_seed0")
    recipe_archive.save(output, archive)
    before = (archive / "splitA/runs/default_seed0/eval_test/per_image.csv").read_text()
    other = tmp_path / "other"
    _run(other, "default_seed0", dice=(0.1, 0.2, 0.3, 0.4))   # another run, the same row name
    with pytest.raises(FileExistsError, match="differ from what would be written.*--replace"):
        recipe_archive.save(other, archive)
    assert (archive / "splitA/runs/default_seed0/eval_test/per_image.csv").read_text() == before
    with pytest.raises(FileExistsError):
        recipe_archive.restore(archive, other)
    assert recipe_archive.save(other, archive, replace=True)[0] == 2   # the two per_image.csv
    assert (archive / "splitA/runs/default_seed0/eval_test/per_image.csv").read_text() != before


def test_a_path_outside_the_output_is_refused_and_nothing_written(tmp_path):
    output, archive = tmp_path / "runs", tmp_path / "results"
    run = _run(output, "default_seed0")
    (run / "run_config.json").write_text(json.dumps({"datalist": "/data/busbra/datalist.json"}))
    with pytest.raises(ValueError, match=r"run_config.json holds '/data/busbra/datalist.json', a path outside"):
        recipe_archive.save(output, archive)
    assert not archive.exists()


def test_cli_names_the_folder_without_runs(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        recipe_archive.main(["save", "--output", str(tmp_path / "empty"), "--archive", str(tmp_path / "a")])
    assert exit_info.value.code == 1
    assert "empty: no finished run" in capsys.readouterr().err
    _run(tmp_path / "runs", "default_seed0")
    assert recipe_archive.main(["save", "--output", str(tmp_path / "runs"), "--archive", str(tmp_path / "a")]) == 0
    assert "8 files written, 0 already the same" in capsys.readouterr().out


def test_the_archive_in_the_repository_is_not_ignored_by_git():
    """``runs/`` folders are ignored everywhere else (training output): the archive's must be committed."""
    if shutil.which("git") is None or not (recipe_archive.REPO / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ("benchmarks/results/recipe/splitA/runs/default_seed0/eval_test/per_image.csv",
                 "benchmarks/results/recipe/splitA/runs/default_seed0/models/operating_point.json"):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=recipe_archive.REPO)
        assert ignored.returncode == 1, f"{path} is ignored by git"
