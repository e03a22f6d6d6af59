"""Synthetic data the project makes itself, so every test and the demo are self-contained.

``make_us_dataset`` writes ultrasound-like images in the BUSI folder layout; ``make_mr_dataset`` writes MRI-like NIfTI
volumes with lesion label volumes and a ``classes.csv``. Both go through the same ``prepare`` path as real data.
"""

from __future__ import annotations

from pipeline.data.synthetic_mr import make_mr_dataset, write_dicom_series
from pipeline.data.synthetic_us import make_us_dataset

__all__ = ["make_us_dataset", "make_mr_dataset", "write_dicom_series"]
