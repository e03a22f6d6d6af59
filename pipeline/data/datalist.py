"""The datalist contract (MONAI decathlon style) and the record of skipped inputs.

A prepared dataset folder holds ``datalist.json`` (the items, with folds), ``dataset.json`` (name, modality, classes,
counts, license and citation) and ``skipped.csv`` (one row per input that was left out, with the reason). Paths
inside the datalist are relative to its folder, as ``monai.data.load_decathlon_datalist`` expects.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.atomic import write_json_atomic, write_rows_atomic
from pipeline.data.io import DataError, display_path

__all__ = [
    "ITEM_KEYS",
    "MODALITIES",
    "SkipLog",
    "PreparedDataset",
    "validate_datalist",
    "load_datalist",
    "write_prepared",
    "summarize",
    "format_summary",
    "split_items",
    "match_classes",
    "keep_classes",
    "require_path",
    "SPLITS",
]

ITEM_KEYS = ("image", "label", "cls", "group", "fold", "source")
MODALITIES = ("US", "MR")
SKIPPED_COLUMNS = ("path", "problem")


class SkipLog:
    """Collects inputs left out during preparation; in strict mode the first problem raises instead.

    Args:
        strict: raise the ``DataError`` at the first problem instead of recording it.
    """

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.rows: list[dict[str, str]] = []

    def skip(self, error: DataError) -> None:
        """Record ``error`` (or raise it in strict mode)."""
        if self.strict:
            raise error
        self.rows.append({"path": display_path(error.path), "problem": error.problem})

    def __len__(self) -> int:
        return len(self.rows)

    def write_csv(self, path: str | os.PathLike) -> Path:
        return write_rows_atomic(path, SKIPPED_COLUMNS, self.rows)


@dataclass
class PreparedDataset:
    """What a source converter returns: items written under ``output_dir`` plus the dataset's description.

    ``items`` follow the datalist contract except ``fold``, which ``prepare`` assigns when a converter leaves it out
    (a converter keeps official folds by setting it). Image and label paths are absolute or relative to the output
    folder; ``write_prepared`` stores them relative to it.

    Every source builds one with the same keyword call from its own module constants (name, classes, licence,
    citation): the repetition across ``sources/`` is the point, each source stating its own metadata in one place.
    """

    name: str
    modality: str
    classes: list[str]
    items: list[dict[str, Any]]
    skipped: SkipLog
    description: str = ""
    license: str = ""
    citation: str = ""
    test: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def _check_item(item: Any, where: str, n_classes: int, need_fold: bool) -> None:
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected an object, got {type(item).__name__}")
    required = ITEM_KEYS if need_fold else tuple(k for k in ITEM_KEYS if k != "fold")
    missing = [k for k in required if k not in item]
    if missing:
        raise ValueError(f"{where}: missing key(s) {', '.join(missing)} (required: {', '.join(required)})")
    if not isinstance(item["cls"], int) or not 0 <= item["cls"] < n_classes:
        raise ValueError(f"{where}: 'cls' must be an integer class index in 0..{n_classes - 1}, got {item['cls']!r}")
    if need_fold and (not isinstance(item["fold"], int) or item["fold"] < 0):
        raise ValueError(f"{where}: 'fold' must be a non-negative integer, got {item['fold']!r}")
    if not isinstance(item["image"], str) or not item["image"]:
        raise ValueError(f"{where}: 'image' must be a non-empty path string")


def validate_datalist(datalist: Any, source: str = "datalist") -> dict[str, Any]:
    """Check a datalist dict against the contract and return it.

    Raises:
        ValueError: naming ``source``, the item and the key that is wrong.
    """
    if not isinstance(datalist, dict):
        raise ValueError(f"{source}: a datalist is a JSON object, got {type(datalist).__name__}")
    for key in ("name", "modality", "classes", "training"):
        if key not in datalist:
            raise ValueError(f"{source}: missing top-level key {key!r}")
    if datalist["modality"] not in MODALITIES:
        raise ValueError(f"{source}: 'modality' must be one of {MODALITIES}, got {datalist['modality']!r}")
    classes = datalist["classes"]
    if not isinstance(classes, list) or len(classes) not in (2, 3) or len(set(classes)) != len(classes):
        raise ValueError(f"{source}: 'classes' must be a list of 2 or 3 distinct names, got {classes!r}")
    for section in ("training", "test"):
        items = datalist.get(section, [])
        if not isinstance(items, list):
            raise ValueError(f"{source}: {section!r} must be a list")
        for i, item in enumerate(items):
            _check_item(item, f"{source}: {section}[{i}]", len(classes), need_fold=section == "training")
    return datalist


def load_datalist(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a ``datalist.json``.

    Raises:
        DataError: the file is missing, not JSON, or breaks the contract (message names the key).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "datalist file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"not valid JSON ({e})") from None
    try:
        return validate_datalist(data, source=str(path))
    except ValueError as e:
        raise DataError(path, str(e).removeprefix(f"{path}: ")) from None


def _relative(path: str, root: Path) -> str:
    p = Path(path)
    if p.is_absolute():
        try:
            return p.relative_to(root.resolve()).as_posix()
        except ValueError:
            return str(p)
    return p.as_posix()


def write_prepared(prepared: PreparedDataset, output_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``datalist.json``, ``dataset.json`` and ``skipped.csv`` into ``output_dir``. Returns their paths.

    Raises:
        ValueError: the items break the contract (e.g. no fold assigned).
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = out.resolve()

    def rel(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        fixed = []
        for item in items:
            item = dict(item)
            for key in ("image", "label"):
                if item.get(key):
                    item[key] = _relative(str(item[key]), root)
            fixed.append(item)
        return fixed

    datalist = {
        "name": prepared.name,
        "modality": prepared.modality,
        "classes": list(prepared.classes),
        "training": rel(prepared.items),
        "test": rel(prepared.test),
    }
    validate_datalist(datalist, source=prepared.name)
    paths = {"datalist": out / "datalist.json", "dataset": out / "dataset.json", "skipped": out / "skipped.csv"}
    # a kill mid-prepare leaves the previous datalist (or none), never a truncated one
    write_json_atomic(paths["datalist"], datalist, default=None)
    summary = summarize(datalist, n_skipped=len(prepared.skipped))
    dataset = {
        "name": prepared.name,
        "description": prepared.description,
        "modality": prepared.modality,
        "classes": list(prepared.classes),
        "counts": summary,
        "license": prepared.license,
        "citation": prepared.citation,
        **prepared.extra,
    }
    write_json_atomic(paths["dataset"], dataset, default=None)
    prepared.skipped.write_csv(paths["skipped"])
    return paths


def summarize(datalist: dict[str, Any], n_skipped: int = 0) -> dict[str, Any]:
    """Counts of a datalist: items, items per class, groups, items per fold, test items, skipped inputs."""
    items = datalist["training"]
    classes = datalist["classes"]
    per_class = Counter(classes[item["cls"]] for item in items)
    per_fold = Counter(item["fold"] for item in items)
    return {
        "items": len(items),
        "per_class": {c: per_class.get(c, 0) for c in classes},
        "groups": len({str(item["group"]) for item in items}),
        "per_fold": {str(k): per_fold[k] for k in sorted(per_fold)},
        "test_items": len(datalist.get("test", [])),
        "skipped": n_skipped,
    }


def format_summary(rows: dict[str, dict[str, Any]]) -> str:
    """A plain-text table, one row per dataset, from ``{dataset name: summarize(...)}``."""
    classes = sorted({c for s in rows.values() for c in s["per_class"]})
    folds = sorted({f for s in rows.values() for f in s["per_fold"]}, key=int)
    header = ["dataset", "items", *classes, "groups", *[f"fold {f}" for f in folds], "test", "skipped"]
    table = [header]
    for name, s in rows.items():
        table.append(
            [
                name,
                str(s["items"]),
                *[str(s["per_class"].get(c, "-")) for c in classes],
                str(s["groups"]),
                *[str(s["per_fold"].get(f, 0)) for f in folds],
                str(s["test_items"]),
                str(s["skipped"]),
            ]
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)) for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


SPLITS = ("train", "val", "test", "all")


def split_items(datalist: str | os.PathLike, fold: int | str | None = 0, split: str = "train"
                ) -> list[dict[str, Any]]:
    """Items of one split of a datalist file, with absolute image and label paths.

    Args:
        datalist: path of a ``datalist.json``.
        fold: the validation fold; ``None`` or ``"all"`` with ``split="train"`` trains on every fold (no
            validation).
        split: ``"train"`` (every fold but ``fold``), ``"val"`` (fold ``fold``), ``"test"`` (the ``test`` section) or
            ``"all"`` (training and test items).

    Raises:
        DataError: the datalist is missing or invalid.
        ValueError: unknown ``split``, ``fold`` out of range, or an empty split (messages name the argument).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = Path(datalist)
    if fold == "all":
        if split == "val":
            raise ValueError("fold 'all' has no validation split: the run trained on every fold (evaluate the test "
                             "split, or another datalist)")
        fold = None
    data = load_datalist(path)
    folds = sorted({item["fold"] for item in data["training"]})
    if fold is not None and split in ("train", "val") and fold not in folds:
        raise ValueError(f"fold {fold} is out of range: {path} has folds {folds}")
    if split == "train":
        items = [i for i in data["training"] if fold is None or i["fold"] != fold]
    elif split == "val":
        items = [i for i in data["training"] if i["fold"] == fold]
    elif split == "test":
        items = list(data.get("test", []))
    else:
        items = list(data["training"]) + list(data.get("test", []))
    if not items:
        raise ValueError(f"the {split!r} split of {path} (fold {fold}) is empty")
    root = path.resolve().parent
    resolved = []
    for item in items:
        item = dict(item)
        for key in ("image", "label"):
            if item.get(key):
                item[key] = str(root / item[key])
        resolved.append(item)
    return resolved


def match_classes(items: list[dict[str, Any]], item_classes: list[str], model_classes: list[str],
                  ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Items re-indexed from their datalist's class list to a model's, matched by class name.

    A benign/malignant model scored on a normal/benign/malignant datalist must never read "normal" as index 0 =
    "benign": items of a class the model does not have are left out (and counted), the others get the model's index.

    Args:
        items: datalist items (``cls`` indexes ``item_classes``).
        item_classes: the datalist's classes.
        model_classes: the model's classes (its training datalist's).

    Returns:
        the matched items (copies) and ``{class name: number of items left out}``.

    Raises:
        ValueError: no class in common (the message lists both class lists), or no item left.
    """
    item_classes, model_classes = [str(c) for c in item_classes], [str(c) for c in model_classes]
    if item_classes == model_classes:
        return items, {}
    index = {name: i for i, name in enumerate(model_classes)}
    if not set(item_classes) & set(index):
        raise ValueError(f"the datalist's classes {item_classes} and the model's {model_classes} have no class in "
                         "common: nothing can be scored")
    matched, left_out = [], Counter()
    for item in items:
        name = item_classes[item["cls"]]
        if name in index:
            matched.append({**item, "cls": index[name]})
        else:
            left_out[name] += 1
    if items and not matched:
        raise ValueError(f"none of the {len(items)} items is of the model's classes {model_classes} (they are "
                         f"{', '.join(sorted(left_out))})")
    return matched, dict(left_out)


def keep_classes(prepared: PreparedDataset, classes: list[str]) -> dict[str, int]:
    """Keep only the items of ``classes`` (``bmtl prepare --classes``), re-indexed; the class order stays the
    source's (the positive class, malignant, last).

    Returns:
        ``{class name: number of items left out}``.

    Raises:
        ValueError: a name that is not one of the source's classes, or fewer than two classes kept.
    """
    wanted = [str(c).strip() for c in classes if str(c).strip()]
    unknown = [c for c in wanted if c not in prepared.classes]
    if unknown:
        raise ValueError(f"--classes: {', '.join(unknown)} not among this dataset's classes {prepared.classes}")
    kept = [c for c in prepared.classes if c in wanted]
    if len(kept) < 2:
        raise ValueError(f"--classes must keep at least two classes, got {kept}")
    left_out: Counter = Counter()
    for section in ("items", "test"):
        matched, dropped = match_classes(getattr(prepared, section), prepared.classes, kept)
        setattr(prepared, section, matched)
        left_out.update(dropped)
    prepared.classes = kept
    return dict(left_out)


def require_path(value: str | os.PathLike | None, name: str) -> str:
    """Return ``value`` as a string, or raise a ValueError telling which config value to set when it is empty."""
    if value is None or str(value).strip() == "":
        raise ValueError(f"{name} is required: pass --{name} PATH")
    return str(value)
