"""Converter for UDIAT Dataset B (Yap et al., IEEE JBHI 2018) in its original layout.

``original/<name>.png`` (images), ``GT/<name>.png`` (lesion masks, same name) and a label table (CSV or spreadsheet)
with a ``Type`` column (benign/malignant, any case) and a column naming the image (``Image``, ``Name``, ``ID``,
``Filename``...; with or without extension; a spreadsheet that turned ``000012`` into ``12`` still matches). No
patient ids: ``group`` is None and ``prepare`` fills it from duplicate clusters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.data.datalist import PreparedDataset, SkipLog
from pipeline.data.io import DataError
from pipeline.data.sources.common import (
    TABLE_EXTENSIONS,
    IdMaker,
    check_not_empty,
    convert_pair,
    find_child,
    list_images,
    name_key,
    parse_class,
    read_table,
)
from pipeline.progress import progress

__all__ = ["CLASSES", "LICENSE", "CITATION", "NAME_COLUMNS", "find_labels", "convert"]

CLASSES = ["benign", "malignant"]
NAME_COLUMNS = ("Image", "Name", "ID", "Filename", "File", "File name", "Image name", "Image ID")

LICENSE = (
    "UDIAT Dataset B is distributed by its authors for research use on request (Universitat de Girona / UDIAT "
    "Diagnostic Centre, Parc Tauli Corporation, Sabadell); see the terms you accepted when obtaining it. "
    "It is not redistributable with this project."
)
CITATION = (
    "Yap MH, Pons G, Marti J, Ganau S, Sentis M, Zwiggelaar R, Davison AK, Marti R. Automated Breast Ultrasound "
    "Lesions Detection Using Convolutional Neural Networks. IEEE Journal of Biomedical and Health Informatics. "
    "2018;22(4):1218-1226. doi:10.1109/JBHI.2017.2731873"
)
DESCRIPTION = (
    "UDIAT Dataset B: breast ultrasound images (benign/malignant) with lesion masks, from the UDIAT Diagnostic "
    "Centre of the Parc Tauli Corporation, Sabadell (Spain). No patient ids: groups come from duplicate clusters."
)


def find_labels(input_dir: Path) -> Path:
    """The single ``.csv``/``.xlsx``/``.xls`` file directly in ``input_dir``.

    Raises:
        DataError: none or several found (pass ``labels=`` to choose).
    """
    found = sorted(p for p in Path(input_dir).iterdir()
                   if p.is_file() and not p.name.startswith((".", "~$")) and p.suffix.lower() in TABLE_EXTENSIONS)
    if not found:
        raise DataError(input_dir, "no label table found: put the CSV/XLSX with the 'Type' column in the input "
                                   "folder or pass labels=<file> (--labels)")
    if len(found) > 1:
        raise DataError(input_dir, f"several label tables found ({', '.join(p.name for p in found)}): pass "
                                   "labels=<file> (--labels) to choose one")
    return found[0]


def _index(folder: Path, log: SkipLog) -> dict[str, Path]:
    """name key -> image file; files whose keys clash are skipped."""
    groups: dict[str, list[Path]] = {}
    for path in list_images(folder):
        groups.setdefault(name_key(path.name), []).append(path)
    index = {}
    for key, paths in groups.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            for p in paths:
                log.skip(DataError(p, f"several files in {folder.name}/ have the same name ({names}): cannot tell "
                                      "which one is meant; rename all but one"))
        else:
            index[key] = paths[0]
    return index


def convert(
    input_dir: Path, output_dir: Path, log: SkipLog, labels: str | Path | None = None, **options: Any
) -> PreparedDataset:
    """Convert UDIAT Dataset B into ``output_dir`` (``images/<id>.png``, ``masks/<id>.png``); ids are the names.

    Args:
        input_dir: the folder holding ``original/`` and ``GT/`` (and, by default, the label table).
        output_dir: where the normalised copies go.
        log: records skipped inputs (raises at the first in strict mode).
        labels: the CSV/XLSX/XLS label table; default: the single one found in ``input_dir``.

    Raises:
        DataError: the input folder is empty, ``original/`` is missing or empty, the label table is missing,
            ambiguous, unreadable, or lacks the name or ``Type`` column.
    """
    if options:
        raise ValueError(f"udiat: unknown option(s) {', '.join(sorted(options))}; accepted: labels")
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    check_not_empty(input_dir)
    images_dir = find_child(input_dir, "original", want_dir=True)
    masks_dir = find_child(input_dir, "GT", want_dir=True)
    if images_dir is None:
        raise DataError(input_dir / "original", "image folder not found: UDIAT Dataset B holds original/ and GT/")
    labels_path = Path(labels) if labels is not None else find_labels(input_dir)
    table = read_table(labels_path, {"Image": NAME_COLUMNS[1:], "Type": ("class", "pathology", "label")})

    images = _index(images_dir, log)
    masks = _index(masks_dir, log) if masks_dir is not None else {}
    if not images:
        raise DataError(images_dir, "no images found: nothing usable to convert")

    make_id = IdMaker()
    items: list[dict[str, Any]] = []
    listed: set[str] = set()
    records = table.to_dict("records")
    for row, record in enumerate(progress(records, "prepare udiat"), start=2):
        try:
            key, class_name = _row(record, row, listed, images, labels_path, images_dir)
        except DataError as e:
            log.skip(e)
            continue
        image_path = images[key]
        item = convert_pair(
            log=log,
            output_dir=output_dir,
            item_id=make_id(image_path.stem),
            image_path=image_path,
            mask_paths=[masks[key]] if key in masks else [],
            classes=CLASSES,
            class_name=class_name,
            source="udiat",
            group=None,
            mask_hint=f"{masks_dir.name if masks_dir else 'GT'}/{image_path.name}",
        )
        if item is not None:
            items.append(item)

    _skip_unlisted(images, masks, listed, labels_path, images_dir, log)
    return PreparedDataset(
        name="udiat",
        modality="US",
        classes=list(CLASSES),
        items=items,
        skipped=log,
        description=DESCRIPTION,
        license=LICENSE,
        citation=CITATION,
        extra={"labels": labels_path.name},
    )


def _row(record: dict[str, str], row: int, listed: set[str], images: dict[str, Path], labels_path: Path,
         images_dir: Path) -> tuple[str, str]:
    """The name key and class of one label-table row (the key is added to ``listed``).

    Raises:
        DataError: an empty or repeated name, an unknown class, or no image of that name.
    """
    name = record["Image"]
    key = name_key(name)
    where = f"row {row} ({name})" if name else f"row {row}"
    if not name:
        raise DataError(labels_path, f"row {row}: empty image name in column 'Image'")
    if key in listed:
        raise DataError(labels_path, f"{where}: image listed twice; the first row is used")
    listed.add(key)
    class_name = parse_class(record["Type"], CLASSES, labels_path, where, "Type")
    if key not in images:
        raise DataError(labels_path, f"{where}: image not found in {images_dir.name}/")
    return key, class_name


def _skip_unlisted(images: dict[str, Path], masks: dict[str, Path], listed: set[str], labels_path: Path,
                   images_dir: Path, log: SkipLog) -> None:
    """Log the images without a row in the label table and the masks without an image."""
    for key, path in images.items():
        if key not in listed:
            log.skip(DataError(path, f"image has no row in the label table {labels_path.name}: its class is unknown"))
    for key, path in masks.items():
        if key not in images:
            log.skip(DataError(path, f"orphan mask: no image of that name in {images_dir.name}/"))
