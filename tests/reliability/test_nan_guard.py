"""NaN/Inf guard: a loss that turns NaN stops training with a message naming the epoch and iteration, and the last good
checkpoint is kept (the NaN weights are never saved)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from ignite.engine import Engine, Events

from pipeline.handlers import NanGuard, NonFiniteLossError, SafeCheckpointSaver
from tests.integration.conftest import US_BUNDLE
from tests.integration.test_bundles import run_workflow


def _chain(error: BaseException) -> list[BaseException]:
    chain = []
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def _finite(path) -> bool:
    ckpt = torch.load(path, weights_only=True)
    weights = ckpt["network"] if "network" in ckpt else ckpt
    return all(bool(torch.isfinite(t).all()) for t in weights.values() if t.is_floating_point())


@pytest.mark.slow
def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(small_datalist, small_preset, tmp_path):
    out = tmp_path / "run"
    common = dict(datalist=str(small_datalist), preset=str(small_preset), output_dir=str(out), use_mlflow=False)
    run_workflow(US_BUNDLE, "training", epochs=1, **common)  # a good run: last.pt of epoch 1
    models = out / "models"
    good = (models / "last.pt").read_bytes()

    # continue to 3 epochs; the 2nd loss of the resumed run (epoch 2, iteration 4, batch 2 of 2) is NaN
    with pytest.raises(RuntimeError) as info:  # MONAI wraps errors of config expressions; ours is the cause
        run_workflow(US_BUNDLE, "training", epochs=3, **common,
                     **{"loss#_target_": "tests.reliability.helpers.NanAtCallLoss", "loss#nan_at_call": 2})
    errors = [e for e in _chain(info.value) if isinstance(e, NonFiniteLossError)]
    assert errors, [str(e)[:200] for e in _chain(info.value)]
    message = str(errors[0])
    assert "non-finite training loss (nan) at epoch 2, iteration 4 (batch 2 of 2 in the epoch)" in message
    assert "last good checkpoint is" in message and "last.pt" in message
    assert "Images of the batch:" in message and ".png" in message

    assert (models / "last.pt").read_bytes() == good  # not overwritten by the NaN weights
    assert _finite(models / "last.pt") and _finite(models / "model.pt")
    assert not list(models.glob("last_checkpoint_epoch=2.pt"))
    assert pd.read_csv(out / "history.csv")["epoch"].tolist() == [1]


def _engine():
    def step(engine, batch):
        return [{"loss": torch.tensor(float(batch))}]

    return Engine(step)


def test_guard_and_saver_on_a_plain_engine(tmp_path):
    """Unit level: the guard names epoch/iteration, the saver writes no epoch/final checkpoint for NaN weights."""
    net = torch.nn.Linear(2, 2)
    engine = _engine()
    guard = NanGuard(ckpt_dir=tmp_path)
    guard.attach(engine)
    saver = SafeCheckpointSaver(save_dir=str(tmp_path), save_dict={"network": net}, save_final=True,
                                final_filename="last.pt", save_interval=1, n_saved=1, file_prefix="last")
    saver.attach(engine)

    @engine.on(Events.ITERATION_COMPLETED)
    def _poison(e):
        if e.state.iteration == 5:
            with torch.no_grad():
                net.weight.fill_(math.nan)

    engine.run([1.0, 2.0, 3.0], max_epochs=1)  # epoch 1: finite, saved
    assert (tmp_path / "last.pt").is_file()
    first = (tmp_path / "last.pt").read_bytes()
    engine.run([1.0, float("nan"), 3.0], max_epochs=3)  # epoch 2, iteration 5: NaN loss and NaN weights
    assert engine.state.epoch == 2 and engine.state.iteration == 5
    assert "at epoch 2, iteration 5 (batch 2 of 3 in the epoch)" in guard.message
    with pytest.raises(NonFiniteLossError):
        guard.raise_if_tripped()
    assert (tmp_path / "last.pt").read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "last_network_epoch=1.pt"]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)

    def step(engine, batch):
        bad = rank == 1 and engine.state.iteration == 3  # only process 1 sees a NaN loss
        return [{"loss": torch.tensor(float("nan") if bad else 1.0)}]

    engine = Engine(step)
    guard = NanGuard()
    guard.attach(engine)
    engine.run(range(4), max_epochs=3)
    (Path(out_dir) / f"{rank}.txt").write_text(f"{engine.state.iteration}|{guard.message}")
    dist.destroy_process_group()


def test_guard_stops_every_ddp_process_at_the_same_iteration(tmp_path):
    """Two gloo processes: a NaN on process 1 stops both at iteration 3 (no hang in the next all-reduce)."""
    import socket
    import time

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.start_processes(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=False,
                                 start_method="fork")
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the processes hang: one stopped on NaN, the other waits in the next all-reduce")
    results = {rank: (tmp_path / f"{rank}.txt").read_text().split("|", 1) for rank in (0, 1)}
    assert results[0][0] == results[1][0] == "3"
    assert "(nan) at epoch 1, iteration 3" in results[1][1]
    assert "(on another process) at epoch 1, iteration 3" in results[0][1]
