from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from monai.transforms import Compose

from pipeline.presets import available_presets, load_preset, preset_path, require_merged
from pipeline.registry import list_networks
from pipeline.tracking import flatten_params, write_run_config
from pipeline.cross_validation import compare
from pipeline.workflows import bundle_command
from tests.integration.conftest import MR_BUNDLE, US_BUNDLE


def test_every_network_has_a_preset_that_names_it():
    assert set(list_networks()) <= set(available_presets())
    for name in list_networks():
        assert load_preset(name)["network_name"] == name
        assert load_preset(name)["preset"] == load_preset(name)["preset_merged"] == name


def test_preset_errors_name_the_problem(tmp_path):
    with pytest.raises(KeyError, match="unknown preset 'nope'; available presets: .*segresnet_effnet"):
        load_preset("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("network_name: x\n")
    with pytest.raises(ValueError, match="bad.yaml: preset lacks key"):
        load_preset(bad)
    renamed = tmp_path / "renamed.yaml"
    renamed.write_text(yaml.safe_dump({**load_preset("mtl_oca"), "preset": "mine"}))
    with pytest.raises(ValueError, match="renamed.yaml: `preset` .'mine'. and `preset_merged` .'mtl_oca'. must"):
        load_preset(renamed)


def test_a_preset_in_the_nested_layout_loads_for_old_exported_bundles_and_is_refused_for_new_runs(tmp_path):
    """Bundles exported before presets were config fragments read their configs/preset.yaml with load_preset."""
    legacy = tmp_path / "preset.yaml"
    legacy.write_text(yaml.safe_dump({
        "network_name": "segresnet_shared", "network_kwargs": {"init_filters": 8}, "image_size": [64, 64],
        "batch_size": 8, "optimizer": {"lr": 1e-3},
        "loss": {"seg_loss": "dice_ce", "cls_loss": "ce", "seg_weight": 1.0, "cls_weight": 1.0}}))
    old = load_preset(legacy)
    assert old["optimizer"]["lr"] == 1e-3 and old["loss"]["aux_weights"] == {}
    assert old["extra_input_channels"] == [] and old["circle_training"] is False and old["cpu_bf16"] is False
    with pytest.raises(ValueError, match=r"preset.yaml: a preset in the nested layout .*\(configs/README.md\)"):
        bundle_command(US_BUNDLE, "training", {"preset": str(legacy)})


def _bundle_parser(bundle, *fragments, **values):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "common.yaml"), str(bundle / "configs" / "train.yaml"),
                        *map(str, fragments)])
    parser.update({"classes": ["benign", "malignant"], **values})   # what the datalist would give
    return parser


@pytest.mark.parametrize("bundle", [US_BUNDLE, MR_BUNDLE], ids=lambda b: b.name)
@pytest.mark.parametrize("name", available_presets())
def test_every_preset_is_a_config_fragment_of_every_bundle(bundle, name):
    """Merged after the bundle's files, a preset's values are the bundle's; its network trains under its loss."""
    import torch

    preset = load_preset(name)
    parser = _bundle_parser(bundle, preset_path(name))
    assert parser.get_parsed_content("initialize#0") == name   # pipeline.presets.require_merged
    for key in ("network_name", "network_kwargs", "image_size", "batch_size", "learning_rate", "weight_decay",
                "seg_weight", "cls_weight", "aux_weights", "extra_input_channels", "circle_training"):
        assert parser.get_parsed_content(key) == preset[key], key
    network, loss = parser.get_parsed_content("network_module").train(), parser.get_parsed_content("loss")
    in_channels = 1 + len(preset["extra_input_channels"])
    out = network(torch.rand(2, in_channels, 64, 64))
    value = loss(out, {"seg": (torch.rand(2, 1, 64, 64) > 0.7).float(), "cls": torch.tensor([0, 1])})
    assert torch.isfinite(value)
    value.backward()


@pytest.mark.parametrize("bundle,default", [(US_BUNDLE, "segresnet_shared_lesion"), (MR_BUNDLE, "segresnet_effnet")],
                         ids=["us", "mr"])
def test_a_bundle_without_a_fragment_holds_its_default_preset(bundle, default):
    """common.yaml and train.yaml carry the default preset's values, so a bundle runs without a fragment: the two
    copies must not drift."""
    parser = _bundle_parser(bundle)
    for key, value in load_preset(default).items():
        assert parser.get(key) == value, key


def test_a_preset_override_without_its_fragment_is_refused():
    parser = _bundle_parser(US_BUNDLE, preset="mtl_oca")
    with pytest.raises(RuntimeError) as info:   # MONAI's, raised from the expression's own error
        parser.get_parsed_content("initialize#0")
    assert isinstance(info.value.__cause__, ValueError)
    assert re.search("preset: 'mtl_oca' was given, but the merged configs hold preset 'segresnet_shared_lesion'"
                     ".*configs/mtl_oca.yaml", str(info.value.__cause__))
    with pytest.raises(ValueError, match="the merged configs hold preset 'nmtnet'.*configs/mine.yaml"):
        require_merged("mine", "nmtnet")   # an unknown name still says what the file would be


def test_bundle_command_merges_a_preset_as_a_config_file():
    cmd = bundle_command(US_BUNDLE, "training", {"preset": "mtl_oca", "fold": 1})
    files = json.loads(cmd[cmd.index("--config_file") + 1])
    assert [Path(f).name for f in files] == ["common.yaml", "train.yaml", "mtl_oca.yaml"]
    assert Path(files[-1]) == preset_path("mtl_oca").resolve()
    assert "--preset" not in cmd and cmd[cmd.index("--fold") + 1] == "1"
    # a run's record: the values are given, the preset is only the name
    cmd = bundle_command(US_BUNDLE, "evaluating", {"preset": "mtl_oca", "preset_merged": "mtl_oca"})
    assert len(json.loads(cmd[cmd.index("--config_file") + 1])) == 2 and "--preset" in cmd
    with pytest.raises(KeyError, match="unknown preset 'nope'"):
        bundle_command(US_BUNDLE, "training", {"preset": "nope"})


def test_flatten_params_and_run_config(tmp_path):
    flat = flatten_params({"a": 1, "b": {"c": [1, 2], "d": {"e": "x" * 600}}})
    assert flat["a"] == "1" and flat["b.c"] == "[1, 2]" and len(flat["b.d.e"]) == 500
    path = write_run_config(tmp_path / "run", {"classes": ["benign", "malignant"]})
    assert json.loads(open(path).read())["classes"] == ["benign", "malignant"]


def test_bundle_command_is_the_readme_command(tmp_path):
    cmd = bundle_command(US_BUNDLE, "training", {"fold": 2, "image_size": [64, 64], "use_mlflow": False})
    assert cmd[1:5] == ["-m", "monai.bundle", "run", "training"]
    assert json.loads(cmd[cmd.index("--config_file") + 1])[-1].endswith("train.yaml")
    assert cmd[cmd.index("--fold") + 1] == "2" and cmd[cmd.index("--image_size") + 1] == "[64, 64]"
    assert cmd[cmd.index("--use_mlflow") + 1] == "False"  # a Python literal: Fire reads "false" as a string
    from fire.parser import DefaultParseValue

    values = {"cls_threshold": None, "class_weights": [1.0, None], "extra": {"a": True, "b": "x y"}}
    cmd = bundle_command(US_BUNDLE, "training", values)
    for key, value in values.items():   # what MONAI's command line hands the config is the value itself
        assert DefaultParseValue(cmd[cmd.index(f"--{key}") + 1]) == value, key
    with pytest.raises(ValueError, match="workflow must be one of"):
        bundle_command(US_BUNDLE, "serving")
    with pytest.raises(FileNotFoundError, match="not a bundle folder"):
        bundle_command(tmp_path, "training")


def test_compare_builds_one_table_from_cv_summaries(tmp_path):
    for name, dice in (("a", 0.8), ("b", 0.7)):
        d = tmp_path / name
        d.mkdir()
        pd.DataFrame([{"network": name, "folds": 5, "dice_mean": dice, "dice_std": 0.01, "auc_mean": 0.9,
                       "auc_std": 0.02}]).to_csv(d / "cv_summary.csv", index=False)
    table = compare([tmp_path / "a", tmp_path / "b"], tmp_path / "out" / "compare.csv")
    assert table["network"].tolist() == ["a", "b"]
    md = (tmp_path / "out" / "compare.md").read_text()
    assert "| a | 5 | 0.800 ± 0.010 | 0.900 ± 0.020 |" in md
    from PIL import Image

    with Image.open(tmp_path / "out" / "compare.png") as figure:   # the networks-by-metrics figure beside it
        assert figure.width > 400 and len(figure.getcolors(1 << 16) or range(1 << 16)) > 10
    with pytest.raises(FileNotFoundError, match="run `bmtl cv`"):
        compare([tmp_path / "missing"])


def test_cv_fold_with_a_metric_it_could_not_compute(tmp_path):
    """A fold whose HD95 is null (no image with both a true and a predicted lesion) is left out of that metric's
    mean, not a crash (it was one: `bmtl cv` on 60 synthetic images, 2026-12-03)."""
    from pipeline.cross_validation import _read_summary, aggregate_folds, markdown_table

    rows = []
    for fold, hd95 in ((0, 12.0), (1, None)):
        eval_dir = tmp_path / f"fold{fold}"
        eval_dir.mkdir()
        (eval_dir / "summary.json").write_text(json.dumps({
            "segmentation": {"dice": {"mean": 0.5 + fold / 10}, "hd95": {"mean": hd95, "n_excluded": 12 * fold}},
            "classification": {"auc": {"mean": 0.7}, "accuracy": {"mean": 0.6}}}))
        rows.append({"fold": fold, **_read_summary(eval_dir)})
    assert math.isnan(rows[1]["hd95"]) and rows[1]["dice"] == 0.6
    summary = aggregate_folds(pd.DataFrame(rows), "default")
    assert summary["hd95_mean"].iloc[0] == 12.0 and summary["dice_mean"].iloc[0] == pytest.approx(0.55)
    # the table says over how many folds a mean is, instead of a spread of 0 over one fold
    table = markdown_table(summary)
    assert "| default | 2 | 0.550 ± 0.071 | 12.000 (1 of 2 folds) | 0.700 ± 0.000 |" in table
    summary["hd95_folds"] = 0
    assert "| 0.550 ± 0.071 | - | 0.700" in markdown_table(summary)


def test_switches_must_be_bools():
    from pipeline.switches import require_bools
    from pipeline.workflows import _format_override

    require_bools(a=True, b=False, c=0, d=1)
    with pytest.raises(ValueError, match="--flip_tta 'false' is not a switch: .* --flip_tta False"):
        require_bools(flip_tta="false")
    assert _format_override(False) == "False" and _format_override(True) == "True"  # Fire reads these as bools


def test_auto_switch():
    from pipeline.switches import auto_switch

    assert auto_switch("refine", "auto", True) is True and auto_switch("refine", "AUTO", False) is False
    assert auto_switch("refine", True, False) is True and auto_switch("refine", "false", True) is False
    assert auto_switch("refine", 1, False) is True and auto_switch("refine", "off", True) is False
    with pytest.raises(ValueError, match="--refine 'sometimes': expected auto, True or False"):
        auto_switch("refine", "sometimes", True)


DEFAULT_AUGMENTATION = {"RandFlipd", "RandRotated", "RandZoomd", "RandAdjustContrastd", "RandScaleIntensityd",
                        "RandSpeckleNoised"}


@pytest.mark.parametrize("switches,expected", [
    ({}, DEFAULT_AUGMENTATION),
    ({"zoom_augmentation": False}, DEFAULT_AUGMENTATION - {"RandZoomd"}),
    ({"intensity_augmentation": False},
     DEFAULT_AUGMENTATION - {"RandAdjustContrastd", "RandScaleIntensityd", "RandSpeckleNoised"}),
    ({"scanner_augmentation": True}, DEFAULT_AUGMENTATION | {"RandBiasFieldd", "RandSimulateLowResolutiond"}),
    ({"gin_augmentation": True}, DEFAULT_AUGMENTATION | {"RandGlobalIntensityNonlineard"}),
])
def test_augmentation_switches_remove_their_transforms(switches, expected):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(US_BUNDLE / "configs" / "common.yaml"), str(US_BUNDLE / "configs" / "train.yaml")])
    parser.update(switches)
    augmentation = parser.get_parsed_content("train#augmentation")
    assert {type(t).__name__ for t in augmentation} - {"EnsureTyped"} == expected
    for transform in augmentation:   # every transform fires: each one runs on a 2D image and keeps its shape
        transform.prob = 1.0
    sample = {"image": torch.rand(1, 32, 32), "label": (torch.rand(1, 32, 32) > 0.5).float()}
    out = Compose(augmentation)(sample)
    assert out["image"].shape == (1, 32, 32) and torch.isfinite(out["image"]).all()


def _training_rates(values: dict) -> tuple[list[float], object]:
    """The US bundle's learning rate over 10 steps (2 of warm-up, rate 1e-3) with ``values`` overridden, and the
    config parser that built the scheduler."""
    from monai.bundle import ConfigParser

    from tests.integration.conftest import US_BUNDLE

    parser = ConfigParser()
    parser.read_config([str(US_BUNDLE / "configs" / "common.yaml"), str(US_BUNDLE / "configs" / "train.yaml")])
    parser.update({**values, "learning_rate": 1e-3, "lr_scheduler#warmup_steps": 2, "lr_scheduler#t_total": 10,
                   "optimizer#params": "$[torch.nn.Parameter(torch.zeros(1))]"})
    scheduler = parser.get_parsed_content("lr_scheduler")
    rates = []
    for _ in range(10):
        scheduler.optimizer.step()
        scheduler.step()
        rates.append(scheduler.optimizer.param_groups[0]["lr"])
    return rates, parser


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_lr_schedule_cosine_decays_and_constant_keeps_the_rate(schedule):
    rates, _ = _training_rates({"lr_schedule": schedule})
    assert rates[:2] == pytest.approx([5e-4, 1e-3])   # the warm-up either way
    if schedule == "cosine":
        assert rates[-1] == pytest.approx(0.0, abs=1e-12) and rates[5] < 1e-3
    else:
        assert rates[1:] == pytest.approx([1e-3] * 9)


def test_lr_floor_stops_the_cosine_decay_at_a_fraction_of_the_rate():
    rates, parser = _training_rates({"lr_floor": 0.2})
    assert rates[1] == pytest.approx(1e-3) and rates[5] < 1e-3   # warm-up, then the cosine decay ...
    assert min(rates[2:]) == pytest.approx(2e-4) and rates[-1] == pytest.approx(2e-4)   # ... down to the floor
    parser.update({"lr_floor": 1.5})
    with pytest.raises(RuntimeError) as error:
        parser.get_parsed_content("lr_scheduler", lazy=False)
    assert "--lr_floor 1.5: expected a number in [0, 1)" in str(error.value.__cause__)


def test_an_unknown_lr_schedule_is_named():
    from monai.bundle import ConfigParser

    from tests.integration.conftest import US_BUNDLE

    parser = ConfigParser()
    parser.read_config([str(US_BUNDLE / "configs" / "common.yaml"), str(US_BUNDLE / "configs" / "train.yaml")])
    parser.update({"lr_schedule": "linear", "optimizer#params": "$[torch.nn.Parameter(torch.zeros(1))]",
                   "lr_scheduler#warmup_steps": 0, "lr_scheduler#t_total": 10})
    with pytest.raises(RuntimeError) as error:
        parser.get_parsed_content("lr_scheduler")
    assert "--lr_schedule 'linear': expected one of cosine, constant" in str(error.value.__cause__)


def test_evaluate_run_uses_the_values_a_run_was_trained_with(tmp_path, monkeypatch):
    """A run trained by `python -m monai.bundle run training` (no train_args.json) is evaluated with its own image
    size, resize and threshold from run_config.json, not the bundle's current defaults."""
    from pipeline import workflows

    run = tmp_path / "run"
    (run / "models").mkdir(parents=True)
    (run / "models" / "model.pt").write_bytes(b"")
    config = {"bundle": "breast_us_mtl", "preset": "nmtnet", "datalist": "/d/datalist.json", "fold": 2, "seed": 1,
              "image_size": [96, 96], "seg_threshold": 0.3, "network_kwargs": {"init_filters": 8}}
    (run / "run_config.json").write_text(json.dumps(config))
    calls = []
    monkeypatch.setattr(workflows, "run_bundle", lambda bundle, workflow, values, **kw: calls.append(values))
    monkeypatch.setattr("pipeline.data.datalist.split_items", lambda *a: [{}])   # the datalist is not read here
    workflows.evaluate_run(run, split="test")
    values = calls[-1]
    assert {k: values[k] for k in config if k != "bundle"} == {k: v for k, v in config.items() if k != "bundle"}
    assert values["resize_mode"] == "area"   # trained before resize_mode existed: area, as export assumes too
    (run / "run_config.json").write_text(json.dumps({**config, "resize_mode": "bilinear"}))
    workflows.evaluate_run(run, split="test")
    assert calls[-1]["resize_mode"] == "bilinear" and calls[-1]["split"] == "test"
    # another network: its recorded values are passed, the preset only names them (no fragment is merged)
    other = {**config, "preset": "/my/presets/wide_oca.yaml", "network_name": "mtl_oca",
             "extra_input_channels": ["gaussian_gradient_magnitude"], "circle_training": False}
    (run / "run_config.json").write_text(json.dumps(other))
    workflows.evaluate_run(run, split="test")
    values = calls[-1]
    assert values["preset"] == values["preset_merged"] == "wide_oca" and values["network_name"] == "mtl_oca"
    assert values["extra_input_channels"] == ["gaussian_gradient_magnitude"]
    cmd = bundle_command(US_BUNDLE, "evaluating", values)
    assert len(json.loads(cmd[cmd.index("--config_file") + 1])) == 2
    assert cmd[cmd.index("--network_name") + 1] == "mtl_oca"


def test_provenance_names_the_commit_and_the_versions(monkeypatch):
    import subprocess

    from pipeline.tracking import provenance

    info = provenance()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert info["git_commit"].removesuffix("-dirty") == (head or "unknown")
    assert info["version.torch"].split("+")[0] == __import__("torch").__version__.split("+")[0]
    assert set(info) >= {"version.monai", "version.mlflow", "version.pytorch-ignite", "version.breast-mtl"}
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(OSError("no git")))
    assert provenance()["git_commit"] == "unknown"
