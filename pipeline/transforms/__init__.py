"""Every transform the project adds to MONAI's, in MONAI's layout: array forms in ``array``, dictionary forms in
``dictionary`` (like ``monai.apps.pathology.transforms``)."""

from pipeline.transforms.array import GaussianGradientMagnitude
from pipeline.transforms.dictionary import (
    EXTRA_CHANNELS,
    REFINED_KEY,
    GaussianGradientMagnitudeD,
    GaussianGradientMagnitudeDict,
    GaussianGradientMagnituded,
    RandSpeckleNoised,
    RefinePredictiond,
    ToGreyd,
    extra_channels,
)

__all__ = [
    "EXTRA_CHANNELS",
    "REFINED_KEY",
    "GaussianGradientMagnitude",
    "GaussianGradientMagnitudeD",
    "GaussianGradientMagnitudeDict",
    "GaussianGradientMagnituded",
    "RandSpeckleNoised",
    "RefinePredictiond",
    "ToGreyd",
    "extra_channels",
]
