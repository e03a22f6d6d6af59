"""Every transform the project adds to MONAI's, in MONAI's layout: array forms in ``array``, dictionary forms in
``dictionary`` (like ``monai.apps.pathology.transforms``)."""

from pipeline.transforms.array import GaussianGradientMagnitude, RandGlobalIntensityNonlinear
from pipeline.transforms.dictionary import (
    EXTRA_CHANNELS,
    REFINED_KEY,
    GaussianGradientMagnitudeD,
    GaussianGradientMagnitudeDict,
    GaussianGradientMagnituded,
    RandGlobalIntensityNonlineard,
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
    "RandGlobalIntensityNonlinear",
    "RandGlobalIntensityNonlineard",
    "RandSpeckleNoised",
    "RefinePredictiond",
    "ToGreyd",
    "extra_channels",
]
