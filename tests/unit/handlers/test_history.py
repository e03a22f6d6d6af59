from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from ignite.engine import Engine, Events

from pipeline.handlers import TrainingHistory
from tests.unit.test_plots import assert_nontrivial_png

LOSSES = [[1.0, 0.8, 0.6], [0.5, 0.4, 0.3], [0.3, 0.2, 0.1], [0.2, 0.2, 0.2]]


def _trainer(optimizer):
    def step(engine, batch):
        e, i = engine.state.epoch - 1, (engine.state.iteration - 1) % 3
        loss = torch.tensor(LOSSES[e][i])
        return [{"loss": loss, "pred": torch.zeros(2)}, {"loss": loss, "pred": torch.zeros(2)}]  # decollated

    return Engine(step)


def _validator():
    def step(engine, batch):
        return {}

    validator = Engine(step)

    @validator.on(Events.EPOCH_COMPLETED)
    def _metrics(engine):
        engine.state.metrics = {"val_mean_dice": 0.1 * len(_metrics.calls) + 0.5, "val_auc": 0.7,
                                "confusion": [[1, 0], [0, 1]], "epoch": 99.0}
        _metrics.calls.append(1)

    _metrics.calls = []
    return validator


def _run_validation_every_2(trainer, validator):
    @trainer.on(Events.EPOCH_COMPLETED(every=2))
    def _validate(engine):
        validator.run([0, 1], max_epochs=1)


@pytest.mark.parametrize("history_first", [True, False])
def test_history_rows_csv_and_plot(tmp_path, history_first):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    trainer, validator = _trainer(optimizer), _validator()
    history = TrainingHistory(tmp_path, validator=validator, optimizer=optimizer)
    if history_first:  # the history row is written before the validation of the epoch runs
        history.attach(trainer)
        _run_validation_every_2(trainer, validator)
    else:
        _run_validation_every_2(trainer, validator)
        history.attach(trainer)

    @trainer.on(Events.EPOCH_COMPLETED)  # a step scheduler, registered after the history records the lr
    def _decay(engine):
        optimizer.param_groups[0]["lr"] *= 0.5

    trainer.run(range(3), max_epochs=4)

    assert [r["epoch"] for r in history.rows] == [1, 2, 3, 4]
    df = pd.read_csv(tmp_path / "history.csv")
    assert df["epoch"].tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(df["train_loss"], [np.mean(x) for x in LOSSES], atol=1e-6)
    assert df["lr"].tolist() == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    assert math.isnan(df["val_mean_dice"][0]) and math.isnan(df["val_mean_dice"][2])
    assert df["val_mean_dice"][1] == pytest.approx(0.5) and df["val_mean_dice"][3] == pytest.approx(0.6)
    assert df["val_auc"][3] == pytest.approx(0.7)
    assert "confusion" not in df  # non-scalar metrics are left out
    assert df["val_epoch"][1] == 99.0  # a metric named like a history column is renamed
    assert_nontrivial_png(tmp_path / "learning_curves.png")


def test_history_without_validator_or_optimizer(tmp_path):
    trainer = _trainer(None)
    history = TrainingHistory(tmp_path)
    history.attach(trainer)
    trainer.run(range(3), max_epochs=2)
    df = pd.read_csv(tmp_path / "history.csv")
    assert list(df.columns) == ["epoch", "train_loss", "lr", "epoch_seconds"] and len(df) == 2
    assert df["lr"].isna().all()
    assert (df["epoch_seconds"] >= 0).all()
    assert (tmp_path / "learning_curves.png").exists()


def test_history_keeps_earlier_rows_on_resume(tmp_path):
    first = _trainer(None)
    TrainingHistory(tmp_path).attach(first)
    first.run(range(3), max_epochs=2)

    resumed = _trainer(None)
    history = TrainingHistory(tmp_path)
    history.attach(resumed)
    resumed.load_state_dict({"epoch": 2, "max_epochs": 2, "epoch_length": 3})
    resumed.run(range(3), max_epochs=4)
    assert pd.read_csv(tmp_path / "history.csv")["epoch"].tolist() == [1, 2, 3, 4]

    fresh = _trainer(None)  # a new run in the same folder starts a new history
    TrainingHistory(tmp_path).attach(fresh)
    fresh.run(range(3), max_epochs=1)
    assert pd.read_csv(tmp_path / "history.csv")["epoch"].tolist() == [1]


def test_history_csv_is_replaced_atomically(tmp_path, kill_before_rename):
    """A kill between writing the new table and renaming it keeps the previous complete history.csv."""
    first = _trainer(None)
    TrainingHistory(tmp_path).attach(first)
    first.run(range(3), max_epochs=2)
    before = (tmp_path / "history.csv").read_bytes()

    kill_before_rename()  # every rename
    fresh = _trainer(None)  # a new run in the same folder rewrites the history at its first epoch
    TrainingHistory(tmp_path).attach(fresh)
    with pytest.raises(OSError, match="killed before the rename"):
        fresh.run(range(3), max_epochs=1)
    assert (tmp_path / "history.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.csv", "learning_curves.png"]  # no temporary
