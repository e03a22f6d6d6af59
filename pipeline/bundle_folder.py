"""What makes a folder a complete exported bundle, checked without torch or MONAI, so that ``bmtl predict`` and
``bmtl log-model`` answer a wrong ``--bundle`` at once."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.data.io import DataError

__all__ = ["EXPORT_REPORT", "exported_bundle_root"]

EXPORT_REPORT = "export_report.json"  # in models/, written last by `bmtl export`: the completion marker of an export


def exported_bundle_root(bundle: str | os.PathLike) -> Path:
    """The resolved folder of a complete exported bundle.

    Raises:
        FileNotFoundError: not an exported bundle (no ``configs/deploy.yaml``).
        pipeline.data.io.DataError: an incomplete one (no ``models/export_report.json``).
    """
    root = Path(bundle).resolve()
    if not (root / "configs" / "deploy.yaml").is_file():
        raise FileNotFoundError(f"{root} is not an exported bundle (configs/deploy.yaml not found): make one "
                                "with `bmtl export --bundle SOURCE_BUNDLE --run RUN_DIR --output DIR`")
    if not (root / "models" / EXPORT_REPORT).is_file():
        # without it the folder is a partial copy or an interrupted export
        raise DataError(root, f"incomplete exported bundle: models/{EXPORT_REPORT}, which `bmtl export` writes "
                              "last, is missing (an interrupted export or a partial copy); re-export it with `bmtl "
                              f"export --bundle SOURCE_BUNDLE --run RUN_DIR --output {root} --overwrite`")
    return root
