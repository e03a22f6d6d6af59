"""Which checkpoint a training run resumes from."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["resume_checkpoint"]


def resume_checkpoint(ckpt_dir: str | os.PathLike, resume: bool | str = "auto") -> str | None:
    """The newest ``last*.pt`` in ``ckpt_dir`` (the per-epoch and the final checkpoint of the bundle's
    ``CheckpointSaver``), or ``None`` to start afresh.

    Args:
        ckpt_dir: the run's checkpoint folder.
        resume: ``"auto"`` resumes when a checkpoint exists, ``True`` requires one, ``False`` never resumes.

    Raises:
        FileNotFoundError: ``resume`` is True and there is no checkpoint.
        ValueError: ``resume`` is not True, False or "auto".
    """
    if isinstance(resume, str) and resume.lower() in ("true", "false"):
        resume = resume.lower() == "true"
    if resume not in (True, False, "auto"):
        raise ValueError(f"resume must be true, false or 'auto', got {resume!r}")
    if resume is False:
        return None
    candidates = sorted(Path(ckpt_dir).glob("last*.pt"), key=lambda p: p.stat().st_mtime) if Path(
        ckpt_dir).is_dir() else []
    if not candidates:
        if resume is True:
            raise FileNotFoundError(f"{ckpt_dir}: resume=true but there is no last*.pt checkpoint to resume from")
        return None
    return str(candidates[-1])
