"""Pieces that let MONAI's stock ``SupervisedTrainer`` / ``SupervisedEvaluator`` run two-head networks."""

from __future__ import annotations

from pipeline.engines.inferer import MultiTaskInferer
from pipeline.engines.prepare_batch import MultiTaskPrepareBatch

__all__ = ["MultiTaskInferer", "MultiTaskPrepareBatch"]
