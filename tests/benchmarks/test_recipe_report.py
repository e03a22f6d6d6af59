"""``benchmarks/recipe.py``'s table: a single-task baseline's constant head is never reported as a score; the seeds
table (``benchmarks/recipe_report.py``) averages each row over its seeds and pairs it with the reference's."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import bench    # benchmarks/ is on the path (tests/conftest.py)
import recipe
import recipe_report

RECORD = {"network": "row (seed 0)", "seed": 0, "dice": {"mean": 0.876, "lo": 0.862, "hi": 0.888},
          "auc": {"mean": 0.5, "lo": 0.5, "hi": 0.5}, "vs_ref_dice": "+0.025 (+0.016 to +0.036)",
          "vs_ref_auc": "-0.425 (-0.452 to -0.396)", "val_dice": 0.842, "val_auc": 0.5, "ece": 0.176, "epochs": 30}
EXTRA = [("vs ref Dice", "vs_ref_dice"), ("vs ref AUC", "vs_ref_auc"), ("val Dice", "val_dice"),
         ("val AUC", "val_auc"), ("ECE", "ece"), ("epochs", "epochs")]


def _cells(record):
    table = bench.markdown_results([record], metrics=("dice", "auc"), extra=EXTRA)
    return [c.strip() for c in table.splitlines()[-1].strip("|").split("|")]


@pytest.mark.parametrize("network, shown, hidden", [
    ("segresnet_seg_only", ["0.876 (0.862-0.888)", "+0.025 (+0.016 to +0.036)", "0.842"], ["0.500", "-0.425", "0.176"]),
    ("efficientnet_cls_only", ["0.500 (0.500-0.500)", "-0.425 (-0.452 to -0.396)", "0.176"],
     ["0.876", "+0.025", "0.842"]),
    ("segresnet_shared", ["0.876 (0.862-0.888)", "0.500 (0.500-0.500)", "-0.425 (-0.452 to -0.396)", "0.176"], []),
])
def test_a_single_task_rows_other_head_is_left_out(tmp_path, network, shown, hidden):
    (tmp_path / "run_config.json").write_text(json.dumps({"network_name": network}))
    record = recipe.single_task_blanked(RECORD, tmp_path)
    cells = _cells(record)
    assert cells[0] == "row (seed 0)" and cells[-1] == "30"
    for text in shown:
        assert text in cells, (network, text, cells)
    for text in hidden:
        assert not any(text in cell for cell in cells), (network, text, cells)


def test_the_reference_without_a_run_config_keeps_every_column(tmp_path):
    assert recipe.single_task_blanked(RECORD, tmp_path) == RECORD


@pytest.mark.parametrize("network, kept, left_out", [
    ("segresnet_seg_only", "dice", "auc"), ("efficientnet_cls_only", "auc", "dice")])
def test_a_single_task_rows_other_head_reaches_no_csv_or_mlflow(tmp_path, network, kept, left_out):
    # the CSV and the MLflow parent run are written from the record's metrics (busbra.log_parent skips absent ones)
    (tmp_path / "run_config.json").write_text(json.dumps({"network_name": network}))
    record = recipe.single_task_blanked(RECORD, tmp_path)
    assert kept in record and left_out not in record
    assert record["network_name"] == network


def _record(network, seed, dice, epochs):
    metrics = dict(jaccard=0.6, auc=0.8, balanced_accuracy=0.7, sensitivity=0.7, specificity=0.7)
    return {"network": network, "seed": seed, "dice": {"mean": dice, "lo": 0.0, "hi": 1.0},
            **{k: {"mean": v, "lo": 0.0, "hi": 1.0} for k, v in metrics.items()}, "ece": 0.05, "epochs": epochs}


def test_the_seeds_table_averages_each_row_and_pairs_it_with_the_reference_of_its_seed(tmp_path):
    rng = np.random.default_rng(0)
    truth = np.array(["benign", "malignant"] * 20)
    per_image = {}
    for seed in (0, 1):
        reference = pd.DataFrame({"id": [f"img{i}" for i in range(40)], "true_class": truth,
                                  "dice": rng.uniform(0.5, 0.8, 40), "prob_malignant": rng.uniform(0, 1, 40)})
        # the row: every image segmented 0.1 better, the classes perfectly ranked
        row = reference.assign(dice=reference["dice"] + 0.1, prob_malignant=(truth == "malignant") * 0.5 + 0.25)
        for name, table in (("reference", reference), ("row", row)):
            per_image[name, seed] = tmp_path / f"{name}_{seed}.csv"
            table.to_csv(per_image[name, seed], index=False)
    records = [_record("reference", 0, 0.70, 7), _record("reference", 1, 0.72, 7),
               _record("row", 0, 0.80, 6), _record("row", 1, 0.90, 5)]
    text = recipe_report.seed_summary(records, ["reference", "row"], [0, 1], lambda name, seed: per_image[name, seed])

    cells = {line.split(" | ")[0].strip("| "): [c.strip() for c in line.strip("|").split("|")]
             for line in text.splitlines() if line.startswith("| reference") or line.startswith("| row")}
    assert cells["reference"][:3] == ["reference", "2", "0.710 ± 0.014"] and cells["reference"][-3:] == ["", "", "7/7"]
    assert cells["row"][:3] == ["row", "2", "0.850 ± 0.071"] and cells["row"][-1] == "6/5"
    assert cells["row"][-3] == "+0.100 (+0.100 to +0.100)"   # row minus its seed's reference, not the reverse
    assert cells["row"][-2].startswith("+0.") and not cells["row"][-2].startswith("+0.000")
