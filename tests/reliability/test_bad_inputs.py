"""The bad-input suite: every case of ``tests.reliability.bad_inputs.BAD_INPUTS`` end to end through its command.

``prepare`` cases run ``bmtl prepare`` (``pipeline.cli.main``); ``train``/``evaluate`` cases run the bundle's
``training``/``evaluating`` workflow as ``python -m monai.bundle run`` does (``ConfigWorkflow``). A skipped input is
listed (path and problem) in the command's output and in ``skipped.csv`` while the good items are prepared; an error
names the file and the problem; an accepted input comes through. The README table is generated from the same list
(``python -m tests.reliability.bad_inputs``).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.cli import main
from pipeline.data.io import DataError, display_path, read_grey, read_mask
from tests.integration.conftest import US_BUNDLE
from tests.integration.test_bundles import run_workflow
from tests.reliability.bad_inputs import BAD_INPUTS, BadInput, Context, bad_input_table

WORKFLOWS = {"train": "training", "evaluate": "evaluating"}


def _chain_text(error: BaseException) -> str:
    parts = []
    while error is not None:
        parts.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    return "\n".join(parts)


def _skipped_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "skipped.csv", newline="", encoding="utf-8", errors="surrogateescape") as f:
        return list(csv.DictReader(f))


def _items(out: Path) -> list[dict]:
    return json.loads((out / "datalist.json").read_text(encoding="utf-8"))["training"]


@pytest.fixture
def context(request) -> Context:
    command = request.node.callspec.params["case"].command
    if command == "prepare":
        return Context()
    if command == "predict":
        return Context(bundle=request.getfixturevalue("exported_bundle"))
    return Context(request.getfixturevalue("small_datalist"), request.getfixturevalue("small_preset"))


def _check_predict(case: BadInput, scenario, named: str, rc: int, captured) -> None:
    if case.outcome == "error":
        assert rc == 2, captured.out
        assert case.message in captured.err and named in captured.err, captured.err
        return
    out_dir = Path(scenario.args[scenario.args.index("--output") + 1])
    with open(out_dir / "predictions.csv", newline="", encoding="utf-8") as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    assert sum(r["status"] == "ok" for r in rows.values()) == scenario.items, rows
    assert rc == (3 if case.outcome == "skipped" else 0), rows   # 3: some inputs failed, the others predicted
    root = Path(scenario.args[scenario.args.index("--input") + 1])
    row = rows[scenario.named.name if root.is_file() else str(scenario.named.relative_to(root))]   # relative to --input
    if case.outcome == "skipped":
        assert row["status"] == "error" and case.message in row["error"], row
        listed = [line for line in captured.out.splitlines() if named in line]
        assert listed and case.message in listed[0], captured.out
    else:
        assert row["status"] == "ok", row


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda c: c.id)
def test_bad_input(case: BadInput, context: Context, tmp_path, capsys):
    scenario = case.write(tmp_path, context)
    named = display_path(scenario.named)  # how messages show it (non-UTF-8 bytes as \xNN)
    if case.command == "prepare":
        rc = main(scenario.args)
        captured = capsys.readouterr()
        out_dir = Path(scenario.args[scenario.args.index("--output") + 1])
        if case.outcome == "error":
            assert rc != 0, captured.out
            assert case.message in captured.err and named in captured.err, captured.err
            return
        assert rc == 0, captured.err
        items = _items(out_dir)
        if scenario.items is not None:
            assert len(items) == scenario.items, [i["original"] for i in items]
        rows = _skipped_rows(out_dir)
        if case.outcome == "skipped":
            hits = [r for r in rows if r["path"].startswith(named) and case.message in r["problem"]]
            assert hits, rows
            listed = [line for line in captured.out.splitlines() if named in line]
            assert listed and case.message in listed[0], captured.out  # the command lists what it skipped
            assert not any(i["original"] == str(scenario.named) for i in items)
        else:  # accepted
            assert any(i["original"] == str(scenario.named) for i in items), [i["original"] for i in items]
            assert not any(r["path"] == named for r in rows), rows
        return
    if case.command == "predict":
        rc = main(scenario.args)
        _check_predict(case, scenario, named, rc, capsys.readouterr())
    elif case.command in WORKFLOWS:
        with pytest.raises(Exception) as info:
            run_workflow(US_BUNDLE, WORKFLOWS[case.command], **scenario.args)
        text = _chain_text(info.value)
        assert case.message in text and named in text, text[-3000:]
    else:  # pragma: no cover - a command without a runner is a bug in the table
        pytest.fail(f"no runner for command {case.command!r}")
    for path in scenario.never_created:
        assert not path.exists(), f"{path} was created: input data was executed"


def test_the_suite_is_large_and_the_readme_table_is_generated_from_it():
    assert len(BAD_INPUTS) >= 30 and len({c.id for c in BAD_INPUTS}) == len(BAD_INPUTS)
    table = bad_input_table().splitlines()
    assert len(table) == len(BAD_INPUTS) + 2 and table[0].startswith("| Case |")
    # the README shows this very table (regenerate it with `python -m tests.reliability.bad_inputs`)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert "\n".join(table) + "\n" in readme, "README's bad-input table differs from the generated one"


# ------------------------------------------------------------------------------------------------ reader fuzzing
def _seeds() -> list[bytes]:
    """Valid encodings in many formats and modes: mutations of them reach deep into Pillow's decoders."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 255, (12, 10), dtype=np.uint8)
    images = [Image.fromarray(grey), Image.fromarray((grey > 128).astype(np.uint8) * 255).convert("1"),
              Image.fromarray(np.dstack([grey] * 3)), Image.fromarray(np.dstack([grey] * 4)),
              Image.fromarray(grey.astype(np.uint16) * 200), Image.fromarray(np.dstack([grey] * 3)).convert("P"),
              Image.fromarray(grey).convert("LA"), Image.fromarray(grey.astype(np.float32))]
    out = []
    for img in images:
        for fmt in ("PNG", "TIFF", "BMP", "JPEG", "GIF"):
            buffer = io.BytesIO()
            try:
                img.save(buffer, format=fmt)
            except (OSError, ValueError, KeyError):
                continue
            out.append(buffer.getvalue())
    return out


SEEDS = _seeds()


@st.composite
def _image_bytes(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "zero"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            data[at:at + draw(st.integers(1, 64))] = b"\x00" * 4
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(_image_bytes(), st.binary(max_size=256)),
       suffix=st.sampled_from([".png", ".jpg", ".tif", ".bmp", ".gif"]))
def test_readers_turn_any_bytes_into_an_array_or_a_data_error(data, suffix, tmp_path):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    for reader in (read_grey, read_mask):
        try:
            array = reader(path)
        except DataError as e:
            assert str(path) in str(e)
        else:
            assert array.ndim == 2 and min(array.shape) >= 2


def test_prepare_lists_every_skipped_input_and_goes_on(tmp_path, capsys):
    """Several defects in one folder: each is listed once, the good images are all prepared."""
    from tests.reliability.bad_inputs import _folder_dataset, _n_good, _save, _grey

    base = _folder_dataset(tmp_path)
    (base / "benign" / "empty.png").write_bytes(b"")
    (base / "benign" / "notes.png").write_text("not an image")
    _save(base / "malignant" / "alone.png", _grey())
    rc = main(["prepare", "--source", "folder", "--input", str(base), "--output", str(tmp_path / "out"),
               "--folds", "2"])
    out = capsys.readouterr().out
    assert rc == 0 and "3 input(s) skipped" in out
    assert len(_items(tmp_path / "out")) == _n_good()
    skipped = {os.path.basename(r["path"]) for r in _skipped_rows(tmp_path / "out")}
    assert skipped == {"empty.png", "notes.png", "alone.png"}
