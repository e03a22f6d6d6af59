"""Patient-level cross-validation folds: stratified by class, grouped by patient (or duplicate cluster)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

__all__ = ["assign_device_folds", "assign_folds", "check_splits", "hold_out_test"]


def assign_folds(items: list[dict[str, Any]], n_folds: int = 5, seed: int = 0) -> list[dict[str, Any]]:
    """Set ``item["fold"]`` (0-based) with scikit-learn's ``StratifiedGroupKFold``, in place; returns ``items``.

    Items that already carry a fold (official splits) keep it; then every item must have one. Every fold receives at
    least one group: when ``StratifiedGroupKFold`` leaves a fold empty (few groups), the smallest group of the fold
    with the most groups moves there; when every class has fewer images than folds (scikit-learn then refuses to
    stratify), groups are spread by size alone.

    Args:
        items: datalist items with ``cls`` and ``group``.
        n_folds: number of folds (>= 2).
        seed: shuffling seed; the same seed and items give the same folds.

    Raises:
        ValueError: ``n_folds`` < 2, more folds than groups, or only some items carry a fold.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    have = [item.get("fold") is not None for item in items]
    if all(have) and items:
        return items
    if any(have):
        raise ValueError("some items carry a fold and others do not: give every item a fold or none")
    groups = [str(item["group"]) for item in items]
    n_groups = len(set(groups))
    if n_groups < n_folds:
        raise ValueError(f"cannot make {n_folds} folds from {n_groups} groups; use fewer folds (--folds)")
    labels = np.array([item["cls"] for item in items])
    if np.unique(labels, return_counts=True)[1].max() < n_folds:
        # scikit-learn refuses to stratify when every class has fewer images than folds: split by group alone
        for i, fold in enumerate(_group_folds(groups, n_folds, seed)):
            items[i]["fold"] = fold
        return items
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = [0] * len(items)
    for fold, (_, test_idx) in enumerate(splitter.split(np.zeros(len(items)), labels, groups)):
        for i in test_idx:
            folds[i] = int(fold)
    for i, fold in enumerate(_fill_empty_folds(groups, folds, n_folds)):
        items[i]["fold"] = fold
    return items


def hold_out_test(
    items: list[dict[str, Any]],
    *,
    test_fold: int | None = None,
    test_devices: list[str] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split ``items`` into ``(training, test)`` by patient: a fold or a set of scanners becomes the test set.

    A whole group (patient) goes to the test set when any of its images matches, so no patient straddles the two.
    The training items lose their ``fold`` (it was drawn with the test patients in it): call :func:`assign_folds`
    on them to draw the validation folds anew. Test items keep no fold either (the datalist's ``test`` section).

    Args:
        items: datalist items (``group``; ``fold`` for ``test_fold``; ``device`` for ``test_devices``).
        test_fold: the fold held out as the test set (e.g. BUS-BRA's official fold 1 is fold 0).
        test_devices: scanner names held out; an item matches when its ``device`` starts with one of them, case
            ignored (BUS-BRA writes ``"Toshiba Aplio 300 @12-14 MHz"``; ``"Toshiba"`` matches it).

    Raises:
        ValueError: neither or both of ``test_fold`` and ``test_devices``; an item without the key needed; a
            name that matches no item (a typo would otherwise silently give an empty test set); nothing left
            to train on.
    """
    if (test_fold is None) == (not test_devices):
        raise ValueError("give exactly one of test_fold and test_devices")
    if test_fold is not None:
        if any(item.get("fold") is None for item in items):
            raise ValueError("test_fold needs folds on every item (a source with official folds, e.g. busbra)")

        def matches(item: dict[str, Any]) -> bool:
            return item["fold"] == test_fold

        if not any(matches(item) for item in items):
            raise ValueError(f"test_fold {test_fold} matches no item; folds present: "
                             f"{sorted({item['fold'] for item in items})}")
    else:
        matches = _device_matcher(items, test_devices, "test")

    test_groups = {str(item["group"]) for item in items if matches(item)}
    training = [dict(item, fold=None) for item in items if str(item["group"]) not in test_groups]
    test = [{k: v for k, v in item.items() if k != "fold"} for item in items if str(item["group"]) in test_groups]
    if not training:
        raise ValueError("the test set takes every patient: nothing is left to train on")
    return training, test


def assign_device_folds(
    items: list[dict[str, Any]], val_devices: list[str], n_folds: int = 5, seed: int = 0
) -> list[dict[str, Any]]:
    """Set ``item["fold"]`` in place with fold 0 the patients of the scanners ``val_devices`` and folds 1 to
    ``n_folds - 1`` the others (:func:`assign_folds`); returns ``items``.

    Validating on fold 0 then scores a scanner the network did not train on (leave-one-domain-out validation): a
    recipe meant for other hospitals can be chosen there without touching the test scanners. A patient with any
    image from those scanners is in fold 0 whole. Folds the items already carry (official splits) are replaced.

    Args:
        items: datalist items with ``cls``, ``group`` and ``device``.
        val_devices: scanner names of fold 0; an item matches when its ``device`` starts with one of them, case
            ignored.
        n_folds: number of folds, fold 0 included (>= 2).
        seed: seed of the other folds' assignment.

    Raises:
        ValueError: ``n_folds`` < 2; an item without ``device``; a name that matches no item; the scanners take
            every patient (nothing left to train on).
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    matches = _device_matcher(items, val_devices, "validation")
    val_groups = {str(item["group"]) for item in items if matches(item)}
    rest = [item for item in items if str(item["group"]) not in val_groups]
    if not rest:
        raise ValueError("the validation scanners take every patient: nothing is left to train on")
    for item in items:
        item["fold"] = None
    if n_folds == 2:
        for item in rest:
            item["fold"] = 0
    else:
        assign_folds(rest, n_folds=n_folds - 1, seed=seed)
    for item in items:
        item["fold"] = 0 if str(item["group"]) in val_groups else int(item["fold"]) + 1
    return items


def _device_matcher(items: list[dict[str, Any]], names: list[str], role: str) -> Callable[[dict[str, Any]], bool]:
    """Whether an item's ``device`` starts with one of ``names`` (case ignored), after checking that every item
    has a device and every name matches one (a typo would otherwise silently give an empty set). ``role`` names
    the option in the errors (``test``, ``validation``)."""
    wanted = [str(name).strip().lower() for name in names if str(name).strip()]
    if any(not item.get("device") for item in items):
        raise ValueError(f"{role}_devices needs the scanner of every item ('device'; busbra reads bus_data.csv's "
                         "Device column)")
    devices = sorted({str(item["device"]) for item in items})
    for name in wanted:
        if not any(d.lower().startswith(name) for d in devices):
            raise ValueError(f"{role} device {name!r} matches no item; devices present: {', '.join(devices)}")

    def matches(item: dict[str, Any]) -> bool:
        return any(str(item["device"]).lower().startswith(name) for name in wanted)

    return matches


def _fill_empty_folds(groups: list[str], folds: list[int], n_folds: int) -> list[int]:
    """Give every empty fold a group (``StratifiedGroupKFold`` can leave a fold empty when groups are few).

    The smallest group (fewest images, then name) of the fold holding the most groups moves to the empty fold; there
    is always such a fold with two or more groups, since there are at least as many groups as folds.
    """
    fold_of = dict(zip(groups, folds))
    sizes = Counter(groups)
    while True:
        members: dict[int, list[str]] = {f: [] for f in range(n_folds)}
        for g, f in fold_of.items():
            members[f].append(g)
        empty = [f for f in range(n_folds) if not members[f]]
        if not empty:
            return [fold_of[g] for g in groups]
        donor = max(range(n_folds), key=lambda f: (len(members[f]), -f))
        moved = min(members[donor], key=lambda g: (sizes[g], g))
        fold_of[moved] = empty[0]


def _group_folds(groups: list[str], n_folds: int, seed: int) -> list[int]:
    """Folds by group only: groups in a seeded random order, largest first, each to the fold with fewest images."""
    sizes = Counter(groups)
    order = sorted(sizes)
    rng = np.random.default_rng(seed)
    order = [order[i] for i in rng.permutation(len(order))]
    order.sort(key=lambda g: -sizes[g])  # stable: ties keep the seeded order
    load = [0] * n_folds
    fold_of: dict[str, int] = {}
    for g in order:
        fold = min(range(n_folds), key=lambda f: (load[f], f))
        fold_of[g] = fold
        load[fold] += sizes[g]
    return [fold_of[g] for g in groups]


def check_splits(datalist: dict[str, Any]) -> dict[str, Any]:
    """Prove the folds of a datalist: no group straddles folds; class counts per fold.

    Returns:
        ``{"ok": bool, "straddling_groups": {group: [folds]}, "per_fold": {fold: {class: n}},
        "test_groups_in_training": [group, ...]}``. ``ok`` is False when a group straddles folds or a test
        group also appears in training.
    """
    classes = datalist["classes"]
    folds_of: dict[str, set[int]] = defaultdict(set)
    per_fold: dict[int, Counter] = defaultdict(Counter)
    for item in datalist["training"]:
        folds_of[str(item["group"])].add(item["fold"])
        per_fold[item["fold"]][classes[item["cls"]]] += 1
    straddling = {g: sorted(f) for g, f in folds_of.items() if len(f) > 1}
    test_groups = {str(item["group"]) for item in datalist.get("test", [])}
    leaked = sorted(test_groups & set(folds_of))
    return {
        "ok": not straddling and not leaked,
        "straddling_groups": straddling,
        "per_fold": {f: {c: per_fold[f].get(c, 0) for c in classes} for f in sorted(per_fold)},
        "test_groups_in_training": leaked,
    }
