"""Patient-level folds (``pipeline.data.splits``): groups never straddle folds, classes balanced, clear errors."""

from __future__ import annotations

import copy
import json
import warnings
from collections import Counter, defaultdict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.cli import main
from pipeline.data.splits import assign_folds, check_splits


def _items(group_sizes: list[int], group_classes: list[int], mixed: dict[int, int] | None = None) -> list[dict]:
    """Items of groups ``g0, g1, ...``; group ``g`` has ``group_sizes[g]`` images of class ``group_classes[g]``
    (``mixed`` maps a group to a second class given to its last image: a patient with two lesions)."""
    items = []
    for g, (size, cls) in enumerate(zip(group_sizes, group_classes)):
        for k in range(size):
            c = (mixed or {}).get(g, cls) if k == size - 1 and size > 1 else cls
            items.append({"image": f"img_{g}_{k}.png", "label": "", "cls": c, "group": f"g{g}", "source": "t"})
    return items


def _folds_of_groups(items: list[dict]) -> dict[str, set[int]]:
    folds = defaultdict(set)
    for item in items:
        folds[item["group"]].add(item["fold"])
    return folds


@st.composite
def group_structures(draw):
    n_folds = draw(st.integers(2, 6))
    n_classes = draw(st.integers(2, 3))
    n_groups = draw(st.integers(n_folds, 40))
    sizes = draw(st.lists(st.integers(1, 5), min_size=n_groups, max_size=n_groups))
    classes = draw(st.lists(st.integers(0, n_classes - 1), min_size=n_groups, max_size=n_groups))
    mixed_groups = draw(st.lists(st.integers(0, n_groups - 1), max_size=3))
    mixed = {g: draw(st.integers(0, n_classes - 1)) for g in mixed_groups}
    seed = draw(st.integers(0, 2**31 - 1))
    return _items(sizes, classes, mixed), n_folds, seed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(group_structures())
def test_groups_never_straddle_folds(case):
    items, n_folds, seed = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sklearn: a class with fewer members than folds
        out = assign_folds(items, n_folds=n_folds, seed=seed)
    assert out is items
    assert all(isinstance(item["fold"], int) and 0 <= item["fold"] < n_folds for item in items)
    assert all(len(folds) == 1 for folds in _folds_of_groups(items).values())
    # every fold is used (there are at least as many groups as folds)
    assert {item["fold"] for item in items} == set(range(n_folds))
    report = check_splits({"classes": ["a", "b", "c"], "training": items, "test": []})
    assert report["ok"] and report["straddling_groups"] == {}


def test_every_fold_used_when_groups_are_few():
    """Regression: ``StratifiedGroupKFold`` alone leaves one of these 7 folds empty (7 groups, seed 0)."""
    from sklearn.model_selection import StratifiedGroupKFold

    items = _items([2, 2, 2, 1, 3, 2, 4], [1, 1, 1, 0, 0, 1, 0])
    labels = [item["cls"] for item in items]
    groups = [item["group"] for item in items]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        raw = StratifiedGroupKFold(7, shuffle=True, random_state=0).split(np.zeros(len(items)), labels, groups)
        assert sum(1 for _, test in raw if len(test)) == 6  # the problem this guards against
        assign_folds(items, n_folds=7, seed=0)
    assert {item["fold"] for item in items} == set(range(7))
    assert all(len(folds) == 1 for folds in _folds_of_groups(items).values())


def test_fewer_images_per_class_than_folds():
    """Regression: scikit-learn refuses to stratify when every class is smaller than the number of folds."""
    items = _items([1, 1], [0, 1])
    assign_folds(items, n_folds=2, seed=0)
    assert sorted(item["fold"] for item in items) == [0, 1]
    items = _items([2, 1, 1, 1], [0, 1, 2, 0])  # 3 classes of <= 3 images, 4 folds, 4 groups
    assign_folds(items, n_folds=4, seed=3)
    assert {item["fold"] for item in items} == {0, 1, 2, 3}
    assert all(len(folds) == 1 for folds in _folds_of_groups(items).values())


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_class_stratification_roughly_balanced(seed):
    rng = np.random.default_rng(seed)
    n_groups = 300
    sizes = rng.integers(1, 4, n_groups).tolist()
    classes = (rng.random(n_groups) < 0.35).astype(int).tolist()  # about 35% malignant patients
    items = _items(sizes, classes)
    assign_folds(items, n_folds=5, seed=seed)
    overall = np.mean([item["cls"] for item in items])
    per_fold = defaultdict(list)
    for item in items:
        per_fold[item["fold"]].append(item["cls"])
    sizes_per_fold = [len(v) for v in per_fold.values()]
    assert len(per_fold) == 5
    assert max(sizes_per_fold) - min(sizes_per_fold) <= 0.15 * len(items) / 5 + 3
    for fold, labels in per_fold.items():
        assert abs(np.mean(labels) - overall) < 0.05, (fold, np.mean(labels), overall)


def test_three_classes_each_in_every_fold():
    rng = np.random.default_rng(5)
    items = _items(rng.integers(1, 3, 120).tolist(), rng.integers(0, 3, 120).tolist())
    assign_folds(items, n_folds=4, seed=0)
    per_fold = defaultdict(Counter)
    for item in items:
        per_fold[item["fold"]][item["cls"]] += 1
    totals = Counter(item["cls"] for item in items)
    for counts in per_fold.values():
        for cls, total in totals.items():
            assert abs(counts[cls] - total / 4) <= 0.2 * total / 4 + 2


def test_deterministic_for_a_seed():
    rng = np.random.default_rng(1)
    base = _items(rng.integers(1, 4, 60).tolist(), rng.integers(0, 2, 60).tolist())
    a = [item["fold"] for item in assign_folds(copy.deepcopy(base), n_folds=5, seed=7)]
    b = [item["fold"] for item in assign_folds(copy.deepcopy(base), n_folds=5, seed=7)]
    assert a == b
    others = [[item["fold"] for item in assign_folds(copy.deepcopy(base), n_folds=5, seed=s)] for s in (8, 9, 10)]
    assert any(o != a for o in others)  # the seed matters


def test_existing_folds_kept():
    items = _items([2, 1, 3, 1], [0, 1, 0, 1])
    official = [3, 3, 0, 1, 1, 1, 2]  # folds from the source, even unusual ones, are not touched
    for item, fold in zip(items, official):
        item["fold"] = fold
    assign_folds(items, n_folds=5, seed=0)
    assert [item["fold"] for item in items] == official


def test_partial_folds_rejected():
    items = _items([2, 2, 2], [0, 1, 0])
    items[0]["fold"] = 0
    with pytest.raises(ValueError, match="some items carry a fold"):
        assign_folds(items, n_folds=2)


def test_fold_none_counts_as_missing():
    items = _items([1, 1, 1, 1], [0, 1, 0, 1])
    for item in items:
        item["fold"] = None
    assign_folds(items, n_folds=2, seed=0)
    assert {item["fold"] for item in items} == {0, 1}


@pytest.mark.parametrize("n_folds", [1, 0, -3])
def test_too_few_folds(n_folds):
    with pytest.raises(ValueError, match="n_folds must be at least 2"):
        assign_folds(_items([1, 1, 1], [0, 1, 0]), n_folds=n_folds)


def test_too_few_groups_names_counts():
    items = _items([5, 5, 5], [0, 1, 0])  # 15 images but only 3 patients
    with pytest.raises(ValueError, match=r"cannot make 5 folds from 3 groups"):
        assign_folds(items, n_folds=5)
    with pytest.raises(ValueError, match="0 groups"):
        assign_folds([], n_folds=2)


def test_group_ids_compared_as_strings():
    """Group 1 (int) and "1" (str) are the same patient."""
    items = _items([1, 1, 1, 1, 1, 1], [0, 1, 0, 1, 0, 1])
    items[0]["group"], items[1]["group"] = 1, "1"
    assign_folds(items, n_folds=3, seed=0)
    assert items[0]["fold"] == items[1]["fold"]


# ------------------------------------------------------------------------------------------------------- check_splits


def _datalist(items, test=None):
    return {"name": "t", "modality": "US", "classes": ["benign", "malignant"], "training": items, "test": test or []}


def _good_items():
    rng = np.random.default_rng(3)
    return assign_folds(_items(rng.integers(1, 3, 30).tolist(), rng.integers(0, 2, 30).tolist()), n_folds=3, seed=0)


def test_check_splits_ok_and_counts():
    items = _good_items()
    report = check_splits(_datalist(items))
    assert report["ok"] and report["straddling_groups"] == {} and report["test_groups_in_training"] == []
    assert sorted(report["per_fold"]) == [0, 1, 2]
    assert sum(n for counts in report["per_fold"].values() for n in counts.values()) == len(items)
    for fold, counts in report["per_fold"].items():
        assert set(counts) == {"benign", "malignant"}
        assert counts["benign"] == sum(1 for i in items if i["fold"] == fold and i["cls"] == 0)


def test_check_splits_detects_straddling_group():
    items = _good_items()
    victim = next(item for item in items if sum(i["group"] == item["group"] for i in items) > 1)
    victim["fold"] = (victim["fold"] + 1) % 3
    report = check_splits(_datalist(items))
    assert not report["ok"]
    assert list(report["straddling_groups"]) == [victim["group"]]
    assert len(report["straddling_groups"][victim["group"]]) == 2


def test_check_splits_detects_test_leak():
    items = _good_items()
    test = [{"image": "t0.png", "label": "", "cls": 0, "group": items[0]["group"], "source": "t"},
            {"image": "t1.png", "label": "", "cls": 1, "group": "new_patient", "source": "t"}]
    report = check_splits(_datalist(items, test))
    assert not report["ok"]
    assert report["test_groups_in_training"] == [items[0]["group"]]
    assert report["straddling_groups"] == {}


# ---------------------------------------------------------------------------------------------------------------- CLI


def test_cli_check_splits(tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_datalist(_good_items())))
    assert main(["check-splits", str(good)]) == 0
    assert "OK" in capsys.readouterr().out

    items = _good_items()
    victim = next(item for item in items if sum(i["group"] == item["group"] for i in items) > 1)
    victim["fold"] = (victim["fold"] + 1) % 3
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_datalist(items)))
    assert main(["check-splits", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"group {victim['group']} straddles folds" in out and "FAILED" in out

    leak = tmp_path / "leak.json"
    items = _good_items()
    leak.write_text(json.dumps(_datalist(items, [dict(items[0], fold=None)])))
    assert main(["check-splits", str(leak)]) == 1
    assert "in both test and training" in capsys.readouterr().out


def test_cli_check_splits_missing_file(tmp_path, capsys):
    assert main(["check-splits", str(tmp_path / "none.json")]) == 1
    assert "not found" in capsys.readouterr().err
