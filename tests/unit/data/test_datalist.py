from __future__ import annotations

import json

import pytest

from pipeline.data.datalist import (
    PreparedDataset,
    SkipLog,
    format_summary,
    load_datalist,
    summarize,
    validate_datalist,
    write_prepared,
)
from pipeline.data.io import DataError


def _item(i: int, cls: int = 0, fold: int | None = 0, group: str | None = None) -> dict:
    item = {"image": f"images/{i}.png", "label": f"masks/{i}.png", "cls": cls, "group": group or f"p{i}",
            "source": "test", "id": str(i)}
    if fold is not None:
        item["fold"] = fold
    return item


def _datalist(items: list[dict], classes=("benign", "malignant")) -> dict:
    return {"name": "t", "modality": "US", "classes": list(classes), "training": items, "test": []}


def test_valid_datalist_passes():
    datalist = _datalist([_item(0), _item(1, cls=1, fold=1)])
    assert validate_datalist(datalist) is datalist


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda d: d.pop("classes"), "missing top-level key 'classes'"),
        (lambda d: d.update(modality="CT"), "'modality' must be one of"),
        (lambda d: d.update(classes=["a"]), "2 or 3 distinct names"),
        (lambda d: d["training"][0].pop("group"), r"training\[0\]: missing key\(s\) group"),
        (lambda d: d["training"][0].update(cls=2), "class index in 0..1"),
        (lambda d: d["training"][0].update(fold=-1), "'fold' must be a non-negative integer"),
        (lambda d: d["training"][0].update(image=""), "'image' must be a non-empty path"),
        (lambda d: d.update(training={}), "'training' must be a list"),
    ],
)
def test_invalid_datalist_names_the_problem(mutate, match):
    datalist = _datalist([_item(0)])
    mutate(datalist)
    with pytest.raises(ValueError, match=match):
        validate_datalist(datalist)


def test_test_items_need_no_fold():
    datalist = _datalist([_item(0)])
    datalist["test"] = [_item(5, fold=None)]
    validate_datalist(datalist)


def test_load_datalist_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="datalist file not found"):
        load_datalist(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json: not valid JSON"):
        load_datalist(bad)
    incomplete = tmp_path / "incomplete.json"
    incomplete.write_text(json.dumps({"name": "x", "modality": "US", "classes": ["a", "b"]}))
    with pytest.raises(DataError, match="incomplete.json: missing top-level key 'training'"):
        load_datalist(incomplete)


def test_skiplog_records_or_raises(tmp_path):
    log = SkipLog()
    log.skip(DataError(tmp_path / "a.png", "truncated"))
    assert len(log) == 1 and log.rows[0]["problem"] == "truncated"
    csv_text = log.write_csv(tmp_path / "skipped.csv").read_text()
    assert csv_text.splitlines()[0] == "path,problem" and "a.png,truncated" in csv_text
    with pytest.raises(DataError, match="truncated"):
        SkipLog(strict=True).skip(DataError(tmp_path / "a.png", "truncated"))


def test_write_prepared_stores_relative_paths_and_counts(tmp_path):
    items = [_item(0, cls=0, fold=0), _item(1, cls=1, fold=1, group="p0")]
    items[0]["image"] = str((tmp_path / "images" / "0.png").resolve())
    log = SkipLog()
    log.skip(DataError(tmp_path / "x.png", "unreadable"))
    prepared = PreparedDataset("demo", "US", ["benign", "malignant"], items, log, license="CC0", citation="ref")
    paths = write_prepared(prepared, tmp_path)
    datalist = load_datalist(paths["datalist"])
    assert datalist["training"][0]["image"] == "images/0.png"
    dataset = json.loads(paths["dataset"].read_text())
    assert dataset["counts"]["items"] == 2 and dataset["counts"]["groups"] == 1
    assert dataset["counts"]["per_class"] == {"benign": 1, "malignant": 1}
    assert dataset["counts"]["skipped"] == 1 and dataset["license"] == "CC0"
    assert "unreadable" in paths["skipped"].read_text()


def test_write_prepared_refuses_items_without_fold(tmp_path):
    prepared = PreparedDataset("demo", "US", ["benign", "malignant"], [_item(0, fold=None)], SkipLog())
    with pytest.raises(ValueError, match="missing key\\(s\\) fold"):
        write_prepared(prepared, tmp_path)


def test_summary_table_lists_every_count():
    datalist = _datalist([_item(0, 0, 0), _item(1, 1, 1), _item(2, 1, 1, group="p1")])
    summary = summarize(datalist, n_skipped=4)
    assert summary == {"items": 3, "per_class": {"benign": 1, "malignant": 2}, "groups": 2,
                       "per_fold": {"0": 1, "1": 2}, "test_items": 0, "skipped": 4}
    table = format_summary({"demo": summary})
    header, _, row = table.splitlines()
    assert header.split() == ["dataset", "items", "benign", "malignant", "groups", "fold", "0", "fold", "1", "test",
                              "skipped"]
    assert row.split() == ["demo", "3", "1", "2", "2", "1", "2", "0", "4"]


def test_split_items_selects_folds_and_resolves_paths(tmp_path):
    from pipeline.data.datalist import split_items

    items = [_item(i, cls=i % 2, fold=i % 3) for i in range(9)]
    prepared = PreparedDataset("demo", "US", ["benign", "malignant"], items, SkipLog())
    path = write_prepared(prepared, tmp_path)["datalist"]
    train, val = split_items(path, fold=1, split="train"), split_items(path, fold=1, split="val")
    assert len(train) == 6 and len(val) == 3 and {i["fold"] for i in val} == {1}
    assert val[0]["image"] == str(tmp_path.resolve() / "images" / "1.png")
    assert len(split_items(path, fold=None, split="train")) == 9
    assert split_items(path, fold="all", split="train") == split_items(path, fold=None, split="train")
    with pytest.raises(ValueError, match="fold 'all' has no validation split"):
        split_items(path, fold="all", split="val")
    with pytest.raises(ValueError, match=r"fold 5 is out of range: .* has folds \[0, 1, 2\]"):
        split_items(path, fold=5, split="val")
    with pytest.raises(ValueError, match="'test' split .* is empty"):
        split_items(path, fold=0, split="test")
    with pytest.raises(ValueError, match="split must be one of"):
        split_items(path, fold=0, split="holdout")


def test_match_classes_reindexes_by_name_and_leaves_out_unknown_classes():
    from pipeline.data.datalist import match_classes

    three = ["normal", "benign", "malignant"]
    items = [_item(0, cls=0), _item(1, cls=1), _item(2, cls=2), _item(3, cls=0)]
    # a benign/malignant model on a three-class datalist: normal never becomes index 0 = benign
    matched, left_out = match_classes(items, three, ["benign", "malignant"])
    assert [(m["id"], m["cls"]) for m in matched] == [("1", 0), ("2", 1)] and left_out == {"normal": 2}
    assert items[1]["cls"] == 1   # the caller's items are not modified
    # a three-class model on a benign/malignant datalist: benign 0 -> 1, malignant 1 -> 2, nothing left out
    matched, left_out = match_classes([_item(0, cls=0), _item(1, cls=1)], ["benign", "malignant"], three)
    assert [m["cls"] for m in matched] == [1, 2] and left_out == {}
    same, left_out = match_classes(items, three, three)
    assert same == items and left_out == {}
    with pytest.raises(ValueError, match="no class in common"):
        match_classes(items, three, ["cyst", "fibroadenoma"])
    with pytest.raises(ValueError, match="none of the 2 items is of the model's classes"):
        match_classes([_item(0, cls=0), _item(3, cls=0)], three, ["benign", "malignant"])
