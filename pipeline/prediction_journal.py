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

__all__ = ["PredictionJournal", "check_output_folder", "check_output_location", "MARKER", "JOURNAL", "TABLE"]

MARKER = "PREDICTING.json"
JOURNAL = "predictions.partial.jsonl"
TABLE = "predictions.csv"


def check_output_location(input: str | os.PathLike, output: str | os.PathLike) -> None:
    """Refuse an output folder that is an input folder or holds it: discovery leaves the output folder out (so that a
    re-run does not predict the previous run's masks), which would leave out every input. An output folder inside
    the input folder is fine (left out of the inputs); so is any output for a single input file.

    Args:
        input: the input file or folder.
        output: the output folder (it need not exist yet).

    Raises:
        ValueError: ``output`` is ``input`` or a folder above it (symbolic links resolved); the message names both.
    """
    root, out = Path(input).resolve(), Path(output).resolve()
    if not root.is_dir():
        return
    if out == root:
        raise ValueError(f"the output folder {output} is the input folder {input}: its files would be left out as "
                         "outputs; choose an output folder outside the input folder (or inside it)")
    if out in root.parents:
        raise ValueError(f"the output folder {output} contains the input folder {input}: every input would be left "
                         "out as an output; choose an output folder outside the input folder (or inside it)")


def check_output_folder(output_dir: str | os.PathLike, input: str | os.PathLike | None = None,
                        overwrite: bool = False, resume: bool = False) -> None:
    """Every refusal of a prediction output folder, answered before a model is loaded or a file written (``bmtl
    predict`` checks it before torch is imported).

    Args:
        output_dir: the output folder (it need not exist).
        input: the input file or folder, when known (``check_output_location``).
        overwrite: an earlier run's results may be replaced.
        resume: an interrupted run is to be finished.

    Raises:
        ValueError: both ``overwrite`` and ``resume``; ``output_dir`` is the input folder or holds it.
        FileExistsError: the folder holds an earlier run and neither option is given (the message says which run and
            what to pass).
    """
    if overwrite and resume:
        raise ValueError("overwrite and resume exclude each other: --resume finishes an interrupted run, "
                         "--overwrite starts again")
    if input is not None:
        check_output_location(input, output_dir)
    folder = Path(output_dir)
    interrupted, finished = (folder / MARKER).exists(), (folder / TABLE).exists()
    if (interrupted or finished) and not (overwrite or resume):
        what = f"an interrupted prediction run ({MARKER})" if interrupted else \
            f"the predictions of an earlier run ({TABLE})"
        raise FileExistsError(f"{folder} holds {what}: pass --resume to finish it, or --overwrite to replace it, or "
                              "choose another --output")


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
        check_output_folder(output_dir, overwrite=overwrite, resume=resume)
        self.dir = Path(output_dir)
        self.marker, self.journal, self.table = self.dir / MARKER, self.dir / JOURNAL, self.dir / TABLE
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
