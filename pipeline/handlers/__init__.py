"""Ignite handlers that MONAI / Ignite do not already have: evaluation report, training history, and the reliability
handlers (atomic checkpoints, safe loading, per-epoch seeding, NaN guard, MLflow logging into a resumed run), the
training time budget, the operating point chosen on the validation fold, the validation loss, batch-norm
re-estimation before evaluation and Grad-CAM of an evaluation's worst cases."""

from __future__ import annotations

from pipeline.handlers.batch_norm import BN_RECALIBRATION_MODES, BatchNormRecalibration, has_batch_norm
from pipeline.handlers.budget import TimeBudget
from pipeline.handlers.explain import GRADCAM_FILE, WorstCaseGradCAM
from pipeline.handlers.checkpoint import SafeCheckpointLoader, SafeCheckpointSaver
from pipeline.handlers.guards import NanGuard, NonFiniteLossError, ResumeState, SeedEachEpoch
from pipeline.handlers.history import TrainingHistory
from pipeline.handlers.mlflow import ResumableMLFlowHandler
from pipeline.handlers.operating_point import OPERATING_POINT, OperatingPoint, read_operating_threshold
from pipeline.handlers.report import EvaluationReport
from pipeline.handlers.validation_loss import ValidationLoss

__all__ = [
    "BN_RECALIBRATION_MODES",
    "BatchNormRecalibration",
    "EvaluationReport",
    "GRADCAM_FILE",
    "NanGuard",
    "NonFiniteLossError",
    "OPERATING_POINT",
    "OperatingPoint",
    "ResumableMLFlowHandler",
    "ResumeState",
    "SafeCheckpointLoader",
    "SafeCheckpointSaver",
    "SeedEachEpoch",
    "TimeBudget",
    "TrainingHistory",
    "ValidationLoss",
    "WorstCaseGradCAM",
    "has_batch_norm",
    "read_operating_threshold",
]
