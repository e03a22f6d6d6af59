"""The state of a ``bmtl predict`` output folder: finished, in progress (or interrupted), or empty.

A prediction run writes ``PREDICTING.json`` (the in-progress marker) first, appends every finished input's row to
``predictions.partial.jsonl`` as it goes, and only at the end writes ``predictions.csv`` (atomically) and removes the
marker and the journal. So a folder with the marker is an unfinished run, whatever else it holds, and
``predictions.csv`` without the marker is a finished one. ``--resume`` reuses the journal's successful rows and
predicts the rest; ``--overwrite`` starts again; without either, a folder holding a run is refused.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.atomic import write_json_atomic

__all__ = ["PredictionJournal", "MARKER", "JOURNAL", "TABLE"]

MARKER = "PREDICTING.json"
JOURNAL = "predictions.partial.jsonl"
TABLE = "predictions.csv"


class PredictionJournal:
    """Marker and journal of one prediction run into ``output_dir``.

    Args:
        output_dir: the prediction output folder.
        overwrite: replace the results of an earlier run (finished or not).
        resume: continue an interrupted run: inputs with a successful row in the journal are not predicted again.
        description: what the marker records about the run (bundle, input, ...).

    Raises:
        ValueError: both ``overwrite`` and ``resume``.
        FileExistsError: the folder holds an earlier run and neither option is given (the message says which run and
            what to pass).
    """

    def __init__(self, output_dir: str | os.PathLike, overwrite: bool = False, resume: bool = False,
                 description: dict[str, Any] | None = None) -> None:
        if overwrite and resume:
            raise ValueError("overwrite and resume exclude each other: --resume finishes an interrupted run, "
                             "--overwrite starts again")
        self.dir = Path(output_dir)
        self.marker, self.journal, self.table = self.dir / MARKER, self.dir / JOURNAL, self.dir / TABLE
        interrupted, finished = self.marker.exists(), self.table.exists()
        if (interrupted or finished) and not (overwrite or resume):
            what = "an interrupted prediction run (PREDICTING.json)" if interrupted else \
                "the predictions of an earlier run (predictions.csv)"
            raise FileExistsError(f"{self.dir} holds {what}: pass --resume to finish it, or --overwrite to replace "
                                  "it, or choose another --output")
        self.done: dict[str, dict[str, Any]] = self._read_journal() if resume else {}
        if not resume:
            self.journal.unlink(missing_ok=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.marker, {"started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                                        "pid": os.getpid(), **(description or {})})
        self._handle = open(self.journal, "a", encoding="utf-8")

    def _read_journal(self) -> dict[str, dict[str, Any]]:
        """Successful rows of the journal by input file (a line cut short by the interruption is ignored)."""
        done: dict[str, dict[str, Any]] = {}
        if not self.journal.exists():
            return done
        for line in self.journal.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and row.get("status") == "ok" and "file" in row:
                done[self.key(str(row["file"]), row.get("frame"))] = row
        return done

    @staticmethod
    def key(file: str, frame: int | str | None = None) -> str:
        """The journal's key of an input: its file, and its frame for a frame of a multi-frame file."""
        return file if frame in (None, "") else f"{file}#frame={frame}"

    def record(self, row: dict[str, Any]) -> None:
        """Append one finished input's row (flushed: an interruption keeps every row recorded before it)."""
        self._handle.write(json.dumps(row, default=str) + "\n")
        self._handle.flush()

    def finish(self, write_table: Any, rows: Iterable[dict[str, Any]]) -> Any:
        """Write the final table with ``write_table(rows)``, then remove the journal and the marker (in that order:
        until the marker is gone the folder reads as unfinished)."""
        self._handle.close()
        result = write_table(list(rows))
        self.journal.unlink(missing_ok=True)
        self.marker.unlink(missing_ok=True)
        return result

    def close(self) -> None:
        """Close the journal without finishing (an error: the marker stays, the folder reads as unfinished)."""
        if not self._handle.closed:
            self._handle.close()
