"""``TimeBudget``: stops before an epoch that would not fit, stretches the schedule, resumes with its clock."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine
from monai.optimizers import WarmupCosineSchedule

from pipeline.handlers import TimeBudget
from pipeline.handlers import budget as budget_module


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(budget_module.time, "perf_counter", fake)
    return fake


def _engine(clock, seconds_per_iteration=10.0):
    def step(engine, batch):
        clock.now += seconds_per_iteration

    return Engine(step)


def test_stops_before_the_epoch_that_would_not_fit(clock):
    engine = _engine(clock)  # 4 iterations of 10 s: 40 s per epoch
    budget = TimeBudget(minutes=3)  # 180 s: 4 epochs fit (160 s), a 5th would end at 200 s
    budget.attach(engine)
    engine.run(range(4), max_epochs=100)
    assert engine.state.epoch == 4
    assert budget.elapsed == pytest.approx(160) and budget.epochs_done == 4


def test_max_epochs_stays_an_upper_bound(clock):
    engine = _engine(clock)
    TimeBudget(minutes=60).attach(engine)
    engine.run(range(4), max_epochs=3)
    assert engine.state.epoch == 3


def test_disabled_budget_only_counts(clock):
    engine = _engine(clock)
    budget = TimeBudget(minutes=0)
    budget.attach(engine)
    engine.run(range(4), max_epochs=6)
    assert engine.state.epoch == 6 and budget.elapsed == pytest.approx(240) and not budget.enabled


def test_schedule_follows_the_budget(clock):
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    sched = WarmupCosineSchedule(opt, warmup_steps=4, t_total=4 * 100)
    engine = _engine(clock)

    @engine.on(budget_module.Events.ITERATION_COMPLETED)
    def _step(_):
        opt.step()
        sched.step()

    TimeBudget(minutes=3, scheduler=sched).attach(engine)
    engine.run(range(4), max_epochs=100)
    assert sched.t_total == 16  # 4 epochs of 4 steps fit the budget: the cosine ends with the last of them
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-6)


def test_resume_keeps_the_clock(clock):
    engine = _engine(clock)
    budget = TimeBudget(minutes=3)
    budget.attach(engine)
    engine.run(range(4), max_epochs=2)  # interrupted after 2 epochs (80 s)
    state = budget.state_dict()
    resumed = TimeBudget(minutes=3)
    resumed.load_state_dict(state)
    engine2 = _engine(clock)
    resumed.attach(engine2)
    engine2.run(range(4), max_epochs=100)
    assert resumed.epochs_done == 4 and resumed.elapsed == pytest.approx(160)  # 2 more epochs, as uninterrupted
    spent = TimeBudget(minutes=1)
    spent.load_state_dict({"elapsed": 90.0, "epochs_done": 2})
    engine3 = _engine(clock)
    spent.attach(engine3)
    engine3.run(range(4), max_epochs=100)
    assert engine3.state.iteration == 0  # the budget was already spent: nothing trains


@pytest.mark.parametrize("minutes", [float("nan"), float("inf")])
def test_bad_minutes(minutes):
    with pytest.raises(ValueError, match="minutes must be a finite number"):
        TimeBudget(minutes=minutes)
