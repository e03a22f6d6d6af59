"""Crash and resume, determinism: a run SIGKILLed mid-epoch and restarted with the same command ends exactly like an
uninterrupted run; two runs with the same seed are identical (CPU, same thread count)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.integration.conftest import REPO, US_BUNDLE
from tests.integration.test_bundles import run_workflow

pytestmark = pytest.mark.slow

EPOCHS = 3
KILL_EPOCH, KILL_ITERATION = 3, 1  # 2 iterations per epoch: the kill lands between the two batches of epoch 3


def _command(datalist: Path, preset: Path, out: Path, extra: Path) -> list[str]:
    configs = US_BUNDLE / "configs"
    files = [str(configs / "common.yaml"), str(configs / "train.yaml"), str(preset), str(extra)]
    return [sys.executable, "-m", "monai.bundle", "run", "training", "--meta_file", str(configs / "metadata.json"),
            "--config_file", json.dumps(files), "--bundle_root", str(US_BUNDLE), "--datalist", str(datalist),
            "--epochs", str(EPOCHS), "--output_dir", str(out), "--use_mlflow", "False"]


def _extra_config(path: Path, marker: Path) -> Path:
    """Adds the test's pause hook to the trainer's handlers (the same file for every run of the test)."""
    path.write_text(
        "pause_hook:\n"
        "  _target_: tests.reliability.helpers.PauseOnce\n"
        f"  epoch: {KILL_EPOCH}\n"
        f"  iteration: {KILL_ITERATION}\n"
        f"  marker: {json.dumps(str(marker))}\n"
        "train#trainer#train_handlers: \"$@train#handlers + [@pause_hook]\"\n"
    )
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(path, weights_only=True)
    return ckpt["network"] if "network" in ckpt else ckpt


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{a.name}: {len(different)} tensors differ, e.g. {different[:3]}"


def test_sigkill_mid_epoch_then_restart_gives_the_uninterrupted_result(small_datalist, small_preset, tmp_path):
    marker = tmp_path / "paused"
    extra = _extra_config(tmp_path / "pause.yaml", marker)
    reference_marker_dir = tmp_path / "ref_extra"
    reference_marker_dir.mkdir()
    (reference_marker_dir / "paused").write_text("")  # the reference run never pauses
    reference_extra = _extra_config(reference_marker_dir / "pause.yaml", reference_marker_dir / "paused")

    ref_out, run_out = tmp_path / "reference", tmp_path / "interrupted"
    t0 = time.monotonic()
    reference = subprocess.Popen(_command(small_datalist, small_preset, ref_out, reference_extra), cwd=REPO,
                                 env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim = subprocess.Popen(_command(small_datalist, small_preset, run_out, extra), cwd=REPO, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while not marker.exists():
            assert victim.poll() is None, f"the run ended before epoch {KILL_EPOCH}:\n{victim.stdout.read()[-3000:]}"
            assert time.monotonic() - t0 < 300, "the run never reached the pause"
            time.sleep(0.05)
        # in the middle of epoch 3: the checkpoint of epoch 2 is there, the one of epoch 3 is not
        models = run_out / "models"
        assert (models / "last_checkpoint_epoch=2.pt").is_file()
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == -signal.SIGKILL
    assert not (models / "last.pt").exists() and not (models / "last_checkpoint_epoch=3.pt").exists()
    assert pd.read_csv(run_out / "history.csv")["epoch"].tolist() == [1, 2]

    # the same command again: resume: auto picks up last_checkpoint_epoch=2.pt
    restart = subprocess.run(_command(small_datalist, small_preset, run_out, extra), cwd=REPO, env=_env(),
                             capture_output=True, text=True, timeout=600)
    assert restart.returncode == 0, restart.stdout[-3000:] + restart.stderr[-3000:]
    assert "last_checkpoint_epoch=2.pt" in restart.stdout + restart.stderr  # "Restored all variables from ..."
    ref_log, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, ref_log[-3000:]

    ref_history = _history(ref_out)
    run_history = _history(run_out)
    assert ref_history["epoch"].tolist() == [1, 2, 3]
    pd.testing.assert_frame_equal(run_history, ref_history, check_exact=True)  # losses, lr, every val metric
    for name in ("last.pt", "model.pt", "last_checkpoint_epoch=3.pt"):
        _assert_same_weights(run_out / "models" / name, ref_out / "models" / name)
    ref_sel = torch.load(ref_out / "models" / "last.pt", weights_only=True)["resume_state"]
    run_sel = torch.load(run_out / "models" / "last.pt", weights_only=True)["resume_state"]
    assert run_sel == ref_sel  # best score and its epoch, the best-model record
    # the epoch-2 checkpoint of the killed run was rotated out like in the uninterrupted run
    assert sorted(p.name for p in (run_out / "models").iterdir()) == sorted(
        p.name for p in (ref_out / "models").iterdir())


def _history(out: Path) -> pd.DataFrame:
    """history.csv without its wall-clock columns (``epoch_seconds``, ``val_seconds``): what a seed determines."""
    return pd.read_csv(out / "history.csv").drop(columns=["epoch_seconds", "val_seconds"], errors="ignore")


def test_same_seed_same_losses_and_metrics_and_seed_logged(small_datalist, small_preset, tmp_path):
    from mlflow.tracking import MlflowClient

    common = dict(datalist=str(small_datalist), preset=str(small_preset), epochs=2, fold=0)
    runs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        out = tmp_path / name
        run_workflow(US_BUNDLE, "training", output_dir=str(out), seed=seed, run_name=f"seed{seed}{name}",
                     use_mlflow=name == "a", **common)
        runs[name] = _history(out)
    pd.testing.assert_frame_equal(runs["a"], runs["b"], check_exact=True)
    _assert_same_weights(tmp_path / "a" / "models" / "last.pt", tmp_path / "b" / "models" / "last.pt")
    assert not runs["a"]["train_loss"].equals(runs["c"]["train_loss"])  # the seed matters
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'a' / 'mlruns.db'}")
    logged = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert logged and logged[0].data.params["seed"] == "7"
