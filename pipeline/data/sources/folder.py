"""Converter for a generic class-folder layout: ``<input>/<class>/<name>.<ext>`` with ``<name>_mask.<ext>`` beside it.

Class folders are ``normal``, ``benign`` and ``malignant`` (any case); ``<ext>`` is any of
``.png .jpg .jpeg .bmp .tif .tiff`` and need not be the same for an image and its mask. Extra masks
``<name>_mask_1.<ext>``, ``<name>_mask_2.<ext>``... are merged with ``<name>_mask`` by union. Normal images need no
mask (an all-zero one is written). The classes are ``["benign", "malignant"]`` when there is no ``normal`` folder,
else ``["normal", "benign", "malignant"]``. No patient ids: ``group`` is None and ``prepare`` fills it from
duplicate clusters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.data.datalist import PreparedDataset, SkipLog
from pipeline.data.io import DataError
from pipeline.data.sources.common import (
    KNOWN_CLASSES,
    IdMaker,
    check_not_empty,
    convert_pair,
    pair_images_and_masks,
    safe_id,
    scan_class_folders,
)
from pipeline.progress import progress

__all__ = ["convert", "convert_class_folders"]


def _item_name(class_name: str, stem: str) -> str:
    # "benign (3)" in benign/ stays "benign_3"; "case7" in benign/ becomes "benign_case7" so that equal file names
    # in two class folders do not clash
    return stem if safe_id(stem).lower().startswith(class_name) else f"{class_name}_{stem}"


def convert_class_folders(
    root: Path, output_dir: Path, log: SkipLog, classes: list[str], source: str
) -> list[dict[str, Any]]:
    """Convert every image under the class folders of ``root`` (only the classes in ``classes`` are read).

    Raises:
        DataError: on ``root`` when no class folder holds any image.
    """
    folders = scan_class_folders(root, log, known=KNOWN_CLASSES)
    make_id = IdMaker()
    items: list[dict[str, Any]] = []
    n_images = 0
    for class_name in classes:
        if class_name not in folders:
            continue
        for image_path, mask_paths in progress(pair_images_and_masks(folders[class_name], log),
                                               f"prepare {class_name}"):
            n_images += 1
            item = convert_pair(
                log=log,
                output_dir=output_dir,
                item_id=make_id(_item_name(class_name, image_path.stem)),
                image_path=image_path,
                mask_paths=mask_paths,
                classes=classes,
                class_name=class_name,
                source=source,
                group=None,
                mask_hint=f"{image_path.stem}_mask.<ext> beside it",
            )
            if item is not None:
                items.append(item)
    if n_images == 0:
        expected = ", ".join(f"{c}/" for c in KNOWN_CLASSES)
        raise DataError(root, f"no images found: expected class folders {expected} holding images and masks "
                              f"({len(log)} input(s) skipped)")
    return items


def convert(input_dir: Path, output_dir: Path, log: SkipLog, **options: Any) -> PreparedDataset:
    """Convert ``<input>/<class>/<name>.<ext>`` (+ ``<name>_mask.<ext>``) into ``output_dir``.

    Args:
        input_dir: the folder holding the class folders.
        output_dir: receives ``images/<id>.png`` and ``masks/<id>.png``.
        log: records skipped inputs (raises at the first in strict mode).
        options: ``name`` (dataset name, default the input folder's name) and ``modality`` (``"US"`` default or
            ``"MR"``).

    Raises:
        DataError: the input folder is empty or holds no images in class folders.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    unknown = set(options) - {"name", "modality"}
    if unknown:
        raise ValueError(f"folder: unknown option(s) {', '.join(sorted(unknown))}; accepted: name, modality")
    check_not_empty(input_dir)
    has_normal = any(p.is_dir() and p.name.lower() == "normal" for p in input_dir.iterdir())
    classes = list(KNOWN_CLASSES) if has_normal else ["benign", "malignant"]
    items = convert_class_folders(input_dir, output_dir, log, classes, source="folder")
    name = options.get("name") or safe_id(input_dir.resolve().name)
    return PreparedDataset(
        name=name,
        modality=options.get("modality", "US"),
        classes=classes,
        items=items,
        skipped=log,
        description=f"Images and lesion masks from the class-folder layout of {input_dir} "
        f"({', '.join(classes)}); converted by pipeline.data.sources.folder.",
        license="",
        citation="",
    )
