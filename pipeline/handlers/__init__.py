"""Ignite handlers that MONAI / Ignite do not already have: evaluation report and training history."""

from __future__ import annotations

from pipeline.handlers.history import TrainingHistory
from pipeline.handlers.report import EvaluationReport

__all__ = ["EvaluationReport", "TrainingHistory"]
