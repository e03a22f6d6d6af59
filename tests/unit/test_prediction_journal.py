from __future__ import annotations

import json

import pytest

from pipeline.prediction_journal import JOURNAL, MARKER, TABLE, PredictionJournal


def _table(out):
    def write(rows):
        (out / TABLE).write_text("\n".join(r["file"] for r in rows))
        return len(rows)
    return write


def test_a_run_marks_its_folder_until_it_finishes(tmp_path):
    journal = PredictionJournal(tmp_path / "out", description={"bundle": "b"})
    assert json.loads((tmp_path / "out" / MARKER).read_text())["bundle"] == "b"
    journal.record({"file": "a.png", "status": "ok"})
    assert (tmp_path / "out" / JOURNAL).read_text().count("\n") == 1   # flushed as it goes
    assert journal.finish(_table(tmp_path / "out"), [{"file": "a.png"}]) == 1
    assert not (tmp_path / "out" / MARKER).exists() and not (tmp_path / "out" / JOURNAL).exists()
    assert (tmp_path / "out" / TABLE).read_text() == "a.png"


def test_a_folder_holding_a_run_needs_overwrite_or_resume(tmp_path):
    out = tmp_path / "out"
    PredictionJournal(out).finish(_table(out), [{"file": "a.png"}])
    with pytest.raises(FileExistsError, match="predictions of an earlier run.*--resume.*--overwrite"):
        PredictionJournal(out)
    interrupted = PredictionJournal(out, overwrite=True)
    interrupted.record({"file": "a.png", "status": "ok", "prob_malignant": 0.25})
    interrupted.record({"file": "b.png", "status": "error", "error": "unreadable"})
    interrupted.close()   # killed here: the marker stays
    with (out / JOURNAL).open("a") as handle:
        handle.write('{"file": "c.png", "sta')   # a line cut short by the interruption
    with pytest.raises(FileExistsError, match="an interrupted prediction run"):
        PredictionJournal(out)
    resumed = PredictionJournal(out, resume=True)
    assert resumed.done == {"a.png": {"file": "a.png", "status": "ok", "prob_malignant": 0.25}}   # errors retried
    resumed.close()
    restarted = PredictionJournal(out, overwrite=True)
    assert restarted.done == {} and (out / JOURNAL).read_text() == ""
    restarted.close()
    with pytest.raises(ValueError, match="exclude each other"):
        PredictionJournal(out, overwrite=True, resume=True)


def test_frames_of_one_file_are_resumed_one_by_one(tmp_path):
    out = tmp_path / "out"
    interrupted = PredictionJournal(out)
    interrupted.record({"file": "loop.dcm", "frame": 0, "status": "ok"})
    interrupted.record({"file": "loop.dcm", "frame": 1, "status": "ok"})
    interrupted.record({"file": "a.png", "frame": "", "status": "ok"})
    interrupted.close()
    resumed = PredictionJournal(out, resume=True)
    assert set(resumed.done) == {"loop.dcm#frame=0", "loop.dcm#frame=1", "a.png"}
    assert PredictionJournal.key("loop.dcm", 1) in resumed.done and PredictionJournal.key("loop.dcm", 2) not in \
        resumed.done and PredictionJournal.key("a.png", None) == "a.png"
    resumed.close()
