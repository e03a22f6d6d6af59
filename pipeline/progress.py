"""Progress bars of the long ``bmtl`` steps (``prepare``, ``dedup``, ``cv``), like ``bmtl predict``'s."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["progress"]

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "image") -> Iterator[T]:
    """``iterable`` with a tqdm bar on stderr, shown only when stderr is a terminal (``disable=None``), so logs, CI
    and captured output stay clean."""
    from tqdm.auto import tqdm

    return iter(tqdm(iterable, desc=desc, total=total, unit=unit, disable=None, leave=False, dynamic_ncols=True))
