"""``benchmarks/recipe_rows.py``: what each row trains (the end-to-end run is tests/integration)."""

from __future__ import annotations

import json

import pytest

import recipe_rows   # benchmarks/ is on the path (tests/conftest.py)
from pipeline.presets import available_presets, load_preset


def _parsed(row: str, key: str):
    """What a row's training would parse for ``key`` (without running anything)."""
    return recipe_rows.row_config(row, {}, (key,))[key]


def _network_of(row: str) -> str:
    """The network a row's training would build."""
    return _parsed(row, "network_name")


def test_every_other_network_has_a_zoo_row_that_trains_it():
    zoo = sorted(name for name in recipe_rows.ROWS if name.startswith("zoo_"))
    assert zoo == sorted(f"zoo_{p}" for p in available_presets() if p != recipe_rows.DEFAULT_PRESET)
    assert len(zoo) >= 5
    for row in zoo:
        preset = row.removeprefix("zoo_")
        assert recipe_rows.ROWS[row].kind == "bundle"
        assert _network_of(row) == load_preset(preset)["network_name"], row
    assert _network_of("default") == load_preset(recipe_rows.DEFAULT_PRESET)["network_name"]


def test_loss_weight_rows_override_the_presets_weight():
    # the preset's own cls_weight must not win over the row's: MONAI applies overrides after the config files
    for row, network, weight in (("nmtnet_cls_weight0.3", "nmtnet", 0.3), ("nmtnet_cls_weight0.1", "nmtnet", 0.1),
                                 ("shared_cls_weight0.3", "segresnet_shared", 0.3),
                                 ("shared_cls_weight0.1", "segresnet_shared", 0.1),
                                 ("mtil_cls_weight0.3", "mtil", 0.3),
                                 ("shared_decoder_cls_weight0.3", "segresnet_shared", 0.3),
                                 ("shared_recipe", "segresnet_shared", 1.0),   # the preset's weight when measured
                                 ("shared_cls_weight1", "segresnet_shared", 1.0),
                                 ("default", "segresnet_shared", 0.3)):
        assert _network_of(row) == network, row
        assert _parsed(row, "cls_weight") == weight, row
        assert _parsed(row, "seg_weight") == 1.0, row


def test_lesion_focused_shared_row_keeps_the_presets_other_network_arguments():
    kwargs = _parsed("shared_decoder_cls_weight0.3", "network_kwargs")
    assert kwargs == {**load_preset("segresnet_shared")["network_kwargs"], "classifier_features": "decoder"}


def test_the_default_is_the_lesion_focused_row_and_the_shared_rows_keep_the_linear_head():
    # bundle 0.5.0: the default trains what shared_decoder_cls_weight0.3 measured; the rows of bundle 0.4.x's default
    # (segresnet_shared, linear head) must go on training it, or their tables could not be re-run
    # every plain value of the default's preset (the losses are objects, the same _target_ entries in both files)
    keys = sorted(set(load_preset(recipe_rows.DEFAULT_PRESET)) - {"preset", "preset_merged", "seg_loss", "cls_loss"})
    assert {"network_name", "network_kwargs", "cls_weight", "learning_rate", "image_size", "batch_size"} <= set(keys)
    for key in keys:
        assert _parsed("default", key) == _parsed("shared_decoder_cls_weight0.3", key), key
    for row in ("shared_cls_weight0.3", "shared_cls_weight0.1", "shared_cls_weight1", "shared_recipe"):
        assert _parsed(row, "network_kwargs").get("classifier_features") is None, row


def _finished_run(run_dir, recorded_by_done=True, **config):
    """A finished run whose config is in done.json, or only in the bundle's run_config.json (older runs)."""
    run_dir.mkdir(parents=True)
    (run_dir / "done.json").write_text(json.dumps({"epochs": 1, **({"config": config} if recorded_by_done else {})}))
    (run_dir / "run_config.json").write_text(json.dumps({} if recorded_by_done else config))
    return run_dir


def test_a_finished_run_is_reused_only_for_what_it_trained(tmp_path):
    now = recipe_rows.row_config("default", {})
    recipe_rows.check_reusable("default", _finished_run(tmp_path / "same", **now), {})
    # the row's meaning changed (another default preset) after the run finished: refused, the keys named
    other = next(name for name in ("nmtnet", "segresnet_shared") if name != now["preset"])
    stale = _finished_run(tmp_path / "stale", **{**now, "preset": other, "network_name": other})
    with pytest.raises(RuntimeError, match=rf"stale: finished, but not what row 'default' trains now \(preset: run "
                                           rf"'{other}', row '{now['preset']}'; network_name"):
        recipe_rows.check_reusable("default", stale, {})
    # an override given to the benchmark is part of what the row trains
    with pytest.raises(RuntimeError, match="image_size: run \\[128, 128\\], row \\[160, 160\\]"):
        recipe_rows.check_reusable("default", _finished_run(tmp_path / "size", **now), {"image_size": [160, 160]})
    # the loss weights (done.json's record): the same network at another weight is another row
    weight = 0.5 if now["cls_weight"] != 0.5 else 0.25
    with pytest.raises(RuntimeError, match=f"cls_weight: run {weight}, row {now['cls_weight']}"):
        recipe_rows.check_reusable("default", _finished_run(tmp_path / "weight", **{**now, "cls_weight": weight}), {})
    # a run finished before done.json recorded its config: the bundle's run_config.json, without the weights
    legacy = {key: value for key, value in now.items() if not key.endswith("_weight")}
    recipe_rows.check_reusable("default", _finished_run(tmp_path / "legacy", recorded_by_done=False, **legacy), {})
    with pytest.raises(RuntimeError, match=f"legacy_stale: .*network_name: run '{other}'"):
        recipe_rows.check_reusable("default", _finished_run(tmp_path / "legacy_stale", recorded_by_done=False,
                                                            **{**legacy, "network_name": other}), {})
    with pytest.raises(RuntimeError, match="no record"):
        recipe_rows.check_reusable("default", _finished_run(tmp_path / "nothing", recorded_by_done=False), {})
    recipe_rows.check_reusable("reference", tmp_path / "no_run_config", {})   # the plain script has no bundle config


def test_inference_key_is_the_presets_own_unless_a_row_changes_its_network_or_input_size():
    keys = {row: recipe_rows.inference_key(*recipe_rows.timed_network(row, {})) for row in
            ("reference", "default", "shared_cls_weight0.3", "shared_decoder_cls_weight0.3", "default_res160",
             "nmtnet_groupnorm", "default_no_tta")}
    default = recipe_rows.DEFAULT_PRESET
    assert keys["default"] == keys["default_no_tta"] == f"inference_ms:{default}"   # a variant times its base
    assert keys["reference"] == "inference_ms:segresnet_shared"
    assert keys["shared_cls_weight0.3"] == "inference_ms:segresnet_shared"   # a loss weight is not the network
    assert keys["shared_decoder_cls_weight0.3"] == \
        'inference_ms:segresnet_shared:{"network_kwargs": {"classifier_features": "decoder"}}'
    assert keys["default_res160"] == f'inference_ms:{default}:{{"image_size": [160, 160]}}'
    assert keys["nmtnet_groupnorm"] == 'inference_ms:nmtnet:{"network_kwargs": {"norm": "group"}}'
