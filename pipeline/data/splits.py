"""Patient-level cross-validation folds: stratified by class, grouped by patient (or duplicate cluster)."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

__all__ = ["assign_folds", "check_splits"]


def assign_folds(items: list[dict[str, Any]], n_folds: int = 5, seed: int = 0) -> list[dict[str, Any]]:
    """Set ``item["fold"]`` (0-based) with scikit-learn's ``StratifiedGroupKFold``, in place; returns ``items``.

    Items that already carry a fold (official splits) keep it; then every item must have one.

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
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, test_idx) in enumerate(splitter.split(np.zeros(len(items)), labels, groups)):
        for i in test_idx:
            items[i]["fold"] = int(fold)
    return items


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
