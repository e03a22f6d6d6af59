"""``pipeline.predict``: the name of ``pipeline.inference`` before it became a package.

Kept because bundles exported before the move call ``pipeline.predict.predict`` in their ``inference.yaml``; new code
imports ``pipeline.inference``.
"""

from __future__ import annotations

from pipeline.inference import (
    CSV_COLUMNS,
    MODEL_FILES,
    RUNTIMES,
    InputItem,
    PredictionResult,
    Predictor,
    discover_inputs,
    predict,
)

__all__ = ["RUNTIMES", "MODEL_FILES", "CSV_COLUMNS", "InputItem", "PredictionResult", "Predictor", "discover_inputs",
           "predict"]
