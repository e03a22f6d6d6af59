"""Helpers shared by the 2D source converters (``busi``, ``busbra``, ``udiat``, ``folder``).

A converter finds its image/mask pairs and class labels in the source's own layout, then hands each pair to
``convert_pair``, which reads and validates it, writes the normalised copies (``images/<id>.png``: 8-bit grey, one
channel, original size and orientation; ``masks/<id>.png``: 0/1 uint8) and returns the datalist item. Every problem
with one input becomes a ``DataError`` recorded in the ``SkipLog`` (raised in strict mode); problems that leave
nothing to convert (an empty folder, a label table without the needed columns) raise.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.datalist import SkipLog
from pipeline.data.io import (
    IMAGE_EXTENSIONS,
    DataError,
    check_mask_matches,
    read_grey_uint8,
    read_mask,
    write_mask_png,
    write_png,
)

__all__ = [
    "KNOWN_CLASSES",
    "LESION_CLASSES",
    "TABLE_EXTENSIONS",
    "SIDECAR_EXTENSIONS",
    "SIDECAR_NAMES",
    "IdMaker",
    "safe_id",
    "natural_key",
    "find_child",
    "is_image_file",
    "list_images",
    "split_mask_name",
    "pair_images_and_masks",
    "scan_class_folders",
    "check_not_empty",
    "load_pair",
    "write_pair",
    "convert_pair",
    "read_table",
    "parse_class",
    "name_key",
]

KNOWN_CLASSES = ("normal", "benign", "malignant")
LESION_CLASSES = ("benign", "malignant")
TABLE_EXTENSIONS = (".csv", ".xlsx", ".xls")

# files that accompany images in a class folder (notes, tables, thumbnails' caches) and are not meant as inputs:
# ignored without a skipped.csv row; any other non-image file gets a row, so nothing is left out silently
SIDECAR_EXTENSIONS = (".txt", ".md", ".rtf", ".csv", ".tsv", ".json", ".xml", ".yaml", ".yml", ".ini", ".log",
                      ".xlsx", ".xls", ".ods", ".pdf", ".doc", ".docx", ".html", ".htm")
SIDECAR_NAMES = ("thumbs.db", "desktop.ini", "ehthumbs.db")
_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")

_MASK_STEM = re.compile(r"^(?P<base>.+?)_mask(?:_(?P<n>\d+))?$", re.IGNORECASE)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


# ----------------------------------------------------------------------------------------------------------- ids
def safe_id(name: str) -> str:
    """A filesystem-safe id from a file name: runs of characters other than letters, digits, ``.``, ``_`` and ``-``
    become one ``_``; leading/trailing separators are dropped (``"benign (12)"`` -> ``"benign_12"``)."""
    cleaned = _UNSAFE.sub("_", name)
    cleaned = re.sub(r"_{2,}", "_", cleaned).strip("._-")
    return cleaned or "item"


class IdMaker:
    """Hands out unique, filesystem-safe ids; a clash (compared case-insensitively, as on Windows or macOS
    filesystems) gets a ``-2``, ``-3``... suffix."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def __call__(self, name: str) -> str:
        base = safe_id(name)
        candidate, n = base, 1
        while candidate.lower() in self._taken:
            n += 1
            candidate = f"{base}-{n}"
        self._taken.add(candidate.lower())
        return candidate


def natural_key(path: str | os.PathLike) -> list[Any]:
    """Sort key that orders ``"x (2)"`` before ``"x (10)"``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", Path(path).name)]


# -------------------------------------------------------------------------------------------------------- layout
def find_child(parent: Path, name: str, want_dir: bool | None = None) -> Path | None:
    """The entry of ``parent`` called ``name``, compared case-insensitively (exact match preferred); None if absent."""
    exact = parent / name
    if exact.exists() and (want_dir is None or exact.is_dir() == want_dir):
        return exact
    if not parent.is_dir():
        return None
    for child in sorted(parent.iterdir()):
        if child.name.lower() == name.lower() and (want_dir is None or child.is_dir() == want_dir):
            return child
    return None


def _hidden(path: Path) -> bool:
    # dot files (macOS "._x.png" resource forks, .DS_Store) are not data
    return path.name.startswith(".")


def is_image_file(path: Path) -> bool:
    """A visible regular file with one of ``IMAGE_EXTENSIONS`` (any case)."""
    return path.is_file() and not _hidden(path) and path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, in natural order."""
    return sorted((p for p in folder.iterdir() if is_image_file(p)), key=natural_key)


def split_mask_name(path: Path) -> tuple[str, int] | None:
    """``("x (1)", 0)`` for ``x (1)_mask.png``, ``("x (1)", 2)`` for ``x (1)_mask_2.png`` (or ``.nii.gz``), None for
    a non-mask."""
    stem = path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem
    m = _MASK_STEM.match(stem)
    if m is None:
        return None
    return m.group("base"), int(m.group("n") or 0)


def _is_dicom(path: Path) -> bool:
    """A DICOM file by its suffix, or (without one) by the ``DICM`` tag of the DICOM file format."""
    if path.suffix.lower() in _DICOM_SUFFIXES:
        return True
    if path.suffix and not path.suffix[1:].isdigit():   # scanners write names like IM0001 or 1.2.840.1234
        return False
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _not_an_input(path: Path) -> DataError | None:
    """The skipped.csv row of a file in a class folder that is neither an image nor a sidecar; None for a sidecar."""
    if path.suffix.lower() in SIDECAR_EXTENSIONS or path.name.lower() in SIDECAR_NAMES:
        return None
    accepted = ", ".join(IMAGE_EXTENSIONS)
    if _is_dicom(path):
        return DataError(path, f"DICOM file: the folder source does not read DICOM (it reads {accepted}); convert it "
                               "to PNG first, or predict it directly with `bmtl predict`")
    what = f"{path.suffix!r} file" if path.suffix else "file without extension"
    return DataError(path, f"not an image file ({what}): the folder source reads {accepted}; convert it or move it "
                           "out of the class folder")


def pair_images_and_masks(folder: Path, log: SkipLog) -> list[tuple[Path, list[Path]]]:
    """Pair the images of ``folder`` with their masks (``<name>_mask.<ext>``, ``<name>_mask_1.<ext>``...).

    Returns ``[(image, [masks...]), ...]`` in natural order; an image may have no mask. Orphan masks, images whose
    name stem is shared with another image (the mask would be ambiguous), unexpected sub-folders and files that are
    not images (DICOM included: this layout is read as PNG/JPEG/BMP/TIFF) are skipped; sidecar files (notes, tables,
    ``Thumbs.db``: ``SIDECAR_EXTENSIONS``, ``SIDECAR_NAMES``) and hidden ones are ignored.
    """
    images: dict[str, list[Path]] = {}
    masks: dict[str, list[tuple[int, Path]]] = {}
    for path in sorted(folder.iterdir(), key=natural_key):
        if _hidden(path):
            continue
        if path.is_dir():
            log.skip(DataError(path, "unexpected sub-folder inside a class folder: its files are not read"))
            continue
        if not is_image_file(path):
            problem = _not_an_input(path) if path.is_file() else None
            if problem is not None:
                log.skip(problem)
            continue  # README, Thumbs.db, spreadsheets...: not inputs
        split = split_mask_name(path)
        if split is None:
            images.setdefault(path.stem.lower(), []).append(path)
        else:
            masks.setdefault(split[0].lower(), []).append((split[1], path))
    pairs = []
    for stem, paths in images.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            for p in paths:
                log.skip(DataError(p, f"several images share the name stem {p.stem!r} ({names}): cannot tell which "
                                      "one a mask belongs to; rename all but one"))
            continue
        found = [p for _, p in sorted(masks.get(stem, []), key=lambda t: (t[0], natural_key(t[1])))]
        pairs.append((paths[0], found))
    for stem, found in masks.items():
        if stem not in images:
            for _, p in found:
                base = split_mask_name(p)[0]
                log.skip(DataError(p, f"orphan mask: no image named {base!r} (any of {', '.join(IMAGE_EXTENSIONS)}) "
                                      f"beside it"))
    pairs.sort(key=lambda t: natural_key(t[0]))
    return pairs


def scan_class_folders(root: Path, log: SkipLog, known: Sequence[str] = KNOWN_CLASSES) -> dict[str, Path]:
    """Map each known class name to its folder under ``root`` (folder names compared case-insensitively).

    Folders with other names are skipped as unknown class folders; image files lying directly in ``root`` are
    skipped too (their class is unknown).
    """
    found: dict[str, Path] = {}
    for path in sorted(root.iterdir(), key=natural_key):
        if _hidden(path):
            continue
        if path.is_dir():
            name = path.name.lower()
            if name not in known:
                log.skip(DataError(path, f"unknown class folder {path.name!r}: expected one of "
                                         f"{', '.join(known)} (case-insensitive); its images are not read"))
            elif name in found:
                log.skip(DataError(path, f"second folder for class {name!r} (the first is {found[name].name!r}): "
                                         "merge them"))
            else:
                found[name] = path
        elif is_image_file(path):
            log.skip(DataError(path, f"image outside a class folder: put it under one of {', '.join(known)}"))
    return found


def check_not_empty(input_dir: Path) -> None:
    """Raise a ``DataError`` on ``input_dir`` when it is missing or holds nothing (hidden files aside)."""
    if not input_dir.is_dir():
        raise DataError(input_dir, "input folder not found")
    if not any(not _hidden(p) for p in input_dir.iterdir()):
        raise DataError(input_dir, "input folder is empty: nothing usable to convert")


# -------------------------------------------------------------------------------------------------------- pairs
def load_pair(
    image_path: Path, mask_paths: Sequence[Path], class_name: str, mask_hint: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """Read one image (as 8-bit grey) and the union of its masks, and check they belong together.

    Args:
        image_path: the image.
        mask_paths: its masks (several are merged by union); may be empty for a normal image.
        class_name: the image's class; ``benign``/``malignant`` need a non-empty mask, ``normal`` must have none.
        mask_hint: where the mask was expected, for the "mask missing" message.

    Returns:
        ``(image uint8 (H, W), mask bool (H, W))``.

    Raises:
        DataError: naming the file and the problem.
    """
    image = read_grey_uint8(image_path)
    mask = np.zeros(image.shape, dtype=bool)
    for mask_path in mask_paths:
        one = read_mask(mask_path)
        check_mask_matches(one, image.shape, mask_path)
        mask |= one
    lesion = class_name in LESION_CLASSES
    if lesion and not mask_paths:
        where = f" (expected {mask_hint})" if mask_hint else ""
        raise DataError(image_path, f"mask missing for a {class_name} image{where}")
    if lesion and not mask.any():
        shown = mask_paths[0] if len(mask_paths) == 1 else image_path
        raise DataError(shown, f"mask is empty (all zero) on a {class_name} image: a lesion class needs the lesion "
                               "outlined")
    if not lesion and mask.any():
        raise DataError(
            mask_paths[0] if len(mask_paths) == 1 else image_path,
            f"{class_name} image has a non-empty mask ({int(mask.sum())} lesion pixels): move the image to its "
            "lesion class or clear the mask",
        )
    return image, mask


def write_pair(output_dir: Path, item_id: str, image: np.ndarray, mask: np.ndarray) -> dict[str, str]:
    """Write ``images/<id>.png`` and ``masks/<id>.png`` under ``output_dir``; return their relative paths."""
    image_rel, label_rel = f"images/{item_id}.png", f"masks/{item_id}.png"
    write_png(output_dir / image_rel, image)
    write_mask_png(output_dir / label_rel, mask)
    return {"image": image_rel, "label": label_rel}


def convert_pair(
    *,
    log: SkipLog,
    output_dir: Path,
    item_id: str,
    image_path: Path,
    mask_paths: Sequence[Path],
    classes: Sequence[str],
    class_name: str,
    source: str,
    group: str | None = None,
    fold: int | None = None,
    mask_hint: str = "",
    **extra: Any,
) -> dict[str, Any] | None:
    """Load, validate and write one image/mask pair; return its datalist item, or None when it was skipped.

    ``extra`` keys (e.g. ``device``) are copied into the item. ``fold`` (0-based) is set only when given.
    """
    try:
        image, mask = load_pair(image_path, mask_paths, class_name, mask_hint=mask_hint)
    except DataError as e:
        log.skip(e)
        return None
    item: dict[str, Any] = {"id": item_id, **write_pair(output_dir, item_id, image, mask)}
    item.update(cls=list(classes).index(class_name), group=group, source=source, original=str(image_path))
    if fold is not None:
        item["fold"] = int(fold)
    item.update(extra)
    return item


# -------------------------------------------------------------------------------------------------------- tables
def _column_key(name: Any) -> str:
    return re.sub(r"[\s_\-]+", "", str(name)).lower()


def read_table(path: Path, columns: Mapping[str, Iterable[str]], optional: Mapping[str, Iterable[str]] = ()) -> Any:
    """Read a CSV or spreadsheet (``.xlsx``/``.xls``) as strings, with columns renamed to canonical names.

    Args:
        path: the table.
        columns: canonical name -> accepted header names (compared ignoring case, spaces, ``_`` and ``-``);
            all are required.
        optional: like ``columns``, but missing ones are left out.

    Returns:
        a ``pandas.DataFrame`` of stripped strings (empty cells are ``""``) with the canonical column names.

    Raises:
        DataError: the file is missing or unreadable, or lacks required columns (all missing ones are named).
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "label table not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            raw = path.read_bytes()
            try:
                text, encoding = raw.decode("utf-8-sig"), "utf-8-sig"
            except UnicodeDecodeError:
                text, encoding = raw.decode("latin-1"), "latin-1"
            try:  # the header line tells the delimiter (spreadsheets in some locales save with ";")
                sep = csv.Sniffer().sniff(text.split("\n", 1)[0], delimiters=",;\t|").delimiter
            except csv.Error:
                sep = ","
            table = pd.read_csv(path, dtype=str, keep_default_na=False, sep=sep, encoding=encoding)
        elif suffix in (".xlsx", ".xls"):
            table = pd.read_excel(path, dtype=str, keep_default_na=False)
        else:
            raise DataError(path, f"unsupported label table type {suffix!r}: use .csv, .xlsx or .xls")
    except DataError:
        raise
    except ImportError as e:
        raise DataError(path, f"cannot read this spreadsheet type ({e}); save it as .csv or .xlsx") from None
    except Exception as e:  # pandas raises many types for malformed files
        raise DataError(path, f"unreadable label table ({type(e).__name__}: {e})") from None
    by_key: dict[str, str] = {}
    for col in table.columns:
        by_key.setdefault(_column_key(col), col)
    rename: dict[str, str] = {}
    missing = []
    for required, spec in ((True, columns), (False, dict(optional))):
        for canonical, aliases in spec.items():
            hit = next((by_key[_column_key(a)] for a in [canonical, *aliases] if _column_key(a) in by_key), None)
            if hit is not None:
                rename[hit] = canonical
            elif required:
                names = list(dict.fromkeys([canonical, *aliases]))
                missing.append(names[0] if len(names) == 1 else f"{names[0]} (or {', '.join(names[1:])})")
    if missing:
        found = ", ".join(str(c) for c in table.columns) or "none"
        raise DataError(path, f"missing column(s): {'; '.join(missing)}. Columns found: {found}")
    table = table[list(rename)].rename(columns=rename)
    return table.apply(lambda col: col.map(lambda v: str(v).strip()))


def parse_class(value: str, classes: Sequence[str], path: Path, where: str, column: str) -> str:
    """The class named by a table cell (case-insensitive), or a ``DataError`` naming the table and the row."""
    name = str(value).strip().lower()
    if name not in classes:
        shown = repr(value) if str(value).strip() else "an empty cell"
        raise DataError(path, f"{where}: unknown class {shown} in column {column!r}; expected one of "
                              f"{', '.join(classes)}")
    return name


def name_key(name: str) -> str:
    """Key for matching an image name from a table with a file: case-insensitive, image extension optional, and
    numbers compared by value (a spreadsheet turns ``000012`` into ``12``)."""
    text = str(name).strip()
    if Path(text).suffix.lower() in IMAGE_EXTENSIONS:
        text = text[: -len(Path(text).suffix)]
    text = text.lower()
    if re.fullmatch(r"\d+(\.0+)?", text):
        text = str(int(float(text)))
    return text
