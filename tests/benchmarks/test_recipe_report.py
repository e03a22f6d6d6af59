"""``benchmarks/recipe.py``'s table: a single-task baseline's constant head is never reported as a score."""

from __future__ import annotations

import json

import pytest

import bench    # benchmarks/ is on the path (tests/conftest.py)
import recipe

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
