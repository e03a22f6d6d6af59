"""Converter for BUSI (Breast Ultrasound Images Dataset, Al-Dhabyani et al. 2020) in its original layout.

``Dataset_BUSI_with_GT/{benign,malignant,normal}/<class> (N).png`` with ``<class> (N)_mask.png`` beside each image,
and for some images more masks ``<class> (N)_mask_1.png``, ``_mask_2.png``... (several lesions), which are merged by
union. Masks come as 1-bit, 8-bit 0/255 or RGBA; images are RGB with grey content and become one channel. The input
may be ``Dataset_BUSI_with_GT`` itself or the folder that contains it. BUSI has no patient ids (``group`` is None;
``prepare`` groups its known exact duplicates by duplicate cluster).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.data.datalist import PreparedDataset, SkipLog
from pipeline.data.sources.common import KNOWN_CLASSES, check_not_empty, find_child
from pipeline.data.sources.folder import convert_class_folders

__all__ = ["CLASSES", "LICENSE", "CITATION", "find_root", "convert"]

CLASSES = list(KNOWN_CLASSES)  # ["normal", "benign", "malignant"]
RELEASE_FOLDER = "Dataset_BUSI_with_GT"

LICENSE = (
    "CC0 1.0 Universal (public domain dedication), as stated on the public release of the dataset "
    "(https://creativecommons.org/publicdomain/zero/1.0/). Cite the data article when using it."
)
CITATION = (
    "Al-Dhabyani W, Gomaa M, Khaled H, Fahmy A. Dataset of breast ultrasound images. "
    "Data in Brief. 2020;28:104863. doi:10.1016/j.dib.2019.104863"
)
DESCRIPTION = (
    "BUSI: 780 breast ultrasound images of 600 women (25-75 years, collected 2018 at Baheya Hospital, Cairo) in "
    "three classes (normal, benign, malignant) with lesion masks; several lesions per image are merged into one mask. "
    "No patient ids are released and the set holds exact duplicates, some across classes: groups come from "
    "duplicate clusters."
)


def find_root(input_dir: Path) -> Path:
    """``input_dir`` itself, or its ``Dataset_BUSI_with_GT`` sub-folder when it is the parent of the release."""
    input_dir = Path(input_dir)
    has_class_folder = any(find_child(input_dir, c, want_dir=True) for c in CLASSES)
    inner = find_child(input_dir, RELEASE_FOLDER, want_dir=True)
    return inner if inner is not None and not has_class_folder else input_dir


def convert(input_dir: Path, output_dir: Path, log: SkipLog, **options: Any) -> PreparedDataset:
    """Convert a BUSI release into ``output_dir`` (``images/<id>.png``, ``masks/<id>.png``).

    Ids come from the file names (``benign (12).png`` -> ``benign_12``). Classes are always
    ``["normal", "benign", "malignant"]``.

    Raises:
        DataError: the input folder is empty or holds no images in class folders.
    """
    if options:
        raise ValueError(f"busi: unknown option(s) {', '.join(sorted(options))}; BUSI takes none")
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    check_not_empty(input_dir)
    root = find_root(input_dir)
    check_not_empty(root)
    items = convert_class_folders(root, output_dir, log, CLASSES, source="busi")
    return PreparedDataset(
        name="busi",
        modality="US",
        classes=list(CLASSES),
        items=items,
        skipped=log,
        description=DESCRIPTION,
        license=LICENSE,
        citation=CITATION,
    )
