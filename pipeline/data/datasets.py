"""MONAI's ``Dataset`` and ``CacheDataset`` with errors that name the item's files.

When a file of the datalist cannot be read (a PNG truncated after ``prepare``, a label that is not an image), MONAI
raises ``RuntimeError: applying transform <LoadImaged ...>`` over Pillow's own error, e.g. ``image file is truncated``,
and neither names the file. These subclasses re-raise any error of an item's transforms as a ``DataError`` naming the
item's image and label and the underlying problem (the original exception stays chained), and a file of the data list
that does not exist is named before caching starts. Drop-in replacements:
``_target_: pipeline.data.datasets.CacheDataset`` in a bundle config.
"""

from __future__ import annotations

import os
from typing import Any

from monai.data import CacheDataset as _MonaiCacheDataset
from monai.data import Dataset as _MonaiDataset

from pipeline.data.io import DataError

__all__ = ["Dataset", "CacheDataset", "check_files", "item_error"]


def _root_cause(error: BaseException) -> BaseException:
    """The error under MONAI's ``RuntimeError: applying transform ...`` wrappers (nested once per Compose level)."""
    seen = set()
    while (isinstance(error, RuntimeError) and str(error).startswith("applying transform")
           and (error.__cause__ or error.__context__) is not None and id(error) not in seen):
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return error


def item_error(item: Any, error: BaseException) -> BaseException:
    """A ``DataError`` on ``item``'s image naming its label and the root cause of ``error`` (``error`` itself when it
    is already a ``DataError`` or the item has no image path)."""
    if isinstance(error, DataError) or not isinstance(item, dict) or not isinstance(item.get("image"), str):
        return error
    cause = _root_cause(error)
    if isinstance(cause, DataError):   # a reader's own error already names the file (image or label) and the problem
        return DataError(cause.path, cause.problem)   # a new one: raising `cause` from its own wrapper would loop
    label = f" (label {item['label']})" if isinstance(item.get("label"), str) else ""
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return DataError(item["image"], f"this item{label} cannot be loaded: {type(cause).__name__}: {text[:300]}; "
                                    "re-run `bmtl prepare` or remove it from the datalist")


def check_files(data: Any, keys: tuple[str, ...] = ("image", "label")) -> None:
    """Raise a ``DataError`` naming the first missing file among the ``keys`` of the items of ``data`` (and how many
    are missing): before MONAI's ``LoadImaged``, which tries every reader and buries the name in its errors."""
    if not isinstance(data, (list, tuple)):
        return
    missing = [(i, key, item[key]) for i, item in enumerate(data) if isinstance(item, dict)
               for key in keys if isinstance(item.get(key), str) and not os.path.isfile(item[key])]
    if missing:
        i, key, path = missing[0]
        more = f"; {len(missing) - 1} more file(s) of the datalist are missing too" if len(missing) > 1 else ""
        raise DataError(path, f"{key} file not found (item {i} of the dataset){more}: is the datalist from another "
                              "machine, or were files moved? paths are relative to the datalist's folder")


def _reraise(item: Any, error: Exception) -> None:
    named = item_error(item, error)
    if named is error:
        raise error
    raise named from error


class Dataset(_MonaiDataset):
    """``monai.data.Dataset`` whose item errors name the item's files (see the module docstring); missing files are
    reported when it is built."""

    def __init__(self, data: Any, transform: Any = None) -> None:
        check_files(data)
        super().__init__(data, transform)

    def _transform(self, index: int):
        try:
            return super()._transform(index)
        except Exception as e:
            _reraise(self.data[index], e)


class CacheDataset(_MonaiCacheDataset):
    """``monai.data.CacheDataset`` whose item errors (while caching and after) name the item's files; missing files
    are reported before caching starts."""

    def __init__(self, data: Any, *args: Any, **kwargs: Any) -> None:
        check_files(data)
        super().__init__(data, *args, **kwargs)

    def _load_cache_item(self, idx: int):
        try:
            return super()._load_cache_item(idx)
        except Exception as e:
            _reraise(self.data[idx], e)

    def _transform(self, index: int):
        try:
            return super()._transform(index)
        except Exception as e:
            _reraise(self.data[index], e)
