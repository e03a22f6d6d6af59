"""Auxiliary classification targets: datalist fields (e.g. BUS-BRA's ``birads``) as category indices for training.

A field such as the radiologist's BI-RADS category is known for the training images only, never at inference: it is
a training signal for the features the classifier shares (``pipeline.networks.auxiliary``), not an output.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.keys import BatchKey, Head

__all__ = ["IGNORE_INDEX", "add_aux_targets", "check_aux_targets"]

IGNORE_INDEX = -1  # an item without a value: the loss skips it (``cross_entropy(..., ignore_index=-1)``)

# the batch's keys and the network's outputs: a target of the same name would overwrite one of them
RESERVED_NAMES = frozenset(k.value for k in (*BatchKey, *Head))

logger = logging.getLogger(__name__)


def check_aux_targets(aux_targets: Mapping[str, Sequence[Any]]) -> dict[str, list[str]]:
    """``aux_targets`` with each category as a string, checked.

    Raises:
        ValueError: ``aux_targets`` is not a mapping, a name is one of the batch's own keys, or a name has fewer than
            two categories or repeats one (the message names the target).
    """
    if not isinstance(aux_targets, Mapping):
        raise ValueError(f"aux_targets must map a datalist field to its categories, got {aux_targets!r}")
    checked = {}
    for name, categories in aux_targets.items():
        if name in RESERVED_NAMES:
            raise ValueError(f"aux_targets: {name!r} is a key the pipeline already uses; name the datalist field")
        if isinstance(categories, (str, bytes)) or not isinstance(categories, Sequence):
            raise ValueError(f"aux_targets[{name!r}] must be a list of categories, got {categories!r}")
        values = [str(c) for c in categories]
        if len(values) < 2 or len(set(values)) != len(values):
            raise ValueError(f"aux_targets[{name!r}] needs two or more distinct categories, got {values}")
        checked[str(name)] = values
    return checked


def add_aux_targets(items: Sequence[dict[str, Any]], aux_targets: Mapping[str, Sequence[Any]]
                    ) -> list[dict[str, Any]]:
    """The items, each with ``item["aux"] = {name: index}``: the item's value of each field as an index into the
    field's categories, ``IGNORE_INDEX`` where the item has no value or one outside the categories (logged).

    Args:
        items: datalist items (``pipeline.data.datalist.split_items``); not modified.
        aux_targets: field -> its categories, e.g. ``{"birads": ["2", "3", "4", "5"]}``; values are compared as
            strings (a datalist's ``4`` is the category ``"4"``). Empty: the items as they are.

    Raises:
        ValueError: ``aux_targets`` is invalid (``check_aux_targets``), or no item has a value of a field in its
            categories (the datalist was prepared without it: the message says what writes it).
    """
    targets = check_aux_targets(aux_targets)
    if not targets:
        return list(items)
    indices: dict[str, list[int]] = {}
    for name, categories in targets.items():
        lookup = {c: i for i, c in enumerate(categories)}
        found = [lookup.get(str(item[name]), IGNORE_INDEX) if item.get(name) is not None else IGNORE_INDEX
                 for item in items]
        missing = sum(i == IGNORE_INDEX for i in found)
        if missing == len(found):
            raise ValueError(f"aux_targets: no item has a {name!r} value in {categories}; the datalist must carry the "
                             f"field (e.g. `bmtl prepare --source busbra` records BI-RADS as 'birads')")
        if missing:
            logger.warning("aux target %r: %d of %d items have no value in %s (left out of its loss)", name, missing,
                           len(found), categories)
        indices[name] = found
    return [{**item, BatchKey.AUX.value: {name: found[i] for name, found in indices.items()}}
            for i, item in enumerate(items)]
