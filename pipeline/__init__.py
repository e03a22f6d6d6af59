"""Joint segmentation and classification of breast tumours on 2D ultrasound images and MRI slices, with MONAI."""

from __future__ import annotations

__version__ = "0.1.0"
