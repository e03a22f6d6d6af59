"""Pieces that let MONAI's stock ``SupervisedTrainer`` / ``SupervisedEvaluator`` run two-head networks."""

from __future__ import annotations

from pipeline.engines.autocast import AutocastInferer, cpu_has_fast_bf16
from pipeline.engines.circle import CircleTraining, circle_training
from pipeline.engines.inferer import MultiTaskInferer
from pipeline.engines.prepare_batch import MultiTaskPrepareBatch
from pipeline.engines.resume import resume_checkpoint
from pipeline.transforms.dictionary import RefinePredictiond   # its home; kept here for the configs that name it

__all__ = [
    "AutocastInferer",
    "CircleTraining",
    "MultiTaskInferer",
    "MultiTaskPrepareBatch",
    "RefinePredictiond",
    "circle_training",
    "cpu_has_fast_bf16",
    "resume_checkpoint",
]
