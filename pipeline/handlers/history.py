"""``TrainingHistory``: one row per epoch (train loss, learning rate, validation metrics) and learning curves."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from os import PathLike
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import ignite.distributed as idist
from ignite.engine import Engine, Events
from monai.handlers import from_engine

from pipeline import plots
from pipeline.atomic import write_csv_atomic

__all__ = ["TrainingHistory"]

logger = logging.getLogger(__name__)


def _as_float(x: Any) -> float | None:
    """A scalar metric as a float; ``None`` for anything that is not one number (dicts, vectors, strings)."""
    if isinstance(x, torch.Tensor):
        return float(x.detach().reshape(-1)[0]) if x.numel() == 1 else None
    if isinstance(x, bool):
        return float(x)
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


class TrainingHistory:
    """Records the training history of a trainer and redraws its learning curves after every epoch.

    On each trainer iteration the loss is read from ``engine.state.output`` (with ``from_engine([loss_key],
    first=True)``, as MONAI's ``StatsHandler`` does: after decollation every per-image dict carries the batch loss);
    on each epoch a row ``{epoch, train_loss, lr, epoch_seconds, <validator metrics>}`` is added to ``rows``
    (``epoch_seconds``: Ignite's time of the epoch's iterations; ``val_seconds``: the validation's), ``history.csv``
    is rewritten and ``learning_curves.png`` redrawn (loss on the left axis, validation metrics in [0, 1] on the
    right, learning rate below; epochs without validation leave gaps).

    The validator metrics are those of ``validator.state.metrics`` when the validator ran during this trainer epoch
    (e.g. MONAI's ``ValidationHandler`` at ``interval``). Whether this handler is attached before or after the
    ``ValidationHandler``, the row ends up with that epoch's validation: the handler also listens to the validator's
    ``COMPLETED`` event and fills in the row of the trainer's current epoch.

    When training resumes (the trainer starts past epoch 1) and ``history.csv`` exists, its earlier rows are kept.

    Args:
        output_dir: folder of ``history.csv`` and ``learning_curves.png`` (created).
        validator: the evaluator run during training, or ``None``.
        loss_key: key of the loss in the trainer output.
        optimizer: optimizer whose learning rate (first parameter group) is recorded, or ``None``.
        output_transform: trainer output -> loss; default ``from_engine([loss_key], first=True)``.
        plot: redraw the PNG after each epoch.
    """

    def __init__(
        self,
        output_dir: str | PathLike,
        validator: Engine | None = None,
        loss_key: str = "loss",
        optimizer: torch.optim.Optimizer | None = None,
        output_transform: Callable[[Any], Any] | None = None,
        plot: bool = True,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.validator, self.loss_key, self.optimizer, self.plot = validator, loss_key, optimizer, plot
        self.output_transform = output_transform or from_engine([loss_key], first=True)
        self.rows: list[dict[str, Any]] = []
        self._val: dict[int, dict[str, float]] = {}  # trainer epoch -> validator metrics
        self._trainer: Engine | None = None
        self._loss_sum, self._loss_n = 0.0, 0

    @property
    def csv_path(self) -> Path:
        return self.output_dir / "history.csv"

    @property
    def png_path(self) -> Path:
        return self.output_dir / "learning_curves.png"

    def attach(self, engine: Engine) -> None:
        """Attach to the trainer (and listen to the validator's completion, when there is one)."""
        self._trainer = engine
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        if self.validator is not None:
            self.validator.add_event_handler(Events.COMPLETED, self._validation_completed)

    def _epoch_started(self, engine: Engine) -> None:
        self._loss_sum, self._loss_n = 0.0, 0

    def _iteration_completed(self, engine: Engine) -> None:
        loss = self.output_transform(engine.state.output)
        if isinstance(loss, (tuple, list)):
            loss = loss[0] if loss else None
        value = _as_float(loss) if loss is not None else None
        if value is not None and math.isfinite(value):
            self._loss_sum += value
            self._loss_n += 1

    def _validation_completed(self, validator: Engine) -> None:
        if self._trainer is None:
            return
        epoch = int(self._trainer.state.epoch)
        metrics = {k: v for k, v in ((k, _as_float(v)) for k, v in validator.state.metrics.items()) if v is not None}
        # the validation's own duration (a time budget pays for it too)
        seconds = validator.state.times.get("COMPLETED") or validator.state.times.get("EPOCH_COMPLETED")
        if seconds is not None:
            metrics["val_seconds"] = float(seconds)
        self._val[epoch] = metrics
        row = next((r for r in self.rows if r["epoch"] == epoch), None)
        if row is not None:  # the trainer's row of this epoch already exists: fill in its validation
            row.update(self._val_columns(metrics))
            self._save()

    def _val_columns(self, metrics: dict[str, float]) -> dict[str, float]:
        reserved = {"epoch", "train_loss", "lr", "epoch_seconds"}
        return {(f"val_{k}" if k in reserved else k): v for k, v in metrics.items()}

    def _epoch_completed(self, engine: Engine) -> None:
        epoch = int(engine.state.epoch)
        if not self.rows and epoch > 1 and self.csv_path.exists():  # resumed training: keep the earlier epochs
            try:
                previous = pd.read_csv(self.csv_path)
                self.rows = [r for r in previous.to_dict("records") if r.get("epoch", epoch) < epoch]
            except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as e:
                logger.warning("TrainingHistory: could not read %s (%s), starting a new history", self.csv_path, e)
        self.rows = [r for r in self.rows if r["epoch"] != epoch]
        row: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": self._loss_sum / self._loss_n if self._loss_n else float("nan"),
            "lr": float(self.optimizer.param_groups[0]["lr"]) if self.optimizer is not None else float("nan"),
            # Ignite's duration of the epoch's iterations (set before EPOCH_COMPLETED fires; validation excluded)
            "epoch_seconds": float(engine.state.times.get("EPOCH_COMPLETED") or float("nan")),
        }
        row.update(self._val_columns(self._val.get(epoch, {})))
        self.rows.append(row)
        # the epoch's mean loss becomes a trainer metric, so epoch-level loggers (MLflow, stats) record it
        engine.state.metrics["train_loss_epoch"] = row["train_loss"]
        self._save()

    def _save(self) -> None:
        if idist.get_rank() != 0:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        df = pd.DataFrame(self.rows)
        write_csv_atomic(self.csv_path, df)  # a kill mid-write keeps the previous epochs' table
        if self.plot:
            try:
                plots.plot_learning_curves(df, self.png_path)
            except Exception as e:  # a figure must never stop a training run
                logger.warning("TrainingHistory: could not draw %s: %s", self.png_path, e)
