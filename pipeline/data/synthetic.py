"""Synthetic data the project makes itself, so every test and the demo are self-contained.

``make_us_dataset`` writes ultrasound-like images in the BUSI folder layout; ``make_mr_dataset`` writes MRI-like NIfTI
volumes with lesion label volumes and a ``classes.csv``. Both go through the same ``prepare`` path as real data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipeline.atomic import write_json_atomic

__all__ = ["make_us_dataset", "make_mr_dataset", "write_dicom_series", "SYNTHETIC_MARKER", "mark_synthetic",
           "read_synthetic_marker"]

# Written into every synthetic dataset folder, so that `prepare` labels the data synthetic in dataset.json, the
# datalist name and everything derived from them (model cards, reports) instead of the layout's real dataset
SYNTHETIC_MARKER = "SYNTHETIC.json"


def mark_synthetic(folder: str | os.PathLike, modality: str, n: int, seed: int, layout: str) -> Path:
    """Write ``SYNTHETIC.json`` into ``folder`` (and return its path): what made the data, in which layout."""
    unit = "images" if modality == "US" else "volumes"
    return write_json_atomic(Path(folder) / SYNTHETIC_MARKER, {
        "synthetic": True,
        "generator": f"breast-mtl `bmtl synth --modality {modality.lower()}`",
        "modality": modality,
        "n": int(n),
        "seed": int(seed),
        "layout": layout,
        "description": f"Synthetic {modality} data made by breast-mtl ({n} {unit}, seed {seed}) in the {layout} "
                       "layout: no patient data; for tests and demos only, not for any claim about real images.",
        "license": "generated data, no licence restrictions (breast-mtl is Apache-2.0)",
    })


def read_synthetic_marker(input_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The marker of a synthetic dataset given to ``prepare`` (in ``input_dir`` or the one folder inside it that a
    layout such as BUSI's nests), or None for real data."""
    folder = Path(input_dir)
    candidates = [folder / SYNTHETIC_MARKER, *sorted(folder.glob(f"*/{SYNTHETIC_MARKER}"))]
    for path in candidates:
        if path.is_file():
            try:
                marker = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(marker, dict) and marker.get("synthetic") is True:
                return marker
    return None


from pipeline.data.synthetic_dicom import write_dicom_series  # noqa: E402
from pipeline.data.synthetic_mr import make_mr_dataset  # noqa: E402
from pipeline.data.synthetic_busi import make_us_dataset  # noqa: E402
