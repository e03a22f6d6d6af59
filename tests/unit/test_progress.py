from __future__ import annotations

from pipeline.progress import progress


def test_progress_yields_everything_and_stays_silent_off_a_terminal(capsys):
    assert list(progress(range(5), "work")) == [0, 1, 2, 3, 4]
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""   # pytest's captured stderr is not a terminal


def _record_bars(monkeypatch):
    """The (description, total) of every progress bar opened from now on (the bars still run)."""
    import tqdm.auto

    bars, real = [], tqdm.auto.tqdm

    def recording(iterable, **kwargs):
        bars.append((kwargs["desc"], kwargs["total"] if kwargs["total"] is not None else len(iterable)))
        return real(iterable, **kwargs)

    monkeypatch.setattr(tqdm.auto, "tqdm", recording)
    return bars


def test_prepare_shows_a_bar_over_its_images_or_volumes(tmp_path, monkeypatch):
    """`bmtl prepare` goes through ``progress`` for 2D images (BUSI layout) and MRI volumes alike."""
    from pipeline.data.prepare import prepare
    from pipeline.data.synthetic_busi import make_us_dataset
    from pipeline.data.synthetic_mr import make_mr_dataset

    bars = _record_bars(monkeypatch)
    prepare("busi", make_us_dataset(tmp_path / "us", n=6, seed=0, size=(32, 32)), tmp_path / "us_out", n_folds=2)
    prepare("nifti", make_mr_dataset(tmp_path / "mr", n=2, seed=0, shape=(24, 24, 6)), tmp_path / "mr_out",
            n_folds=2)
    assert ("prepare nifti", 2) in bars   # one bar per volume
    per_class = {desc: n for desc, n in bars if desc.startswith("prepare ") and desc != "prepare nifti"}
    assert set(per_class) == {"prepare normal", "prepare benign", "prepare malignant"} and sum(per_class.values()) == 6


def test_dedup_shows_a_bar_over_the_images_it_reads(tmp_path, monkeypatch):
    import numpy as np

    from pipeline.data.dedup import find_duplicates
    from pipeline.data.io import write_png

    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        write_png(paths[-1], (rng.uniform(size=(32, 32)) * 255).astype(np.uint8))
    bars = _record_bars(monkeypatch)
    find_duplicates(paths)
    assert ("dedup: reading", 3) in bars
