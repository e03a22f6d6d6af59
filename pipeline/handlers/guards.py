"""Handlers that make a training run reproducible across interruptions and stop it cleanly on a non-finite loss.

* ``SeedEachEpoch``: re-seeds every random stream at the start of each epoch from ``(seed, epoch, rank)``, so epoch
  ``k`` draws the same shuffle, augmentations and dropout masks whether the run went straight through or was killed
  and resumed from the checkpoint of epoch ``k - 1``. (MONAI's ``set_determinism`` seeds once per process and MONAI's
  ``DataLoader`` seeds the transforms once when it is built, so without this a resumed run would replay epoch 1's
  random draws in epoch ``k``.)
* ``ResumeState``: the state that lives outside network/optimizer/scheduler/trainer (the validator's best score and
  epoch, the best-model saver's record, early stopping's counter, the AMP loss scale), as one object with
  ``state_dict``/``load_state_dict`` for the trainer checkpoint.
* ``NanGuard``: ignite's ``TerminateOnNan`` that also records where the loss went bad, with a message naming the epoch,
  the iteration, the batch's files and the last good checkpoint; ``raise_if_tripped`` turns it into an error after
  the run so that the command fails (``SafeCheckpointSaver`` does not save the NaN weights).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import TerminateOnNan
from monai.data.utils import set_rnd
from monai.handlers import from_engine
from monai.utils import set_determinism

__all__ = ["epoch_seed", "SeedEachEpoch", "ResumeState", "NanGuard", "NonFiniteLossError"]

logger = logging.getLogger(__name__)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of ``epoch`` (1-based) of a run seeded with ``seed``, on process ``rank``: a 32-bit integer mixed by
    NumPy's ``SeedSequence``, so neighbouring seeds and epochs give unrelated streams."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(rank)]).generate_state(1, dtype=np.uint32)[0])


class SeedEachEpoch:
    """Re-seed torch, NumPy, Python ``random``, the MONAI transforms of the training data and the sampler's generator
    at every ``EPOCH_STARTED``, from ``epoch_seed(seed, epoch, rank)``.

    Everything random in an epoch (the ``DataLoader`` shuffle and worker seeds are drawn from torch's global generator
    when the epoch's iterator starts, after this event) then depends only on the seed, the epoch number and the state
    restored from the checkpoint. ``DistributedSampler`` keeps its own ``set_epoch`` seeding.

    Args:
        seed: the run's seed.
        dataloader: the training data loader: its dataset's random transforms (``monai.data.utils.set_rnd``, as MONAI's
            ``DataLoader`` does once when built) and its sampler's ``generator`` (e.g. ``WeightedRandomSampler``) are
            re-seeded too.
    """

    def __init__(self, seed: int, dataloader: Any = None) -> None:
        self.seed = int(seed)
        self.dataloader = dataloader

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        seed = epoch_seed(self.seed, engine.state.epoch, idist.get_rank())
        set_determinism(seed=seed)  # torch (CPU and CUDA), numpy, random
        if self.dataloader is not None:
            set_rnd(self.dataloader.dataset, seed)
            generator = getattr(getattr(self.dataloader, "sampler", None), "generator", None)
            if isinstance(generator, torch.Generator):
                generator.manual_seed(seed)


class ResumeState:
    """What a resumed run needs besides network, optimizer, scheduler and trainer, as one entry of the trainer
    checkpoint: the validator's best metric and its epoch, the best-model saver's record
    (``SafeCheckpointSaver.state_dict``), MONAI ``EarlyStopHandler``'s counter and best score, and the AMP
    ``GradScaler``'s scale (``SupervisedTrainer.scaler``, None without amp).

    Without it, a resumed run would forget the best score of the epochs before the interruption (and overwrite
    ``model.pt`` with the first epoch it validates), restart early stopping's patience, and restart the loss scale of
    mixed precision at its initial value (different skipped steps than the uninterrupted run). Any argument may be None.
    """

    def __init__(self, evaluator: Engine | None = None, saver: Any = None, early_stopper: Any = None,
                 scaler: Any = None) -> None:
        self.evaluator, self.saver, self.early_stopper, self.scaler = evaluator, saver, early_stopper, scaler

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if self.evaluator is not None:
            state["best_metric"] = float(getattr(self.evaluator.state, "best_metric", -1))
            state["best_metric_epoch"] = int(getattr(self.evaluator.state, "best_metric_epoch", -1))
        if self.saver is not None and hasattr(self.saver, "state_dict"):
            state["saver"] = self.saver.state_dict()
        stopping = getattr(self.early_stopper, "_handler", None)
        if stopping is not None:
            best = stopping.best_score
            state["early_stopping"] = {"counter": int(stopping.counter),
                                       "best_score": None if best is None else float(best)}
        if self.scaler is not None and hasattr(self.scaler, "state_dict"):
            state["scaler"] = dict(self.scaler.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.evaluator is not None and "best_metric" in state:
            self.evaluator.state.best_metric = state["best_metric"]
            self.evaluator.state.best_metric_epoch = state["best_metric_epoch"]
        if self.saver is not None and "saver" in state:
            self.saver.load_state_dict(state["saver"])
        stopping = getattr(self.early_stopper, "_handler", None)
        if stopping is not None and "early_stopping" in state:
            stopping.counter = state["early_stopping"]["counter"]
            stopping.best_score = state["early_stopping"]["best_score"]
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


class NonFiniteLossError(RuntimeError):
    """Training stopped because the loss became NaN or infinite."""


def _batch_files(batch: Any, limit: int = 8) -> list[str]:
    items = batch if isinstance(batch, (list, tuple)) else [batch]
    files: list[str] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        image = item.get("image")
        meta = getattr(image, "meta", None) or {}
        names = meta.get("filename_or_obj", [])
        for name in names if isinstance(names, (list, tuple)) else [names]:
            if name and len(files) < limit:
                files.append(os.path.basename(str(name)))
    return files


class NanGuard(TerminateOnNan):
    """ignite's ``TerminateOnNan`` (the run terminates cleanly at the first non-finite loss) that also records where.

    On a non-finite loss it logs an error naming the epoch, the iteration (and the batch within the epoch), the images
    of the batch and the last good checkpoint, and sets ``engine.state.nonfinite`` (which ``SafeCheckpointSaver``
    honours: the NaN weights are not saved). Call ``raise_if_tripped`` after ``trainer.run()`` to fail the command.
    Under ``torch.distributed`` the processes agree on every iteration (one scalar all-reduce) and stop together.

    Args:
        output_transform: trainer output -> the values to check; default the loss, as the bundle's other handlers read
            it (``from_engine(["loss"], first=True)``).
        ckpt_dir: the run's checkpoint folder, to name the last good checkpoint in the message.
    """

    def __init__(self, output_transform: Callable | None = None, ckpt_dir: str | os.PathLike | None = None) -> None:
        super().__init__(output_transform or from_engine(["loss"], first=True))
        # TerminateOnNan adds a stream handler to its own logger at every construction; its one-line warning is
        # superseded by this class's error message, so it goes to this module's logger instead
        for handler in list(self.logger.handlers):
            self.logger.removeHandler(handler)
        self.logger = logger
        self.ckpt_dir = ckpt_dir
        self.message: str | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        already = engine.should_terminate
        super().__call__(engine)
        here = bool(engine.should_terminate and not already)
        elsewhere = False
        if idist.get_world_size() > 1:
            # with DDP every process must stop at the same iteration, or the others hang in the next all-reduce
            elsewhere = idist.all_reduce(float(here), op="MAX") > 0 and not here
            if elsewhere:
                engine.terminate()
        if (here or elsewhere) and self.message is None:
            self.message = self._describe(engine, elsewhere)
            engine.state.nonfinite = self.message
            logger.error(self.message)

    def _describe(self, engine: Engine, elsewhere: bool = False) -> str:
        state = engine.state
        values = self._output_transform(state.output)
        values = values if isinstance(values, Sequence) and not isinstance(values, str) else [values]
        shown = ", ".join(f"{float(torch.as_tensor(v).float().reshape(-1)[0]):g}" for v in values[:3]) or "?"
        if elsewhere:
            shown = "on another process"
        where = f"epoch {state.epoch}, iteration {state.iteration}"
        if state.epoch_length:
            where += f" (batch {(state.iteration - 1) % state.epoch_length + 1} of {state.epoch_length} in the epoch)"
        files = _batch_files(state.batch)
        last = None
        if self.ckpt_dir is not None:
            from pipeline.engines.resume import resume_checkpoint

            last = resume_checkpoint(self.ckpt_dir, "auto")
        return (f"non-finite training loss ({shown}) at {where}: training stopped. The weights of this step are not "
                f"saved; the last good checkpoint is {last or 'none (no epoch had completed)'}. "
                + (f"Images of the batch: {', '.join(files)}. " if files else "")
                + "Lower the learning rate or check those inputs, then rerun (resume: auto continues from the last "
                  "good checkpoint).")

    def raise_if_tripped(self) -> None:
        """Raise ``NonFiniteLossError`` with the message when the guard stopped the run."""
        if self.message is not None:
            raise NonFiniteLossError(self.message)
