"""Auxiliary classification targets read from datalist fields (``pipeline.data.auxiliary``)."""

from __future__ import annotations

import logging

import pytest
from monai.data import list_data_collate

from pipeline.data.auxiliary import IGNORE_INDEX, add_aux_targets, check_aux_targets

BIRADS = {"birads": ["2", "3", "4", "5"]}


def test_categories_become_indices_and_missing_values_are_ignored(caplog):
    items = [{"image": "a.png", "cls": 1, "birads": "5"}, {"image": "b.png", "cls": 0, "birads": 2},
             {"image": "c.png", "cls": 0, "birads": None}, {"image": "d.png", "cls": 0, "birads": "4a"},
             {"image": "e.png", "cls": 0}]
    with caplog.at_level(logging.WARNING):
        out = add_aux_targets(items, BIRADS)
    assert [item["aux"]["birads"] for item in out] == [3, 0, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    assert "3 of 5 items have no value" in caplog.text
    assert "aux" not in items[0]  # the datalist's items are not modified
    batch = list_data_collate(out[:2])  # what the training loader gives MultiTaskPrepareBatch
    assert batch["aux"]["birads"].tolist() == [3, 0]


def test_no_targets_leaves_the_items_alone():
    items = [{"image": "a.png", "cls": 1}]
    assert add_aux_targets(items, {}) == items


def test_a_datalist_without_the_field_says_what_writes_it():
    with pytest.raises(ValueError, match="no item has a 'birads' value.*bmtl prepare --source busbra"):
        add_aux_targets([{"image": "a.png", "cls": 1}], BIRADS)


@pytest.mark.parametrize("bad,match", [
    (["2", "3"], "must map a datalist field"),
    ({"birads": "2345"}, "must be a list of categories"),
    ({"birads": ["2"]}, "two or more distinct categories"),
    ({"birads": ["2", "2", "3"]}, "two or more distinct categories"),
    ({"cls": ["0", "1"]}, "a key the pipeline already uses"),
])
def test_bad_targets_name_the_problem(bad, match):
    with pytest.raises(ValueError, match=match):
        check_aux_targets(bad)
