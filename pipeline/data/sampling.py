"""Class balancing for training: deterministic oversampling (paper 004) and a class-balanced sampler."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils.data import WeightedRandomSampler

__all__ = ["oversample", "class_balanced_sampler"]


def oversample(items: list[dict[str, Any]], key: str = "cls") -> list[dict[str, Any]]:
    """Repeat every item of class ``c`` ``round(1 / p_c)`` times, ``p_c`` the class's share (paper 004).

    Deterministic: the order is the input order, each item followed by its copies.

    Raises:
        ValueError: ``items`` is empty.
    """
    if not items:
        raise ValueError("items is empty: nothing to oversample")
    counts = Counter(item[key] for item in items)
    factor = {c: max(1, round(len(items) / n)) for c, n in counts.items()}
    return [item for item in items for _ in range(factor[item[key]])]


def class_balanced_sampler(items: list[dict[str, Any]], key: str = "cls", seed: int = 0) -> WeightedRandomSampler:
    """A ``WeightedRandomSampler`` drawing each item with probability proportional to 1 / (its class count), as
    many draws per epoch as there are items; seeded."""
    if not items:
        raise ValueError("items is empty: cannot build a sampler")
    counts = Counter(item[key] for item in items)
    weights = torch.tensor([1.0 / counts[item[key]] for item in items], dtype=torch.double)
    generator = torch.Generator().manual_seed(int(seed))
    return WeightedRandomSampler(weights, num_samples=len(items), replacement=True, generator=generator)
