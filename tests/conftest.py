"""Fixtures shared by the unit, integration, reliability and benchmark tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# the benchmark scripts import their library (benchmarks/bench.py) as `import bench`, from their own folder
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.fixture
def kill_before_rename(monkeypatch) -> Callable[[str | None], None]:
    """``kill_before_rename(name)``: from now on, ``pipeline.atomic`` fails to rename a finished temporary file onto a
    target called ``name`` (any target when None), as a process killed between writing and renaming would."""
    import pipeline.atomic

    def arm(name: str | None = None) -> None:
        real = os.replace

        def replace(src, dst):
            if name is None or os.path.basename(dst) == name:
                raise OSError("killed before the rename")
            return real(src, dst)

        monkeypatch.setattr(pipeline.atomic.os, "replace", replace)

    return arm
