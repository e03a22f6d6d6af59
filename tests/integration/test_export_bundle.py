"""`bmtl export` / `bmtl verify` / `python -m monai.bundle ckpt_export` on the bundles: a trained run exported to a
self-contained folder, every registered network exported through the bundle configs, failures that leave nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from monai.bundle import ConfigWorkflow, ckpt_export

from pipeline.cli import main
from pipeline.deploy import export_bundle
from pipeline.verify import verify_bundle
from pipeline.export import ExportParityError, load_torchscript
from pipeline.presets import load_preset
from pipeline.registry import create_network, list_networks
from pipeline.schemas import validate_metadata
from tests.integration.conftest import MR_BUNDLE, US_BUNDLE, tiny_preset

pytestmark = pytest.mark.slow
US_CLASSES = ["normal", "benign", "malignant"]
SIZE = [64, 64]


def make_run(root: Path, network: str = "segresnet_effnet", classes=US_CLASSES, modality: str = "US",
             bundle: Path = US_BUNDLE, seed: int = 0) -> Path:
    """A run folder as training leaves it (run_config.json + models/model.pt), with untrained weights: export needs
    nothing else, and untrained networks are enough to check shapes, geometry and parity."""
    preset = load_preset(network)
    preset["network_kwargs"] = {**preset["network_kwargs"], "init_filters": 8}
    preset.update(image_size=SIZE, batch_size=8)
    in_channels = 1 + len(preset["extra_input_channels"])
    torch.manual_seed(seed)
    net = create_network(network, **{**preset["network_kwargs"], "in_channels": in_channels,
                                     "num_classes": len(classes)})
    if preset["circle_training"]:
        from pipeline.engines import circle_training

        net = circle_training(net)
    (root / "models").mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), root / "models" / "model.pt")
    run_config = {
        "bundle": bundle.name, "modality": modality, "preset": network,
        "network_name": network, "network_kwargs": preset["network_kwargs"], "in_channels": in_channels,
        "num_classes": len(classes), "classes": list(classes), "image_size": SIZE,
        "extra_input_channels": preset["extra_input_channels"], "circle_training": preset["circle_training"],
        "seg_threshold": 0.5, "datalist": "", "fold": 0, "seed": 0,
    }
    (root / "run_config.json").write_text(json.dumps(run_config, indent=2))
    return root


@pytest.fixture(scope="module")
def trained_export(us_datalist, tmp_path_factory) -> dict[str, Path]:
    """A 1-epoch training run of the US bundle (tiny segresnet_effnet) exported with `bmtl export` (both formats)."""
    root = tmp_path_factory.mktemp("trained_export")
    preset = tiny_preset(root / "preset.yaml", preset="segresnet_effnet")
    run = root / "run"
    configs = US_BUNDLE / "configs"
    wf = ConfigWorkflow(config_file=[str(configs / "common.yaml"), str(configs / "train.yaml"), str(preset)],
                        meta_file=str(configs / "metadata.json"), logging_file=None, run_id="training",
                        bundle_root=str(US_BUNDLE), datalist=str(us_datalist),
                        output_dir=str(run), epochs=1, use_mlflow=False)
    wf.initialize()
    wf.run()
    wf.finalize()
    exported = root / "exported"
    assert main(["export", "--bundle", str(US_BUNDLE), "--run", str(run), "--output", str(exported)]) == 0
    return {"run": run, "exported": exported}


def test_exported_bundle_layout_pins_and_metadata(trained_export):
    exported, run = trained_export["exported"], trained_export["run"]
    files = {str(p.relative_to(exported)) for p in exported.rglob("*") if p.is_file()}
    assert files == {
        "configs/common.yaml", "configs/deploy.yaml", "configs/inference.yaml",
        "configs/inference.json", "configs/evaluate.yaml",
        "configs/metadata.json", "configs/logging.conf", "models/model.pt", "models/model.ts", "models/model.onnx",
        "models/export_report.json", "docs/README.md", "docs/model_card.md", "LICENSE",
    }
    card = (exported / "docs" / "model_card.md").read_text()
    assert "**Trained on synthetic data**" in card and "Research use only" in card   # us_datalist is `bmtl synth`'s
    assert "Not evaluated before export" in card   # the fixture's run was never evaluated
    run_config = json.loads((run / "run_config.json").read_text())
    deploy = yaml.safe_load((exported / "configs" / "deploy.yaml").read_text())
    assert deploy["datalist"] == ""
    for key in ("classes", "image_size", "in_channels", "network_name", "network_kwargs", "circle_training",
                "modality", "seg_threshold", "extra_input_channels"):
        assert deploy[key] == run_config[key], key
    assert deploy["preset"] == deploy["preset_merged"] == run_config["preset"] == "segresnet_effnet"

    meta = validate_metadata(exported / "configs" / "metadata.json")
    fmt = meta["network_data_format"]
    assert meta["classes"] == run_config["classes"]
    assert fmt["inputs"]["image"]["spatial_shape"] == SIZE and fmt["inputs"]["image"]["num_channels"] == 1
    assert fmt["outputs"]["seg"]["spatial_shape"] == SIZE
    assert fmt["outputs"]["cls"]["num_channels"] == len(run_config["classes"])
    assert fmt["outputs"]["cls"]["channel_def"]["2"] == "malignant (logit)"
    # synthetic training data is called so in the metadata too, without the real datasets' citations
    assert meta["training_data"]["synthetic"] is True and meta["training_data"]["images"] > 0
    assert meta["data_source"].startswith("synthetic images") and meta["references"] == []

    report = json.loads((exported / "models" / "export_report.json").read_text())
    assert set(report["parity"]) == {"torchscript", "onnx"}
    for per_input in report["parity"].values():
        assert {"random uniform", "random normal", "synthetic ultrasound"} == set(per_input)
        assert all(d["seg"] <= 1e-4 and d["cls"] <= 1e-4 for d in per_input.values())
    # model.pt is the run's best network, plain, loadable without pickled objects
    state = torch.load(exported / "models" / "model.pt", weights_only=True)
    reference = torch.load(run / "models" / "model.pt", weights_only=True)
    assert state.keys() == reference.keys()


def test_verify_passes_on_the_exported_and_the_source_bundle(trained_export, capsys):
    assert main(["verify", "--bundle", str(trained_export["exported"])]) == 0
    out = capsys.readouterr().out
    assert "PASS: every check passed" in out
    for line in ("torch: seg shape", "torchscript: cls shape", "onnx: seg dtype", "metadata schema"):
        assert line in out
    rows = verify_bundle(US_BUNDLE)  # source bundle: classes from its metadata, random weights
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]


def test_verify_fails_on_a_metadata_mismatch(trained_export, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(trained_export["exported"], broken)
    meta_path = broken / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["network_data_format"]["outputs"]["cls"]["num_channels"] = 2
    meta["network_data_format"]["outputs"]["cls"]["spatial_shape"] = [2]
    meta_path.write_text(json.dumps(meta))
    assert main(["verify", "--bundle", str(broken), "--runtime", "torchscript"]) == 1
    out = capsys.readouterr().out
    assert "| torchscript: cls shape | [1, 2] | [1, 3] | FAIL |" in out
    assert "FAIL:" in out
    del meta["network_data_format"]["outputs"]["seg"]
    meta_path.write_text(json.dumps(meta))
    assert main(["verify", "--bundle", str(broken)]) == 1
    assert "'seg' is a required property" in capsys.readouterr().out


def test_monai_ckpt_export_on_the_exported_bundle(trained_export, tmp_path):
    exported = trained_export["exported"]
    configs = exported / "configs"
    target = tmp_path / "ckpt_export.ts"
    cmd = [sys.executable, "-m", "monai.bundle", "ckpt_export", "--net_id", "export_network",
           "--bundle_root", str(exported), "--filepath", str(target), "--use_trace", "True",
           "--config_file", json.dumps([str(configs / "common.yaml"), str(configs / "deploy.yaml")])]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    x = torch.rand(2, 1, *SIZE)
    with torch.no_grad():
        ours = load_torchscript(exported / "models" / "model.ts")(x)
        theirs = load_torchscript(target)(x)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("network", list_networks())
def test_every_network_exports_through_the_bundle(network, tmp_path):
    """`bmtl export` (TorchScript) and MONAI's ckpt_export on the SOURCE bundle with overrides agree, and the exported
    bundle verifies."""
    run = make_run(tmp_path / "run", network)
    exported = tmp_path / "exported"
    report = export_bundle(US_BUNDLE, run, exported, formats=["torchscript"])
    assert all(d["seg"] <= 1e-4 and d["cls"] <= 1e-4 for d in report["parity"]["torchscript"].values())
    rows = verify_bundle(exported)
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]

    run_config = json.loads((run / "run_config.json").read_text())
    preset_file = tmp_path / "preset.yaml"   # the run's preset as a config fragment, merged after common.yaml
    preset_file.write_text(yaml.safe_dump({**load_preset(network), "network_kwargs": run_config["network_kwargs"],
                                           "image_size": SIZE}))
    in_channels = int(run_config["in_channels"])
    target = tmp_path / "ckpt.ts"
    ckpt_export(net_id="export_network", filepath=str(target), ckpt_file=str(run / "models" / "model.pt"),
                config_file=[str(US_BUNDLE / "configs" / "common.yaml"), str(preset_file)],
                meta_file=str(US_BUNDLE / "configs" / "metadata.json"), bundle_root=str(US_BUNDLE),
                use_trace=True, input_shape=[1, in_channels, *SIZE], classes=US_CLASSES,
                converter_kwargs={"check_trace": False})
    x = torch.rand(2, in_channels, *SIZE)
    with torch.no_grad():
        for a, b in zip(load_torchscript(exported / "models" / "model.ts")(x), load_torchscript(target)(x)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_mri_bundle_exports_with_its_own_modality(tmp_path):
    run = make_run(tmp_path / "run", "segresnet_shared", classes=["benign", "malignant"], modality="MR",
                   bundle=MR_BUNDLE)
    exported = tmp_path / "exported"
    export_bundle(MR_BUNDLE, run, exported, formats=["torchscript"])
    meta = json.loads((exported / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["inputs"]["image"]["modality"] == "MR"
    assert meta["classes"] == ["benign", "malignant"]
    assert yaml.safe_load((exported / "configs" / "inference.yaml").read_text())["input_normalisation"] == "percentile"


def test_failed_parity_leaves_no_bundle(tmp_path, monkeypatch, capsys):
    import pipeline.export as export

    run = make_run(tmp_path / "run", "segresnet_shared")
    real = export.load_torchscript

    def perturbed(path, device="cpu"):
        model = real(path, device)
        return lambda x: tuple(t + 1e-3 for t in model(x))

    monkeypatch.setattr(export, "load_torchscript", perturbed)
    with pytest.raises(ExportParityError, match=r"seg on 'random uniform': max \|TorchScript - eager\| = 0.001"):
        export_bundle(US_BUNDLE, run, tmp_path / "out", formats=["torchscript"])
    assert not (tmp_path / "out").exists()
    assert main(["export", "--bundle", str(US_BUNDLE), "--run", str(run), "--output", str(tmp_path / "out"),
                 "--format", "torchscript"]) == 1
    assert "export FAILED (nothing written)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_overwrite_keeps_the_old_bundle_until_the_new_one_passes(tmp_path, monkeypatch, capsys):
    """`bmtl export --overwrite`: the new bundle is built and checked beside the old one and swapped in only when
    complete; a failed parity check leaves the previous bundle byte for byte, and no temporary folder either way."""
    import pipeline.export as export

    out = tmp_path / "out"
    old_run = make_run(tmp_path / "old_run", "segresnet_shared")
    new_run = make_run(tmp_path / "new_run", "segresnet_shared", seed=1)
    export_bundle(US_BUNDLE, old_run, out, formats=["torchscript"])
    before = _snapshot(out)

    def failing(eager, exported, inputs, atol=1e-4, name="exported model"):
        raise ExportParityError(f"{name} does not match the eager network: seg on 'random uniform'")

    with monkeypatch.context() as m:
        m.setattr(export, "check_parity", failing)
        with pytest.raises(ExportParityError, match="TorchScript does not match"):
            export_bundle(US_BUNDLE, new_run, out, formats=["torchscript"], overwrite=True)
        assert _snapshot(out) == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["new_run", "old_run", "out"]
        assert main(["export", "--bundle", str(US_BUNDLE), "--run", str(new_run), "--output", str(out),
                     "--format", "torchscript", "--overwrite"]) == 1
        assert "export FAILED" in capsys.readouterr().err
        assert _snapshot(out) == before

    report = export_bundle(US_BUNDLE, new_run, out, formats=["torchscript"], overwrite=True)
    after = _snapshot(out)
    assert report["source_run"] == str(new_run.resolve())
    assert json.loads(after["models/export_report.json"])["source_run"] == str(new_run.resolve())
    assert after["models/model.pt"] != before["models/model.pt"]  # the other run's weights
    assert set(after) == set(before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new_run", "old_run", "out"]
    with pytest.raises(ValueError, match="holds the training run"):  # replacing it would delete the run
        export_bundle(US_BUNDLE, new_run, tmp_path, formats=["torchscript"], overwrite=True)
    assert (new_run / "models" / "model.pt").is_file()


def test_export_usage_errors(tmp_path, capsys):
    run = make_run(tmp_path / "run", "segresnet_shared")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    assert main(["export", "--bundle", str(US_BUNDLE), "--run", str(run), "--output", str(tmp_path / "busy")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "busy" / "keep.txt").exists()
    assert main(["export", "--bundle", str(US_BUNDLE), "--run", str(tmp_path), "--output", str(tmp_path / "x")]) == 2
    assert "run_config.json not found" in capsys.readouterr().err
