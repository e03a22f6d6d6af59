"""The recipe benchmark's rows (``benchmarks/recipe.py``): what each row trains or evaluates, and what it is.

A row is the plain MONAI reference, a bundle training (the stock bundle plus the row's overrides; ``zoo_<preset>``:
another network with its preset) or an evaluation-only variant of a trained row (the same weights, other
post-processing). Ablation rows stay here after they are measured, so that a table in BENCHMARKS.md can be re-run;
``check_reusable`` refuses a finished run that trained something else than its row trains now.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

from pipeline.presets import available_presets, load_preset
from pipeline.workflows import bundle_config_files

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "breast_us_mtl"

DEFAULT_PRESET = "segresnet_shared_lesion"   # the bundle's (configs/common.yaml), for the inference-time column
# default_* rows put their lever on the default of the day (a table in BENCHMARKS.md names the bundle version it
# measured; check_reusable refuses a run of an earlier default); segresnet_shared rows keep its linear head
# rows measured on nmtnet, the default until bundle 0.4.0, keep training it (and say so in their name)
NMTNET = {"preset": "nmtnet"}
# the plain reference's post-processing: a 0.5 threshold and nothing else
PLAIN_POST = {"flip_tta": False, "keep_largest_component": False, "fill_holes": False}
# float32 training on a CPU with AMX (bfloat16 autocast became the nmtnet and segresnet presets' default on 2026-12-02):
# the rows trained before keep it, so that a re-run reproduces them
FP32 = {"cpu_bf16": False}
OLD_DEFAULT = {**FP32, "channels_last": False, "resize_mode": "area"}   # the bundle's default before 2026-12-01


def network_kwargs(preset: str = DEFAULT_PRESET, **changes: Any) -> dict[str, Any]:
    """A preset's ``network_kwargs`` (the default's unless named) with ``changes`` (the bundle takes the dict whole)."""
    return {"network_kwargs": {**load_preset(preset)["network_kwargs"], **changes}}


@dataclass
class Row:
    """A benchmark row: ``kind`` reference | bundle (trained) | variant (evaluation-only, of row ``base``).

    A bundle row with ``members`` > 1 is a fold ensemble: one run per validation fold 0, 1, ... (each selecting its
    checkpoint and threshold on its own fold), evaluated together (``bmtl evaluate --ensemble``); the members share
    the budget's epochs unless ``budget_per_member`` (each the whole budget: ``members`` times the training).
    """

    kind: str
    note: str
    train: dict[str, Any] = field(default_factory=dict)   # bundle overrides of training (and evaluation)
    eval: dict[str, Any] = field(default_factory=dict)    # bundle overrides of evaluation only
    base: str | None = None
    same_cost_as: str | None = None   # a row whose calibration holds (same network, batch and augmentation)
    members: int = 1
    budget_per_member: bool = False


ROWS: dict[str, Row] = {
    "reference": Row("reference", "plain MONAI SegResNet + linear head (benchmarks/reference.py)"),
    "default": Row("bundle", "the bundle's default recipe, nothing overridden"),
    "default_fp32": Row("bundle", "default in float32 (no bfloat16 autocast of the training forward pass): the "
                        "default before 2026-12-02", train=FP32),
    "default_no_tta": Row("variant", "default without flip test-time augmentation", eval={"flip_tta": False},
                          base="default"),
    "default_no_cleaning": Row("variant", "default without largest component + hole filling",
                               eval={"keep_largest_component": False, "fill_holes": False}, base="default"),
    "default_plain_post": Row("variant", "default with the reference's post-processing (threshold only, no TTA)",
                              eval=PLAIN_POST, base="default"),
    "default_argmax": Row("variant", "default deciding the class by argmax instead of the operating threshold chosen "
                          "on the validation fold", eval={"cls_threshold": None}, base="default"),
    "default_bilinear_resize": Row("variant", "default_contiguous's weights evaluated with bilinear + anti-aliased "
                                   "resizing in and its inverse back out (resize_mode bilinear, the default since "
                                   "the weights of this row were trained with area)", eval={"resize_mode": "bilinear"},
                                   base="default_contiguous"),
    # the three rows below were trained before channels_last and bilinear resizing became the default: they are
    # variants of the contiguous, area-resized default (channels_last changes the speed, not the arithmetic beyond
    # rounding)
    "default_contiguous": Row("bundle", "default without channels_last (network and input in the contiguous "
                              "memory format) and with area resizing: the default before 2026-12-01",
                              train={**OLD_DEFAULT}),
    "default_lr2e-3": Row("bundle", "default_contiguous with learning rate 2e-3",
                          train={**OLD_DEFAULT, "learning_rate": 0.002}, same_cost_as="default_contiguous"),
    "default_flip_rot_aug": Row("bundle", "default_contiguous with the reference's augmentation only (flip + "
                                "rotation: no zoom, no intensity or speckle)",
                                train={**OLD_DEFAULT, "zoom_augmentation": False, "intensity_augmentation": False}),
    "default_keep_aspect": Row("bundle", "default with the aspect ratio kept (longest side to 128, zero-padded) "
                               "instead of squashing to 128x128", train={"keep_aspect": True}, same_cost_as="default"),
    "default_birads": Row("bundle", "default with BI-RADS (2-5, the radiologist's category) as an auxiliary "
                          "classification target in training, weight 0.5 (the head is negligible in the step)",
                          train={"aux_targets": {"birads": ["2", "3", "4", "5"]}}, same_cost_as="default"),
    "default_all_folds": Row("bundle", "default trained on every training patient (--fold all, nnU-Net's 'all': no "
                             "validation fold, the last epoch, the argmax class), as the reference trains",
                             train={"fold": "all"}),
    "default_all_folds_birads": Row("bundle", "default_all_folds with BI-RADS as an auxiliary target (the two levers "
                                    "that moved cross-scanner AUC on seed 0, together)",
                                    train={"fold": "all", "aux_targets": {"birads": ["2", "3", "4", "5"]}},
                                    same_cost_as="default_all_folds"),
    "default_ema": Row("bundle", "default with an exponential moving average of the weights (decay 0.998, about the "
                       "last 500 of its ~1,700 steps), validated and kept instead of the weights themselves",
                       train={"weight_average_decay": 0.998}, same_cost_as="default"),
    "default_scanner_aug": Row("bundle", "default with the scanner augmentation (--scanner_augmentation True: MONAI's "
                               "RandBiasFieldd gain field and RandSimulateLowResolutiond; under 0.5 ms per image, so "
                               "the default's calibration holds)", train={"scanner_augmentation": True},
                               same_cost_as="default"),
    "default_gin_aug": Row("bundle", "default with the random grey-level transfer augmentation (--gin_augmentation "
                           "True: GIN, the image through a random shallow network blended with it, probability 0.3; "
                           "about 1 ms per image, so the default's calibration holds)",
                           train={"gin_augmentation": True}, same_cost_as="default"),
    "default_weighted_sampler": Row("bundle", "default drawing each class equally often (--weighted_sampler True)",
                                    train={"weighted_sampler": True}, same_cost_as="default"),
    "default_keep_aspect_res160": Row("bundle", "default_keep_aspect at 160x160 (longest side to 160, zero-padded)",
                                      train={"keep_aspect": True, "image_size": [160, 160]},
                                      same_cost_as="default_res160"),
    "default_res160": Row("bundle", "default at 160x160 input instead of 128x128 (fewer epochs in the budget)",
                          train={"image_size": [160, 160]}),
    "default_lesion_crop256": Row("bundle", "default at 256x256 input, segmented at 128x128 as before, plus a "
                                  "classifier on the 96x96 crop around the predicted lesion read at 256x256 (preset "
                                  "segresnet_shared_crop)",
                                  train={"preset": "segresnet_shared_crop"}),
    "default_cls_bottleneck": Row("bundle", "default with the lesion-focused classifier on the bottleneck (pooled "
                                  "under the predicted lesion and globally) instead of the decoder stages: no "
                                  "fine-scale texture, no lesion-area fraction",
                                  train=network_kwargs(classifier_features="bottleneck"), same_cost_as="default"),
    "default_mask_crop": Row("bundle", "default plus a classifier on the 96x96 crop of the predicted lesion "
                             "probability alone (its outline, no grey levels), input and segmentation at 128x128 "
                             "(preset segresnet_shared_crop, seg_scale 1, crop_image false)",
                             train={"preset": "segresnet_shared_crop", "image_size": [128, 128],
                                    **network_kwargs("segresnet_shared_crop", seg_scale=1.0, crop_image=False)}),
    # nmtnet's classifier input and norm, float32 (as measured on 2026-12-02, when nmtnet was the default)
    "nmtnet_cls_bottleneck": Row("bundle", "nmtnet with the classifier on the bottleneck pooled under the predicted "
                                 "lesion and globally (no decoder texture, no lesion-area fraction)",
                                 train={**FP32, **NMTNET,
                                        **network_kwargs("nmtnet", classifier_features="bottleneck")}),
    "nmtnet_cls_global": Row("bundle", "nmtnet with the classifier on the globally pooled bottleneck only (the "
                             "reference's head)",
                             train={**FP32, **NMTNET, **network_kwargs("nmtnet", classifier_features="global")}),
    "nmtnet_groupnorm": Row("bundle", "nmtnet with group norm (8 groups, per image, as the reference's SegResNet) "
                            "instead of batch norm: no running statistics of the training scanners",
                            train={**FP32, **NMTNET, **network_kwargs("nmtnet", norm="group")}),
    "default_bs8": Row("bundle", "default with batch size 8 (twice the optimizer steps)",
                       train={**FP32, "batch_size": 8}),
    "old_default": Row("bundle", "the previous default network segresnet_effnet with the new schedule",
                       train={"preset": "segresnet_effnet"}),
    # segresnet_shared at the classification weight of its preset before bundle 0.4.0 (1.0)
    "shared_recipe": Row("bundle", "the reference's network (segresnet_shared) with the default recipe",
                         train={**FP32, "preset": "segresnet_shared", "cls_weight": 1.0}),
    # what in the recipe costs the reference's network cross-scanner AUC (the same epochs as shared_recipe)
    "shared_recipe_constant_lr": Row("bundle", "shared_recipe with the reference's constant learning rate (after the "
                                     "one-epoch warm-up) instead of the cosine decay to 0",
                                     train={**FP32, "preset": "segresnet_shared", "cls_weight": 1.0,
                                            "lr_schedule": "constant"},
                                     same_cost_as="shared_recipe"),
    "default_constant_lr": Row("bundle", "default with the constant learning rate (after the one-epoch warm-up) "
                               "instead of the cosine decay to 0", train={**FP32, "lr_schedule": "constant"},
                               same_cost_as="default_fp32"),
    "shared_recipe_flip_rot": Row("bundle", "shared_recipe with the reference's augmentation only (flip + rotation: "
                                  "no zoom, no intensity or speckle), the same epochs",
                                  train={**FP32, "preset": "segresnet_shared", "cls_weight": 1.0,
                                         "zoom_augmentation": False, "intensity_augmentation": False},
                                  same_cost_as="shared_recipe"),
    # loss weights: the segmentation-only SegResNet out-segments the multi-task one at the same budget (recipe_A_zoo)
    "nmtnet_cls_weight0.3": Row("bundle", "nmtnet with the classification loss weighted 0.3 instead of 1",
                                train={**NMTNET, "cls_weight": 0.3}, same_cost_as="zoo_nmtnet"),
    "shared_cls_weight0.3": Row("bundle", "segresnet_shared (configs/segresnet_shared.yaml) trained by the bundle's "
                                "default recipe with the classification loss weighted 0.3 instead of 1 (the default of "
                                "bundle 0.4.x: the linear head)",
                                train={"preset": "segresnet_shared", "cls_weight": 0.3}, same_cost_as="default"),
    # the weight further down, and on the network with the best validation AUC (mtil, recipe_A_zoo)
    "nmtnet_cls_weight0.1": Row("bundle", "nmtnet with the classification loss weighted 0.1 instead of 1",
                                train={**NMTNET, "cls_weight": 0.1}, same_cost_as="zoo_nmtnet"),
    "shared_cls_weight1": Row("bundle", "segresnet_shared at the classification loss weight 1 (its preset's before "
                              "bundle 0.4.0: zoo_segresnet_shared then)",
                              train={"preset": "segresnet_shared", "cls_weight": 1.0}, same_cost_as="default"),
    "shared_cls_weight0.1": Row("bundle", "shared_cls_weight0.3 with the classification loss weighted 0.1",
                                train={"preset": "segresnet_shared", "cls_weight": 0.1}, same_cost_as="default"),
    # the lesion-focused classifier of nmtnet (the default: AUC) on the SegResNet that segments best (Dice)
    "shared_decoder_cls_weight0.3": Row("bundle", "shared_cls_weight0.3 with nmtnet's lesion-focused classifier (the "
                                        "decoder stages pooled under the predicted lesion, the bottleneck globally, "
                                        "a 2-layer MLP) instead of the linear head on the pooled bottleneck "
                                        "(the default since bundle 0.5.0, preset segresnet_shared_lesion)",
                                        train={"preset": "segresnet_shared", "cls_weight": 0.3,
                                               **network_kwargs("segresnet_shared", classifier_features="decoder")},
                                        same_cost_as="default"),   # pools what the decoder computes
    "mtil_cls_weight0.3": Row("bundle", "mtil (configs/mtil.yaml) trained by the bundle's default recipe with the "
                              "classification loss weighted 0.3 instead of 1",
                              train={"preset": "mtil", "cls_weight": 0.3}, same_cost_as="zoo_mtil"),
    # issue 12's fold-ensemble lever: the folds' models averaged, at the same budget and at three times it
    "default_fold_ensemble3": Row("bundle", "the default trained as 3 runs (validation folds 0, 1, 2), each a third of "
                                  "the budget's epochs, evaluated as a fold ensemble (probabilities averaged, the "
                                  "members' mean threshold)", same_cost_as="default", members=3),
    "default_fold_ensemble3_3x": Row("bundle", "default_fold_ensemble3 with each run trained for the whole budget "
                                     "(three times the training of every other row)", same_cost_as="default",
                                     members=3, budget_per_member=True),
    # evaluation-only: the batch-norm statistics (nmtnet has batch norm; the reference's SegResNet has group norm)
    "nmtnet_bn_train": Row("variant", "nmtnet with its batch-norm statistics re-estimated on the training fold as "
                           "evaluated (no augmentation)", eval={"bn_recalibration": "train"}, base="zoo_nmtnet"),
    "nmtnet_bn_target": Row("variant", "nmtnet with its batch-norm statistics re-estimated on the evaluated images, "
                            "without their labels (label-free adaptation to their scanner)",
                            eval={"bn_recalibration": "target"}, base="zoo_nmtnet"),
    # evaluation-only: how much of the AUC difference is the flip test-time augmentation
    "shared_recipe_no_tta": Row("variant", "shared_recipe without flip test-time augmentation",
                                eval={"flip_tta": False}, base="shared_recipe"),
    "reference_tta": Row("variant", "the reference's weights evaluated with flip test-time augmentation",
                         eval={"flip_tta": True}, base="reference"),
}

# the network zoo at the recipe's budget (issue 12): every other preset's network, input size, batch and losses, trained
# by the bundle's default recipe; one row per network, so the table grows one resumable run at a time
ROWS.update({f"zoo_{name}": Row("bundle", f"{name} (configs/{name}.yaml) trained by the bundle's default recipe",
                                train={"preset": name})
             for name in available_presets() if name != DEFAULT_PRESET})


def trained_row(name: str) -> str:
    """The row whose run ``name`` reads: its own, or for an evaluation-only variant the row it evaluates."""
    return ROWS[name].base or name


def trains_on_all(name: str) -> bool:
    """Whether a row trains on the validation fold too: the reference, and the bundle with ``--fold all``."""
    base = trained_row(name)
    return base == "reference" or ROWS[base].train.get("fold") == "all"


def validated(name: str) -> bool:
    """Whether a row has a validation score: not when it trains on the validation fold, nor for a fold ensemble
    (whose other members trained on it; each member's threshold is chosen on its own fold)."""
    return not trains_on_all(name) and ROWS[trained_row(name)].members == 1


# the bundle values that build the network (configs/common.yaml's network_def and network_module), and their values
# where a preset leaves them out
NETWORK_KEYS = ("network_name", "network_kwargs", "extra_input_channels", "circle_training")
NETWORK_DEFAULTS = {"extra_input_channels": [], "circle_training": False}


def timed_network(name: str, override: dict[str, Any]) -> tuple[str, dict[str, Any], list[int]]:
    """What a row's inference time measures: its preset, the network values (``NETWORK_KEYS``) and the input size its
    training builds (``row_config``: the row's and ``override``'s changes included); the reference is
    ``benchmarks/reference.py``'s network, segresnet_shared's at 128x128."""
    base = trained_row(name)
    if ROWS[base].kind == "reference":
        return "segresnet_shared", load_preset("segresnet_shared"), [128, 128]
    network = row_config(base, override, keys=("preset", *NETWORK_KEYS, "image_size"))
    return network.pop("preset"), network, list(network.pop("image_size"))


def inference_key(preset: str, network: dict[str, Any], size: list[int]) -> str:
    """The ``plan.json`` key of a network's inference time: ``inference_ms:<preset>`` for the preset's own network
    at the preset's input size, followed by what differs (JSON; of ``network_kwargs`` only the changed entries, a
    removed one as null) otherwise, so a row that changes its network or its input size is timed with the change."""
    own = load_preset(preset)
    changed: dict[str, Any] = {}
    for key in NETWORK_KEYS:
        value, own_value = network.get(key, NETWORK_DEFAULTS.get(key)), own.get(key, NETWORK_DEFAULTS.get(key))
        if key == "network_kwargs" and value != own_value:
            value = {k: value.get(k) for k in sorted({*value, *own_value}) if value.get(k) != own_value.get(k)}
        elif value == own_value:
            continue
        changed[key] = value
    if list(size) != list(own.get("image_size", [128, 128])):   # the bundle's own size where a preset has none
        changed["image_size"] = list(size)
    return f"inference_ms:{preset}" + (f":{json.dumps(changed, sort_keys=True)}" if changed else "")


# what a finished run and its row's config must agree on before the run is reused
IDENTITY_KEYS = ("preset", "network_name", "network_kwargs", "image_size", "batch_size", "seg_weight", "cls_weight")


def row_config(name: str, override: dict[str, Any], keys: tuple[str, ...] = IDENTITY_KEYS) -> dict[str, Any]:
    """``keys`` of the training config a bundle row would run now: the bundle's config files, ``override`` and the
    row's own overrides, merged as MONAI merges them (nothing is run)."""
    files, overrides = bundle_config_files(BUNDLE, "training", {**override, **ROWS[name].train})
    parser = ConfigParser()
    parser.read_config(files)
    parser.update(overrides)
    return {key: parser.get_parsed_content(key) for key in keys}


def check_reusable(name: str, run_dir: Path, override: dict[str, Any]) -> None:
    """Refuse a finished run that trained something else than row ``name`` trains now: a row's meaning can change
    (``default`` follows the bundle's default preset), and a cached run under the old meaning would be a silently
    wrong row. What the run trained: the config ``done.json`` records, or for a run finished before it did, the
    ``run_config.json`` the bundle wrote (without the loss weights, which are then not compared).

    Raises:
        RuntimeError: the run's config and the row's differ (the message names the keys).
    """
    if ROWS[name].kind == "reference":
        return
    recorded = json.loads((run_dir / "done.json").read_text()).get("config")
    if recorded is None:
        recorded = json.loads((run_dir / "run_config.json").read_text())
    expected = row_config(name, override)
    differ = {key: (recorded.get(key), value) for key, value in expected.items()
              if key in recorded and recorded[key] != value}
    if differ or not {"preset", "network_name"} <= set(recorded):
        details = "; ".join(f"{key}: run {old!r}, row {new!r}" for key, (old, new) in differ.items()) or "no record"
        raise RuntimeError(f"{run_dir}: finished, but not what row {name!r} trains now ({details}). Move the run "
                           f"away (it stays valid under the name it had at its commit) to train the row again.")
