"""Held-out test sets (a fold or a set of scanners: ``bmtl prepare --test-fold / --test-devices``) and a validation
fold of held-out scanners (``--val-devices``)."""

from __future__ import annotations

import json

import pytest

from pipeline.cli import main
from pipeline.data.splits import assign_device_folds, check_splits, hold_out_test
from tests.unit.data.test_sources_2d import make_busbra


def _items():
    # patient p2 has one image on each scanner: it must go to the test set whole
    return [
        {"image": "a.png", "cls": 0, "group": "p1", "fold": 0, "device": "GE Logiq 7 @10-14MHz"},
        {"image": "b.png", "cls": 1, "group": "p2", "fold": 1, "device": "GE Logiq 5"},
        {"image": "c.png", "cls": 1, "group": "p2", "fold": 1, "device": "Toshiba Aplio 300 @12-14 MHz"},
        {"image": "d.png", "cls": 0, "group": "p3", "fold": 2, "device": "U-Systems @10-14MHz"},
        {"image": "e.png", "cls": 0, "group": "p4", "fold": 0, "device": "GE Logiq 5"},
    ]


def test_devices_by_prefix_whole_patients():
    training, test = hold_out_test(_items(), test_devices=["toshiba", "U-Systems"])
    assert sorted(i["image"] for i in test) == ["b.png", "c.png", "d.png"]
    assert sorted(i["image"] for i in training) == ["a.png", "e.png"]
    assert all(i["fold"] is None for i in training) and all("fold" not in i for i in test)
    assert not {i["group"] for i in training} & {i["group"] for i in test}


def test_fold():
    training, test = hold_out_test(_items(), test_fold=0)
    assert sorted(i["image"] for i in test) == ["a.png", "e.png"]
    assert len(training) == 3


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one"),
    ({"test_fold": 0, "test_devices": ["GE"]}, "exactly one"),
    ({"test_devices": ["Siemens"]}, "matches no item; devices present: GE Logiq 5"),
    ({"test_fold": 7}, "test_fold 7 matches no item"),
    ({"test_devices": ["GE", "Toshiba", "U-Systems"]}, "nothing is left to train on"),
])
def test_errors_name_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        hold_out_test(_items(), **kwargs)


def test_devices_need_a_device_column():
    items = [dict(i) for i in _items()]
    del items[0]["device"]
    with pytest.raises(ValueError, match="needs the scanner of every item"):
        hold_out_test(items, test_devices=["GE"])


def _prepare_busbra(tmp_path, *options: str) -> tuple[dict, dict]:
    """``bmtl prepare`` of a small BUS-BRA copy with ``options`` and 2 folds: its datalist and dataset.json."""
    root = make_busbra(tmp_path / "BUSBRA")
    out = tmp_path / "prepared"
    assert main(["prepare", "--source", "busbra", "--input", str(root), "--output", str(out), *options,
                 "--folds", "2"]) == 0
    return json.loads((out / "datalist.json").read_text()), json.loads((out / "dataset.json").read_text())


def test_cli_cross_scanner_split(tmp_path, capsys):
    datalist, dataset = _prepare_busbra(tmp_path, "--test-devices", "GE Logiq 7")
    assert sorted(i["id"] for i in datalist["test"]) == ["bus_0001-l", "bus_0001-r"]
    assert {i["device"] for i in datalist["training"]} == {"GE Logiq 5"}
    assert sorted({i["fold"] for i in datalist["training"]}) == [0, 1]  # split anew into --folds folds
    assert check_splits(datalist)["ok"]
    assert dataset["test_split"] == "devices GE Logiq 7"


def test_cli_official_test_fold(tmp_path):
    # official kFold 3 (patient 1) is fold 2
    datalist, _ = _prepare_busbra(tmp_path, "--test-fold", "2")
    assert sorted(i["id"] for i in datalist["test"]) == ["bus_0001-l", "bus_0001-r"]
    assert len(datalist["training"]) == 4 and check_splits(datalist)["ok"]


def test_cli_options_exclusive(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["prepare", "--source", "busbra", "--input", str(tmp_path), "--output", str(tmp_path / "o"),
              "--test-fold", "0", "--test-devices", "GE"])


def test_device_folds_validate_on_a_scanner_not_trained_on():
    training, _ = hold_out_test(_items(), test_devices=["U-Systems"])
    items = assign_device_folds(training + [
        {"image": f"x{i}.png", "cls": i % 2, "group": f"q{i}", "device": "GE Logiq 7 @10-14MHz"} for i in range(8)
    ], ["GE Logiq 5"], n_folds=3)
    fold0 = {i["image"] for i in items if i["fold"] == 0}
    # p2 has one GE Logiq 5 and one Toshiba image: the patient goes to fold 0 whole
    assert fold0 == {"b.png", "c.png", "e.png"}
    assert {i["fold"] for i in items if i["image"] not in fold0} == {1, 2}
    assert all(not i["device"].startswith("GE Logiq 5") for i in items if i["fold"] != 0)


def test_device_folds_replace_official_folds_and_two_folds():
    items = assign_device_folds([dict(i) for i in _items()], ["toshiba"], n_folds=2)
    assert {i["image"]: i["fold"] for i in items} == {"a.png": 1, "b.png": 0, "c.png": 0, "d.png": 1, "e.png": 1}


@pytest.mark.parametrize("devices, n_folds, message", [
    (["Siemens"], 3, "validation device 'siemens' matches no item"),
    (["GE", "Toshiba", "U-Systems"], 3, "nothing is left to train on"),
    (["GE"], 1, "n_folds must be at least 2"),
])
def test_device_folds_errors(devices, n_folds, message):
    with pytest.raises(ValueError, match=message):
        assign_device_folds([dict(i) for i in _items()], devices, n_folds=n_folds)


def test_cli_validation_scanner(tmp_path):
    datalist, dataset = _prepare_busbra(tmp_path, "--val-devices", "GE Logiq 7")
    folds = {i["id"]: i["fold"] for i in datalist["training"]}
    assert {k for k, f in folds.items() if f == 0} == {"bus_0001-l", "bus_0001-r"}
    assert set(folds.values()) == {0, 1} and check_splits(datalist)["ok"]
    assert dataset["validation_split"] == "fold 0: devices GE Logiq 7"
