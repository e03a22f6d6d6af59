"""``TimeBudget``: train for a wall-clock budget, with the learning-rate schedule following the budget.

The question a CPU user asks is "what do I get in 20 minutes", not "in 30 epochs". Neither Ignite nor MONAI has a
handler that stops on time *and* tells a step-based schedule how many steps the time will hold, hence this one.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import ignite.distributed as idist
from ignite.engine import Engine, Events

__all__ = ["TimeBudget"]

logger = logging.getLogger(__name__)


class TimeBudget:
    """Stop training before an epoch that would not fit in ``minutes``, and stretch the LR schedule to the budget.

    The clock counts everything the training run spends from the trainer's start: iterations, validation and
    checkpoints, and the time of the epochs before an interruption (kept in the checkpoint through
    ``state_dict``), so a resumed run has the budget of an uninterrupted one. After each epoch the handler predicts
    the next epoch's duration from the mean epoch so far; when it would end past the budget, training stops there,
    cleanly, after the epoch's checkpoint. ``max_epochs`` stays an upper bound.

    With a ``scheduler`` that has a ``t_total`` attribute (MONAI's ``WarmupCosineSchedule``, stepped every
    iteration), ``t_total`` is set after each epoch to the number of steps the budget is predicted to hold, so the
    cosine reaches its end when the time runs out rather than after ``max_epochs``.

    ``minutes`` of 0 (or less) switches the budget off: the handler only keeps its state.

    Args:
        minutes: the training budget in minutes; 0: no budget.
        scheduler: an optional step-based scheduler with a ``t_total`` attribute.

    Raises:
        ValueError: ``minutes`` is not a finite number.
    """

    def __init__(self, minutes: float = 0.0, scheduler: Any = None) -> None:
        minutes = float(minutes)
        if minutes != minutes or minutes in (float("inf"), float("-inf")):
            raise ValueError(f"minutes must be a finite number, got {minutes!r}")
        self.seconds = max(0.0, minutes * 60.0)
        self.scheduler = scheduler
        self.elapsed = 0.0          # seconds spent in finished epochs (this run and the runs before a resume)
        self.epochs_done = 0        # epochs counted in ``elapsed``
        self._since: float | None = None

    @property
    def enabled(self) -> bool:
        return self.seconds > 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _started(self, engine: Engine) -> None:
        if self.enabled and self.elapsed >= self.seconds:
            logger.info(f"time budget of {self.seconds / 60:.1f} min already spent ({self.elapsed / 60:.1f} min): "
                        "nothing left to train")
            engine.terminate()

    def _epoch_started(self, engine: Engine) -> None:
        self._since = time.perf_counter()

    def _epoch_completed(self, engine: Engine) -> None:
        if self._since is not None:
            spent = time.perf_counter() - self._since
            # under DDP every rank must take the same decision: the slowest rank's clock counts
            self.elapsed += float(idist.all_reduce(spent, op="MAX")) if idist.get_world_size() > 1 else spent
            self._since = None
        self.epochs_done += 1
        if not self.enabled:
            return
        per_epoch = self.elapsed / self.epochs_done
        remaining = self.seconds - self.elapsed
        steps_per_epoch = engine.state.epoch_length or 1
        if self.scheduler is not None and hasattr(self.scheduler, "t_total"):
            done = engine.state.iteration
            predicted = done + int(max(0.0, remaining) / per_epoch) * steps_per_epoch
            self.scheduler.t_total = max(done, min(predicted, engine.state.max_epochs * steps_per_epoch))
        if per_epoch > remaining:
            logger.info(f"time budget: {self.elapsed / 60:.1f} of {self.seconds / 60:.1f} min spent after epoch "
                        f"{engine.state.epoch}; the next epoch (~{per_epoch / 60:.1f} min) would not fit: stopping")
            engine.terminate()

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self.elapsed, "epochs_done": self.epochs_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.elapsed = float(state.get("elapsed", 0.0))
        self.epochs_done = int(state.get("epochs_done", 0))
