"""``python -m tests.reliability.save_loop DIR MB``: save checkpoints of about MB megabytes into DIR through
``SafeCheckpointSaver``, endlessly (the iteration checkpoints rotate with ``n_saved=1``, ``model.pt`` is rewritten
at the end of every epoch), for the test that SIGKILLs it at random moments. Every tensor of a checkpoint holds one
value, the iteration count, so a reader can tell a consistent file from a mixed one."""

from __future__ import annotations

import sys

import torch
from ignite.engine import Engine, Events

from pipeline.handlers import SafeCheckpointSaver


def main(folder: str, megabytes: float) -> None:
    n = int(megabytes * 2**20 / 4 / 4)
    net = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(n)) for _ in range(4)])

    def step(engine, batch):
        with torch.no_grad():
            for p in net:
                p.fill_(float(engine.state.iteration))
        return 0.0

    engine = Engine(step)

    @engine.on(Events.EPOCH_COMPLETED)
    def _score(engine):  # a score that always improves, so the best-model file is rewritten every epoch
        engine.state.metrics["score"] = float(engine.state.iteration)

    # iteration checkpoints, rotated with n_saved=1 (the new file is written before the old one goes)
    SafeCheckpointSaver(save_dir=folder, save_dict={"network": net, "trainer": engine}, save_interval=1,
                        epoch_level=False, n_saved=1, file_prefix="last").attach(engine)
    # a fixed file name rewritten in place, like model.pt and last.pt
    SafeCheckpointSaver(save_dir=folder, save_dict={"network": net}, save_key_metric=True, key_metric_name="score",
                        key_metric_filename="model.pt").attach(engine)
    engine.run(range(3), max_epochs=10**9)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
