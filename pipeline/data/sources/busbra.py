"""Converter for BUS-BRA (Gomez-Flores et al., Medical Physics 2023) in its original release layout.

``Images/bus_XXXX-s.png`` (grey), ``Masks/mask_XXXX-s.png`` (1-bit), ``bus_data.csv`` (``ID``, ``Case`` = patient,
``Pathology`` = benign/malignant, ``Device``, ...) and the official ``5-fold-cv.csv`` (``ID``, ``kFold`` = 1..5),
whose folds are kept (0-based) when it is present. ``Case`` becomes the item's ``group``, ``Device`` its
``device`` (for per-scanner analysis) and ``BIRADS`` its ``birads`` (the radiologist's category as written, e.g.
``"4"``; an auxiliary training target, see the bundle's ``aux_targets``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.data.datalist import PreparedDataset, SkipLog
from pipeline.data.io import IMAGE_EXTENSIONS, DataError
from pipeline.data.sources.common import (
    IdMaker,
    check_not_empty,
    convert_pair,
    find_child,
    is_image_file,
    natural_key,
    parse_class,
    read_table,
)
from pipeline.progress import progress

__all__ = ["CLASSES", "LICENSE", "CITATION", "convert"]

CLASSES = ["benign", "malignant"]
TABLE, FOLDS, N_FOLDS = "bus_data.csv", "5-fold-cv.csv", 5

LICENSE = (
    "MIT-style dataset license (LICENSE.txt of the release), Copyright (c) 2023: permission is granted, free of "
    "charge, to use, copy, modify, merge, publish and/or distribute copies of the Dataset, provided that all documents "
    "and papers that use the Dataset cite the BUS-BRA article and that the copyright and permission notice are "
    "included in all copies or substantial portions of the Dataset. The Dataset is provided \"as is\", without "
    "warranty of any kind."
)
CITATION = (
    "Wilfrido Gomez-Flores, Maria Julia Gregorio-Calas, and Wagner Coelho de Albuquerque Pereira, \"BUS-BRA: A Breast "
    "Ultrasound Dataset for Assessing Computer-aided Diagnosis Systems\", Medical Physics, 2023."
)
DESCRIPTION = (
    "BUS-BRA: breast ultrasound images (benign/malignant, biopsy-proven) with manual lesion masks, several images per "
    "patient, acquired with four scanners; official patient-level 5-fold cross-validation partition."
)


def _is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _mask_stem(image_id: str) -> str:
    return "mask_" + image_id[4:] if image_id.lower().startswith("bus_") else f"mask_{image_id}"


def _index(folder: Path | None) -> dict[str, list[Path]]:
    """lower-case stem -> image files of ``folder``."""
    index: dict[str, list[Path]] = {}
    if folder is not None:
        for path in sorted(folder.iterdir(), key=natural_key):
            if is_image_file(path):
                index.setdefault(path.stem.lower(), []).append(path)
    return index


def _read_folds(path: Path, log: SkipLog) -> dict[str, int]:
    """ID -> 0-based fold from the official ``5-fold-cv.csv``; bad rows are skipped."""
    table = read_table(path, {"ID": ("image", "name"), "kFold": ("fold",)})
    folds: dict[str, int] = {}
    for row, (image_id, value) in enumerate(zip(table["ID"], table["kFold"]), start=2):
        try:
            k = int(float(value))
        except ValueError:
            k = -1
        if not 1 <= k <= N_FOLDS:
            log.skip(DataError(path, f"row {row} ({image_id}): kFold {value!r} is not an integer in 1..{N_FOLDS}; "
                                     "the image gets no official fold"))
            continue
        folds[image_id.lower()] = k - 1
    return folds


def _release(input_dir: Path) -> tuple[Path, Any, Path, Path | None]:
    """The label table (its path and rows), the image folder and the mask folder of a BUS-BRA release."""
    check_not_empty(input_dir)
    table_path = find_child(input_dir, TABLE, want_dir=False)
    if table_path is None:
        raise DataError(input_dir / TABLE, "label table not found: a BUS-BRA release holds bus_data.csv beside "
                                           "Images/ and Masks/")
    table = read_table(table_path, {"ID": ("image", "name"), "Case": ("patient",), "Pathology": ("class", "type")},
                       optional={"Device": ("scanner",), "BIRADS": ("bi-rads", "birads category")})
    images_dir = find_child(input_dir, "Images", want_dir=True)
    if images_dir is None:
        raise DataError(input_dir / "Images", "image folder not found: a BUS-BRA release holds Images/ and Masks/")
    return table_path, table, images_dir, find_child(input_dir, "Masks", want_dir=True)


def _check_image(images: dict[str, list[Path]], key: str, expected: Path, listed_in: str) -> None:
    """The row's image exists, once."""
    if key not in images:
        raise DataError(expected, f"image listed in {listed_in} not found")
    if len(images[key]) > 1:
        raise DataError(images[key][0], f"several images share the name stem {expected.stem!r}")


def _official_fold(folds: dict[str, int] | None, key: str, image: Path, folds_path: Path | None) -> int | None:
    """The image's official fold (None without official folds)."""
    if folds is None:
        return None
    if key not in folds:
        raise DataError(image, f"no official fold: {image.stem!r} has no valid row in {folds_path.name}")
    return folds[key]


def _skip_unlisted(images: dict[str, list[Path]], masks: dict[str, list[Path]], listed: set[str],
                   used_masks: set[str], table_name: str, log: SkipLog) -> None:
    """Images without a row (class and patient unknown) and masks without an image are listed as skipped."""
    for key, paths in images.items():
        if key not in listed:
            for path in paths:
                log.skip(DataError(path, f"image has no row in {table_name}: its class and patient are unknown"))
    image_mask_keys = {_mask_stem(key) for key in images}
    for key, paths in masks.items():
        if key not in used_masks and key not in image_mask_keys:
            for path in paths:
                log.skip(DataError(path, f"orphan mask: no matching image in Images/ nor row in {table_name}"))


def convert(input_dir: Path, output_dir: Path, log: SkipLog, **options: Any) -> PreparedDataset:
    """Convert a BUS-BRA release into ``output_dir`` (``images/<id>.png``, ``masks/<id>.png``); ids are the ``ID``s.

    Args:
        input_dir: the release folder (``Images/``, ``Masks/``, ``bus_data.csv``, optionally ``5-fold-cv.csv``).
        output_dir: where the normalised copies go.
        log: records skipped inputs (raises at the first in strict mode).
        options: ``official_folds`` (default True): keep the folds of ``5-fold-cv.csv`` when present; False lets
            ``prepare`` assign patient-level folds itself.

    Raises:
        DataError: the input folder is empty, ``bus_data.csv`` is missing or lacks ``ID``/``Case``/``Pathology``,
            or ``5-fold-cv.csv`` lacks ``ID``/``kFold``.
    """
    unknown = set(options) - {"official_folds"}
    if unknown:
        raise ValueError(f"busbra: unknown option(s) {', '.join(sorted(unknown))}; accepted: official_folds")
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    table_path, table, images_dir, masks_dir = _release(input_dir)
    images, masks = _index(images_dir), _index(masks_dir)

    folds: dict[str, int] | None = None
    folds_path = find_child(input_dir, FOLDS, want_dir=False)
    if folds_path is not None and options.get("official_folds", True):
        folds = _read_folds(folds_path, log)

    make_id = IdMaker()
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    used_images: set[str] = set()
    used_masks: set[str] = set()
    records = table.to_dict("records")
    for row, record in enumerate(progress(records, "prepare busbra"), start=2):
        image_id = record["ID"]
        key = Path(image_id).stem.lower() if _is_image_name(image_id) else image_id.lower()
        where = f"row {row} ({image_id})"
        try:
            if not image_id:
                raise DataError(table_path, f"row {row}: empty ID")
            if key in seen:
                raise DataError(table_path, f"{where}: ID listed twice; the first row is used")
            seen.add(key)
            used_masks.add(_mask_stem(key))
            class_name = parse_class(record["Pathology"], CLASSES, table_path, where, "Pathology")
            _check_image(images, key, images_dir / f"{image_id}.png", f"{table_path.name} {where}")
            used_images.add(key)
            mask_key = _mask_stem(key)
            mask_paths = masks.get(mask_key, [])
            fold = _official_fold(folds, key, images[key][0], folds_path)
        except DataError as e:
            log.skip(e)
            continue
        extra = {"device": record["Device"] or None} if "Device" in record else {}
        if "BIRADS" in record:
            extra["birads"] = record["BIRADS"] or None
        item = convert_pair(
            log=log,
            output_dir=output_dir,
            item_id=make_id(image_id),
            image_path=images[key][0],
            mask_paths=mask_paths[:1],
            classes=CLASSES,
            class_name=class_name,
            source="busbra",
            group=record["Case"] or None,
            fold=fold,
            mask_hint=f"{(masks_dir or input_dir / 'Masks').name}/{mask_key}.png",
            **extra,
        )
        if item is not None:
            items.append(item)

    _skip_unlisted(images, masks, used_images | seen, used_masks, table_path.name, log)
    if not images and not items:
        raise DataError(images_dir, "no images found: nothing usable to convert")

    extra_info = {"official_folds": folds_path.name} if folds is not None else {}
    return PreparedDataset(name="busbra", modality="US", classes=list(CLASSES), items=items, skipped=log,
                           description=DESCRIPTION, license=LICENSE, citation=CITATION, extra=extra_info)
