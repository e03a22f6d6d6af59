from __future__ import annotations

import pytest

from pipeline.cli import build_parser, main
from pipeline.registry import list_networks


def test_networks_table_lists_every_network(capsys):
    assert main(["networks", "--size", "64", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for name in list_networks():
        assert f"| {name} |" in out
    assert "parameters" in out and "forward ms @ 64²" in out


def test_synth_then_prepare_then_check_splits(tmp_path, capsys):
    assert main(["synth", "--modality", "us", "--n", "12", "--out", str(tmp_path / "raw"), "--seed", "1"]) == 0
    assert main(["prepare", "--source", "busi", "--input", str(tmp_path / "raw"), "--output", str(tmp_path / "p"),
                 "--folds", "2"]) == 0
    assert main(["check-splits", str(tmp_path / "p" / "datalist.json")]) == 0
    out = capsys.readouterr().out
    assert "wrote 12 synthetic US cases" in out and "OK:" in out


def test_errors_are_reported_with_exit_codes(tmp_path, capsys):
    # a path named on the command line that is not there is a usage error (2), before any work
    assert main(["prepare", "--source", "busi", "--input", str(tmp_path / "none"), "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--input" in err and "input folder not found" in err
    assert main(["compare", str(tmp_path / "nothing")]) == 2
    assert "cv_summary.csv" in capsys.readouterr().err
    assert main(["cv", "--bundle", "bundles/breast_us_mtl", "--datalist", str(tmp_path / "missing.json"), "--output",
                 str(tmp_path / "cv")]) == 2
    err = capsys.readouterr().err
    assert "missing.json" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "cv").exists()


def test_every_command_has_help_with_an_example():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command in sub.choices.items():
        assert command.epilog and command.epilog.startswith("example: bmtl"), name
    with pytest.raises(SystemExit):
        parser.parse_args(["prepare", "--source", "pacs"])


def test_version_and_train_evaluate_usage_errors(tmp_path, capsys):
    from pipeline import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and __version__ in capsys.readouterr().out
    # a missing datalist is named before any training starts (a usage error: exit 2)
    assert main(["train", "--datalist", str(tmp_path / "none.json"), "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "none.json does not exist" in err and "bmtl prepare" in err and not (tmp_path / "run").exists()
    assert main(["train", "--datalist", str(tmp_path), "--output", str(tmp_path / "run")]) == 2
    assert "is a folder, not a datalist.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:   # --fold: an index or all (nnU-Net's), nothing else
        main(["train", "--datalist", str(tmp_path), "--fold", "last"])
    assert exit_info.value.code == 2
    assert "--fold 'last': expected a fold index (0, 1, ...) or all" in capsys.readouterr().err
    assert build_parser().parse_args(["train", "--datalist", "d.json", "--fold", "all"]).fold == "all"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--datalist", "d.json", "--fold", "-1"])
    assert build_parser().parse_args(["train", "--datalist", "d.json", "--fold", "3"]).fold == 3
    # a run trained on every fold is evaluated on the test split unless told otherwise (it has no validation fold)
    from pipeline.cli.runs import _default_split

    (tmp_path / "all_run").mkdir()
    (tmp_path / "all_run" / "run_config.json").write_text('{"fold": "all"}')
    assert _default_split(tmp_path / "all_run") == "test" and _default_split(tmp_path / "missing") == "val"
    assert main(["evaluate", "--run", str(tmp_path), "--datalist", str(tmp_path / "none.json")]) == 2
    assert "none.json does not exist" in capsys.readouterr().err
    (tmp_path / "half").mkdir()
    assert main(["evaluate", "--run", str(tmp_path / "half")]) == 2
    assert "not a trained run" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["predict", "--bundle", "{tmp}/no_bundle", "--input", "{tmp}", "--output", "{tmp}/out"],
    ["predict", "--bundle", "{tmp}/half_bundle", "--input", "{tmp}", "--output", "{tmp}/out"],
    ["log-model", "--bundle", "{tmp}/no_bundle", "--tracking-uri", "sqlite:///{tmp}/mlruns.db"],
    ["export", "--bundle", "{tmp}/no_bundle", "--run", "{tmp}/no_run", "--output", "{tmp}/out"],
    ["export", "--bundle", "bundles/breast_us_mtl", "--run", "{tmp}/half_bundle", "--output", "{tmp}/out"],
])
def test_a_wrong_bundle_is_answered_before_torch_is_imported(tmp_path, argv):
    import subprocess
    import sys

    (tmp_path / "half_bundle" / "configs").mkdir(parents=True)   # an interrupted export: no completion marker
    (tmp_path / "half_bundle" / "configs" / "deploy.yaml").write_text("classes: [benign, malignant]\n")
    code = ("import sys; from pipeline.cli import main; rc = main(sys.argv[1:]); "
            "print('torch imported' if 'torch' in sys.modules else 'torch not imported'); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, *[a.format(tmp=tmp_path) for a in argv]],
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "torch not imported", done.stdout + done.stderr
    assert done.returncode in (1, 2) and "bundle" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("argv,message", [
    (["--runtime", "onnx"], "runtime onnx needs"),
    (["--output", "{tmp}/done"], "holds the predictions of an earlier run (predictions.csv): pass --resume"),
    (["--output", "{tmp}"], "contains the input folder"),
    (["--overwrite", "--resume"], "not allowed with argument"),
    (["--threshold", "1.5"], "--threshold: must be between 0 and 1"),
])
def test_predict_usage_errors_are_answered_before_torch_is_imported(tmp_path, argv, message):
    """Options that the model cannot change are checked before torch, MONAI or the model are loaded (exit 2)."""
    import subprocess
    import sys

    bundle = tmp_path / "bundle"   # complete as far as the checks can tell: deploy.yaml, the marker, a TorchScript file
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "deploy.yaml").write_text("classes: [benign, malignant]\n")
    (bundle / "models").mkdir()
    (bundle / "models" / "export_report.json").write_text("{}")
    (bundle / "models" / "model.ts").write_bytes(b"not read")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"not read")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "predictions.csv").write_text("file\n")
    code = ("import sys; from pipeline.cli import main\ntry:\n    rc = main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    rc = e.code\nprint('torch imported' if 'torch' in sys.modules else 'torch not imported')\n"
            "sys.exit(rc)")
    base = ["predict", "--bundle", str(bundle), "--input", str(tmp_path / "images"), "--output", str(tmp_path / "out")]
    done = subprocess.run([sys.executable, "-c", code, *base, *[a.format(tmp=tmp_path) for a in argv]],
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "torch not imported", done.stdout + done.stderr
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("argv", [
    ["train", "--datalist", "{tmp}/none.json"],
    ["cv", "--bundle", "bundles/breast_us_mtl", "--datalist", "{tmp}/none.json", "--output", "{tmp}/cv"],
    ["evaluate", "--run", "{tmp}", "--datalist", "{tmp}/none.json"],
])
def test_a_missing_datalist_is_answered_before_torch_is_imported(tmp_path, argv):
    import subprocess
    import sys

    code = ("import sys; from pipeline.cli import main; rc = main(sys.argv[1:]); "
            "print('torch imported' if 'torch' in sys.modules else 'torch not imported'); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, *[a.format(tmp=tmp_path) for a in argv]],
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "torch not imported", done.stdout + done.stderr
    assert done.returncode == 2 and "none.json does not exist" in done.stderr and "Traceback" not in done.stderr
