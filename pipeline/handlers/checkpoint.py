"""Checkpoints that survive a kill and refuse to load into the wrong network.

``SafeCheckpointSaver`` is MONAI's ``CheckpointSaver`` with these changes:

* **atomic writes** (``pipeline.atomic``): every file is written to a temporary file in the same folder, flushed to
  disk and renamed over the target (``os.replace`` is atomic on POSIX and Windows), so a kill during saving leaves
  the previous complete file, never a truncated one. MONAI 1.6.1 builds its ``DiskSaver`` with ``atomic=False`` (its
  comment says atomic files lose group/other read permission; ignite 0.5 restores them), hence this class;
* **new before old**: ignite's ``Checkpoint`` deletes the file it rotates out *before* writing the new one (and
  MONAI deletes ``last.pt`` before rewriting it), so a kill in between would leave no checkpoint at all. Here
  deletions wait until the new file is complete;
* **no non-finite weights**: nothing is saved while the network holds NaN/inf values or after ``NanGuard`` stopped
  the run, so the last good checkpoint stays the newest one;
* **no checkpoint on exceptions** (``save_on_exception=False``): MONAI saves the final checkpoint when the run raises,
  i.e. in the middle of an epoch. Resuming from there is not reproducible (the data order of the broken epoch cannot
  be replayed), so by default the epoch checkpoints are the only resume points;
* ``state_dict``/``load_state_dict`` of the best-model tracking (MONAI only loads it), so a resumed run keeps the
  best score of the epochs before the interruption (see ``ResumeState``);
* after a resume, the epoch checkpoints already in the folder are adopted, so ``n_saved`` rotation removes them.

``SafeCheckpointLoader`` is MONAI's ``CheckpointLoader`` (which already loads with ``torch.load(weights_only=True)``)
with errors that name the file and the problem: missing, truncated or corrupt file, a pickle that would run code, and a
checkpoint of another network (missing/unexpected keys and shape mismatches, with the preset it was trained with when
``run_config.json`` is beside its ``models/`` folder).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from monai.handlers import CheckpointLoader, CheckpointSaver

from pipeline.atomic import atomic_path
from pipeline.data.io import DataError

__all__ = [
    "AtomicDiskSaver",
    "SafeCheckpointSaver",
    "SafeCheckpointLoader",
    "load_checkpoint",
    "check_checkpoint_fits",
    "all_finite",
    "TEMP_SUFFIX",
]

logger = logging.getLogger(__name__)

TEMP_SUFFIX = ".partial"  # temporary files of an unfinished save: ".<target name>.<random>.partial"


def _unwrap(obj: Any) -> Any:
    return obj.module if isinstance(obj, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)) else obj


def all_finite(modules: Mapping[str, Any]) -> bool:
    """Whether every parameter and floating-point buffer of the ``torch.nn.Module`` values of ``modules`` is finite."""
    for obj in modules.values():
        obj = _unwrap(obj)
        if not isinstance(obj, torch.nn.Module):
            continue
        for tensor in list(obj.parameters()) + list(obj.buffers()):
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                return False
    return True


class AtomicDiskSaver(DiskSaver):
    """ignite's ``DiskSaver`` with atomic writes, an optional fixed file name and deletions after the next save.

    Args:
        dirname: folder of the checkpoints (created).
        filename: fixed file name for every save (as MONAI's ``final_filename``/``key_metric_filename``), or None.
        fsync: flush the file (and the folder entry) to disk before and after the rename, so that even a power loss
            keeps either the old or the new file.
    """

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None, fsync: bool = True) -> None:
        super().__init__(dirname=dirname, atomic=True, create_dir=True, require_empty=False)
        self.filename = filename
        self.fsync = fsync
        self._pending: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        name = self.filename or filename
        super().__call__(checkpoint, name, metadata)
        # the rotated-out files go only now that the new one is complete: a kill in between leaves one file too many,
        # never none
        pending, self._pending = self._pending, []
        for old in pending:
            if old != name:
                (self.dirname / old).unlink(missing_ok=True)

    def remove(self, filename: str) -> None:
        if idist.get_rank() == self.save_on_rank:
            self._pending.append(self.filename or filename)

    def _save_func(self, checkpoint: Mapping, path: Path, func: Callable) -> None:
        # ignite's atomic branch, through pipeline.atomic (temp file, fsync, os.replace, folder fsync) with a temporary
        # name that says what it is (".last.pt.x1y2.partial" instead of "tmpx1y2"), so leftovers of a killed save are
        # recognisable and cleaned up by ``SafeCheckpointSaver`` at the next start.
        with atomic_path(path, fsync=self.fsync, temp_suffix=TEMP_SUFFIX) as tmp:
            with open(tmp, "wb") as f:
                func(checkpoint, f, **self.kwargs)
            os.chmod(tmp, os.stat(tmp).st_mode | stat.S_IRGRP | stat.S_IROTH)  # as ignite's atomic DiskSaver


def remove_partial_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed saves left in ``folder``; returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.glob(f".*{TEMP_SUFFIX}"):
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


class SafeCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` made safe against kills, NaN weights and resumes (see the module docstring).

    Takes every argument of ``monai.handlers.CheckpointSaver``, plus:

    Args:
        save_on_exception: also save the final checkpoint when the run raises (MONAI's behaviour); off by default
            because that checkpoint is mid-epoch.
        fsync: see ``AtomicDiskSaver``.
    """

    def __init__(self, *args: Any, save_on_exception: bool = False, fsync: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.save_on_exception = save_on_exception
        self._file_prefix = kwargs.get("file_prefix", args[3] if len(args) > 3 else "")
        for ckpt in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if ckpt is not None:
                fixed = getattr(ckpt.save_handler, "filename", None)
                ckpt.save_handler = AtomicDiskSaver(self.save_dir, filename=fixed, fsync=fsync)

    # ------------------------------------------------------------------ wiring
    def attach(self, engine: Engine) -> None:
        if idist.get_rank() == 0:
            for path in remove_partial_files(self.save_dir):
                logger.info("removed %s, left by an interrupted save", path)
        if self._interval_checkpoint is not None:
            # after the CheckpointLoader (attached before this saver) restored the trainer's epoch
            engine.add_event_handler(Events.STARTED, self._adopt_interval_files)
        super().attach(engine)

    def _adopt_interval_files(self, engine: Engine) -> None:
        """Register the epoch/iteration checkpoints of an interrupted run (up to the restored epoch) for rotation."""
        ckpt = self._interval_checkpoint
        if ckpt is None or ckpt._saved:
            return
        name = "checkpoint" if len(self.save_dict) > 1 else next(iter(self.save_dict))
        prefix = f"{self._file_prefix}_" if self._file_prefix else ""
        score_name = "epoch" if self.epoch_level else "iteration"
        pattern = re.compile(rf"^{re.escape(prefix + name)}_{score_name}=(\d+)\.{re.escape(ckpt.ext)}$")
        now = engine.state.epoch if self.epoch_level else engine.state.iteration
        found = []
        for path in Path(self.save_dir).iterdir() if Path(self.save_dir).is_dir() else []:
            m = pattern.match(path.name)
            if m and int(m.group(1)) <= now:
                found.append(Checkpoint.Item(int(m.group(1)), path.name))
        found.sort(key=lambda item: item.priority)
        keep = ckpt.n_saved if ckpt.n_saved is not None else len(found)
        ckpt._saved = found[-keep:] if keep else []

    # ------------------------------------------------------------------ guards
    def _refuse(self, engine: Engine, what: str) -> bool:
        stopped = getattr(engine.state, "nonfinite", None)
        if stopped is None and all_finite(self.save_dict):
            return False
        logger.error("not saving the %s checkpoint: %s; the previous checkpoints in %s are kept", what,
                     f"training stopped on a non-finite loss ({stopped})" if stopped else "the network holds NaN/inf",
                     self.save_dir)
        return True

    def completed(self, engine: Engine) -> None:
        if not self._refuse(engine, "final"):
            super().completed(engine)

    def exception_raised(self, engine: Engine, e: Exception) -> None:
        if self.save_on_exception and not self._refuse(engine, "exception"):
            super().exception_raised(engine, e)  # saves, then re-raises
        raise e

    def interval_completed(self, engine: Engine) -> None:
        if not self._refuse(engine, "epoch" if self.epoch_level else "iteration"):
            super().interval_completed(engine)

    def metrics_completed(self, engine: Engine) -> None:
        if not self._refuse(engine, "best-model"):
            super().metrics_completed(engine)

    # ------------------------------------------------------------------ state of the best-model tracking
    def state_dict(self) -> dict[str, Any]:
        """The best-model tracking (``[(score, file name)]``), as ``load_state_dict`` (MONAI's) expects it."""
        if self._key_metric_checkpoint is None:
            return {"_saved": []}
        return {"_saved": [(float(p), str(f)) for p, f in self._key_metric_checkpoint._saved]}

    def load_state_dict(self, state_dict: dict) -> None:
        if self._key_metric_checkpoint is not None:
            self._key_metric_checkpoint.load_state_dict({"_saved": [(p, f) for p, f in state_dict.get("_saved", [])]})


# ---------------------------------------------------------------------------------------------------------- loading
def load_checkpoint(path: str | os.PathLike, map_location: Any = None) -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file and say what is wrong.

    Raises:
        DataError: missing or empty file, a file that is not a PyTorch checkpoint (truncated, corrupt, another
            format), or a pickle holding Python objects other than tensors and plain containers (which
            ``weights_only=True`` refuses to run).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint not found")
    if path.stat().st_size == 0:
        raise DataError(path, "checkpoint file is empty (0 bytes): an interrupted save? use an earlier checkpoint")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        detail = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
        detail = (detail[0].strip() if detail else text.strip()[:200]).split(". Please", 1)[0]
        if "Unsupported global" in text:
            raise DataError(path, f"refused to load: the checkpoint holds a Python object that could run code when "
                                  f"unpickled ({detail[:300]}); torch.load(weights_only=True) accepts only tensors "
                                  "and plain containers. Load it the unsafe way only if you trust its source") from None
        raise DataError(path, "not a readable PyTorch checkpoint (truncated, corrupt, or a pickle of arbitrary Python "
                              f"objects, which is never loaded: torch.load(weights_only=True) said {detail[:300]!r})"
                        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as e:
        raise DataError(path, f"not a readable PyTorch checkpoint (truncated or corrupt?): {type(e).__name__}: "
                              f"{str(e).strip()[:300]}") from None


def _trained_with(path: Path) -> str:
    """``" (trained with preset P, network N)"`` from the run_config.json of the run the checkpoint belongs to."""
    for folder in (path.parent, path.parent.parent):
        config = folder / "run_config.json"
        if config.is_file():
            try:
                data = json.loads(config.read_text(encoding="utf-8"))
                return f" (it was trained with preset {data.get('preset')!r}, network {data.get('network_name')!r})"
            except (OSError, ValueError):
                return ""
    return ""


def _examples(names: list[str], n: int = 3) -> str:
    shown = ", ".join(names[:n])
    return shown + (", ..." if len(names) > n else "")


def check_checkpoint_fits(checkpoint: Any, load_dict: Mapping[str, Any], path: str | os.PathLike,
                          strict: bool = True) -> list[str]:
    """Check that ``checkpoint`` can be loaded into the objects of ``load_dict``; returns the keys of non-module
    objects that the checkpoint lacks (callers skip those).

    Raises:
        DataError: naming ``path``: the checkpoint is not a dict, lacks a network, or a network's keys or tensor shapes
            differ (missing and unexpected keys and shape mismatches are counted and a few are named).
    """
    path = Path(path)
    if not isinstance(checkpoint, Mapping):
        raise DataError(path, f"not a checkpoint dictionary (got {type(checkpoint).__name__})")
    if len(load_dict) == 1:
        key = next(iter(load_dict))
        if key not in checkpoint:
            checkpoint = {key: checkpoint}
    missing_objects = []
    for key, obj in load_dict.items():
        obj = _unwrap(obj)
        if key not in checkpoint:
            if isinstance(obj, torch.nn.Module):
                held = _examples(sorted(map(str, checkpoint)), 8)
                raise DataError(path, f"checkpoint has no {key!r} entry (it holds {held}){_trained_with(path)}")
            missing_objects.append(key)
            continue
        if not isinstance(obj, torch.nn.Module):
            continue
        state = checkpoint[key]
        if not isinstance(state, Mapping):
            raise DataError(path, f"entry {key!r} is not a network state dict (got {type(state).__name__})")
        expected = obj.state_dict()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(v.shape)}" for k, v in expected.items()
                  if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)]
        if shapes or (strict and (missing or unexpected)):
            parts = []
            if missing:
                parts.append(f"{len(missing)} key(s) of the network missing from the checkpoint "
                             f"(e.g. {_examples(missing)})")
            if unexpected:
                parts.append(f"{len(unexpected)} unexpected key(s) (e.g. {_examples(unexpected)})")
            if shapes:
                parts.append(f"{len(shapes)} shape mismatch(es) (e.g. {_examples(shapes, 2)})")
            raise DataError(path, f"checkpoint does not fit the network {key!r} ({type(obj).__name__}): "
                                  f"{'; '.join(parts)}. It comes from another network or preset{_trained_with(path)}: "
                                  "use the preset it was trained with, or another checkpoint")
    return missing_objects


class SafeCheckpointLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` (``torch.load(weights_only=True)``) with clear errors before anything is loaded.

    The checkpoint is read and checked against ``load_dict`` first (``load_checkpoint``, ``check_checkpoint_fits``);
    non-module objects that the checkpoint lacks (e.g. the ``resume_state`` entry in a checkpoint of an older version)
    are skipped with a warning; then MONAI's loader does the loading. Same arguments as ``CheckpointLoader``.
    """

    def __call__(self, engine: Engine) -> None:
        checkpoint = load_checkpoint(self.load_path, self.map_location)
        skipped = check_checkpoint_fits(checkpoint, self.load_dict, self.load_path,
                                        strict=self.strict and self.strict_shape)
        del checkpoint
        full = self.load_dict
        if skipped:
            self.logger.warning(f"{self.load_path}: no {', '.join(skipped)} in the checkpoint, not restored")
            self.load_dict = {k: v for k, v in full.items() if k not in skipped}
        try:
            super().__call__(engine)
        finally:
            self.load_dict = full
