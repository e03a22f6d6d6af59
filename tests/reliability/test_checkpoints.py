"""Checkpoints: atomic writes that survive SIGKILL, loading with ``weights_only=True``, and clear errors for files that
are missing, corrupt, unsafe or of another network."""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from pipeline.data.io import DataError
from pipeline.handlers import ResumeState, SafeCheckpointLoader, SafeCheckpointSaver
from pipeline.handlers.checkpoint import TEMP_SUFFIX, AtomicDiskSaver
from tests.integration.conftest import REPO


def _check_consistent(path: Path) -> float:
    """Load ``path`` the safe way and check that every tensor holds the one value it was saved with."""
    ckpt = torch.load(path, weights_only=True)
    weights = ckpt["network"] if "network" in ckpt else ckpt
    values = {float(t.min()) for t in weights.values()} | {float(t.max()) for t in weights.values()}
    assert len(values) == 1, f"{path.name}: mixed contents {sorted(values)[:4]}"
    return values.pop()


@pytest.mark.slow
def test_sigkill_during_saving_never_leaves_a_corrupt_checkpoint(tmp_path):
    """A process saves 16 MB checkpoints in a loop through SafeCheckpointSaver; it is SIGKILLed 4 times, twice at
    random moments and twice exactly while a temporary file is being written. After every kill each ``*.pt`` file
    loads with ``weights_only=True`` and is consistent, and the next start removes the leftover temporary files."""
    folder = tmp_path / "ckpt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    rng = random.Random(0)
    killed_mid_write = 0
    for attempt in range(4):
        proc = subprocess.Popen([sys.executable, "-m", "tests.reliability.save_loop", str(folder), "16"], cwd=REPO,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while not (folder / "model.pt").exists() or len(list(folder.glob("*.pt"))) < 2:
                assert proc.poll() is None, proc.stderr.read()[-2000:]
                assert time.monotonic() < deadline
                time.sleep(0.01)
            if attempt % 2 == 0:
                time.sleep(rng.uniform(0.0, 1.5))
            else:  # wait for a save in progress
                while not list(folder.glob(f"*{TEMP_SUFFIX}")):
                    assert time.monotonic() < deadline
                    time.sleep(0.001)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        leftovers = list(folder.glob(f"*{TEMP_SUFFIX}"))
        killed_mid_write += bool(leftovers)
        files = sorted(folder.glob("*.pt"))
        assert (folder / "model.pt") in files and any(p.name.startswith("last_checkpoint_iteration=") for p in files)
        for path in files:
            _check_consistent(path)
    assert killed_mid_write >= 2  # at least the 2 kills aimed at a save in progress hit one
    # a new start cleans the temporary files of the killed saves
    SafeCheckpointSaver(save_dir=str(folder), save_dict={"network": torch.nn.Linear(1, 1)},
                        save_final=True).attach(Engine(lambda e, b: None))
    assert not list(folder.glob(f"*{TEMP_SUFFIX}"))


def test_failed_write_keeps_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    """Disk full (or any error) in the middle of writing: the previous checkpoint is intact, no temporary is left."""
    saver = AtomicDiskSaver(tmp_path, filename="last.pt")
    saver({"w": torch.ones(3)}, "ignored.pt")
    before = (tmp_path / "last.pt").read_bytes()

    def broken_save(obj, f, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(saver, "_save_func", lambda c, p, func: AtomicDiskSaver._save_func(saver, c, p, broken_save))
    with pytest.raises(OSError, match="No space left"):
        saver({"w": torch.zeros(3)}, "ignored.pt")
    assert (tmp_path / "last.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_rotation_writes_the_new_file_before_deleting_the_old(tmp_path, monkeypatch):
    net = torch.nn.Linear(2, 2)
    engine = Engine(lambda e, b: None)
    SafeCheckpointSaver(save_dir=str(tmp_path), save_dict={"network": net, "trainer": engine}, save_interval=1,
                        n_saved=1, file_prefix="last").attach(engine)
    seen = []
    real_save = torch.save

    def spy(obj, f, **kwargs):
        seen.append(sorted(p.name for p in tmp_path.glob("*.pt")))  # what exists while the new file is written
        real_save(obj, f, **kwargs)

    monkeypatch.setattr(torch, "save", spy)
    engine.run([0, 1], max_epochs=3)
    assert seen == [[], ["last_checkpoint_epoch=1.pt"], ["last_checkpoint_epoch=2.pt"]]
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["last_checkpoint_epoch=3.pt"]


def _trained_objects():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)

    def step(engine, batch):
        optimizer.zero_grad()
        loss = net(torch.randn(2, 1, 8, 8)).square().mean()
        loss.backward()
        optimizer.step()
        return loss.item()

    trainer, evaluator = Engine(step), Engine(lambda e, b: None)
    evaluator.state.best_metric, evaluator.state.best_metric_epoch = 0.75, 2
    best = SafeCheckpointSaver(save_dir="/nonexistent-never-written", save_dict={"network": net},
                               save_key_metric=True, key_metric_name="score", key_metric_filename="model.pt")
    best._key_metric_checkpoint._saved = [best._key_metric_checkpoint.Item(0.75, "model.pt")]
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)  # as SupervisedTrainer(amp=True) has on CUDA
    resume_state = ResumeState(evaluator=evaluator, saver=best, scaler=scaler)
    return {"network": net, "optimizer": optimizer, "lr_scheduler": scheduler, "trainer": trainer,
            "resume_state": resume_state}


def test_training_checkpoints_load_with_weights_only(tmp_path):
    """Every entry the bundle puts in a training checkpoint (network, AdamW, cosine scheduler, trainer, resume state
    with the AMP scaler) survives ``torch.load(weights_only=True)`` and is restored by ``SafeCheckpointLoader``."""
    objs = _trained_objects()
    saver = SafeCheckpointSaver(save_dir=str(tmp_path), save_dict=objs, save_final=True, final_filename="last.pt")
    saver.attach(objs["trainer"])
    objs["trainer"].run([0, 1], max_epochs=2)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert set(ckpt) == {"network", "optimizer", "lr_scheduler", "trainer", "resume_state"}
    assert ckpt["resume_state"] == {"best_metric": 0.75, "best_metric_epoch": 2,
                                    "saver": {"_saved": [(0.75, "model.pt")]},
                                    "scaler": {"scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                               "growth_interval": 2000, "_growth_tracker": 0}}

    fresh = _trained_objects()
    fresh["resume_state"].evaluator.state.best_metric = -1
    fresh["resume_state"].saver._key_metric_checkpoint._saved = []
    fresh["resume_state"].scaler = torch.amp.GradScaler("cpu")
    trainer = fresh["trainer"]
    SafeCheckpointLoader(load_path=str(tmp_path / "last.pt"), load_dict=fresh).attach(trainer)
    trainer.run([0, 1], max_epochs=3)
    assert trainer.state.epoch == 3 and trainer.state.iteration == 6  # continued from epoch 2
    assert fresh["resume_state"].evaluator.state.best_metric == 0.75
    assert [tuple(i) for i in fresh["resume_state"].saver._key_metric_checkpoint._saved] == [(0.75, "model.pt")]
    assert fresh["resume_state"].scaler.get_scale() == 1024.0


class _Boom:
    """A pickle that runs code when loaded the unsafe way."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.touch, (self.sentinel,))


@pytest.mark.parametrize(
    "write,fragment",
    [
        (None, "checkpoint not found"),
        (lambda p, s: p.write_bytes(b""), "checkpoint file is empty (0 bytes)"),
        (lambda p, s: p.write_bytes(b"not a zip file at all"), "not a readable PyTorch checkpoint"),
        (lambda p, s: (torch.save({"network": torch.nn.Linear(2, 2).state_dict()}, p),
                       p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])), "not a readable PyTorch checkpoint"),
        (lambda p, s: p.write_bytes(pickle.dumps({"network": _Boom(s)})), "or a pickle of arbitrary Python objects"),
        (lambda p, s: torch.save({"network": {"weight": torch.zeros(3)}, "x": _Boom(s)}, p), "refused to load"),
        (lambda p, s: torch.save({"network": torch.nn.Linear(3, 2).state_dict()}, p), "shape mismatch"),
        (lambda p, s: torch.save({"network": torch.nn.Conv1d(2, 2, 1).state_dict(), "extra": 1}, p),
         "does not fit the network 'network' (Linear)"),
        (lambda p, s: torch.save({"model": torch.nn.Linear(2, 2).state_dict(), "opt": {}}, p),
         "checkpoint has no 'network' entry"),
    ],
    ids=["missing", "empty", "garbage", "truncated", "pickle-with-code", "torch-save-with-code", "other-shape",
         "other-network", "no-network-entry"],
)
def test_safe_loader_names_the_file_and_the_problem(write, fragment, tmp_path):
    path, sentinel = tmp_path / "last.pt", tmp_path / "code_ran"
    if write is not None:
        write(path, sentinel)
    loader = SafeCheckpointLoader(load_path=str(path), load_dict={"network": torch.nn.Linear(2, 2),
                                                                  "optimizer": torch.optim.SGD([torch.zeros(1)], 0.1)})
    engine = Engine(lambda e, b: None)
    loader.attach(engine)
    with pytest.raises(DataError) as info:
        engine.run([0], max_epochs=1)
    assert str(path) in str(info.value) and fragment in str(info.value)
    assert not sentinel.exists()  # nothing from the file was executed


def test_old_checkpoints_without_resume_state_still_resume(tmp_path, caplog):
    net = torch.nn.Linear(2, 2)
    torch.save({"network": net.state_dict()}, tmp_path / "last.pt")
    engine = Engine(lambda e, b: None)
    SafeCheckpointLoader(load_path=str(tmp_path / "last.pt"),
                         load_dict={"network": torch.nn.Linear(2, 2), "resume_state": ResumeState()}).attach(engine)
    engine.add_event_handler(Events.STARTED, lambda e: None)
    engine.run([0], max_epochs=1)
    assert "no resume_state in the checkpoint" in caplog.text


def test_monai_checkpoint_loader_also_refuses_pickled_code(tmp_path):
    """MONAI 1.6.1's stock CheckpointLoader (still used by evaluate.yaml) loads with weights_only=True too: a
    checkpoint holding a pickled call is refused and the call never runs."""
    import inspect

    from monai.handlers import CheckpointLoader

    assert "weights_only=True" in inspect.getsource(CheckpointLoader.__call__)
    sentinel = tmp_path / "code_ran"
    torch.save({"network": _Boom(sentinel)}, tmp_path / "model.pt")
    engine = Engine(lambda e, b: None)
    CheckpointLoader(load_path=str(tmp_path / "model.pt"), load_dict={"network": torch.nn.Linear(2, 2)}).attach(engine)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        engine.run([0], max_epochs=1)
    assert not sentinel.exists()
