"""Test-only pieces plugged into the bundles by the reliability tests (through an extra config file or overrides)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from pipeline.losses import MultiTaskLoss


class PauseOnce:
    """At ``iteration`` (1-based, within the epoch) of ``epoch``, write ``marker`` and sleep, so that a test can kill
    the process in the middle of that epoch; does nothing when ``marker`` already exists (the restarted run)."""

    def __init__(self, epoch: int, iteration: int, marker: str, seconds: float = 300.0) -> None:
        self.epoch, self.iteration, self.marker, self.seconds = epoch, iteration, Path(marker), seconds

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        state = engine.state
        if state.epoch != self.epoch or (state.iteration - 1) % state.epoch_length + 1 != self.iteration:
            return
        if self.marker.exists():
            return
        self.marker.write_text(str(os.getpid()))
        time.sleep(self.seconds)


class NanAtCallLoss(MultiTaskLoss):
    """The bundle's ``MultiTaskLoss`` whose ``nan_at_call``-th call returns NaN (as a diverging run would)."""

    def __init__(self, *args, nan_at_call: int = 1, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.nan_at_call, self.calls = int(nan_at_call), 0

    def forward(self, pred, target) -> torch.Tensor:
        self.calls += 1
        loss = super().forward(pred, target)
        return loss * float("nan") if self.calls == self.nan_at_call else loss
