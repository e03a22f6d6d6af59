from __future__ import annotations

from pipeline.progress import progress


def test_progress_yields_everything_and_stays_silent_off_a_terminal(capsys):
    assert list(progress(range(5), "work")) == [0, 1, 2, 3, 4]
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""   # pytest's captured stderr is not a terminal
