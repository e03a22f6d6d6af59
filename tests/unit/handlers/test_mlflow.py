"""``ResumableMLFlowHandler``: a run resumed with a changed parameter (a new git commit) keeps going."""

from __future__ import annotations

import logging

from ignite.engine import Engine
from mlflow.tracking import MlflowClient

from pipeline.handlers import ResumableMLFlowHandler


def _start(uri: str, params: dict) -> ResumableMLFlowHandler:
    handler = ResumableMLFlowHandler(tracking_uri=uri, experiment_name="exp", run_name="train",
                                     experiment_param=params, iteration_log=False, epoch_log=False)
    handler.start(Engine(lambda engine, batch: None))
    return handler


def test_resumed_run_keeps_first_params_and_tags_changed_ones(tmp_path, caplog):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    first = _start(uri, {"git_commit": "aaa1111", "seed": "0"})   # interrupted: the run stays unfinished
    with caplog.at_level(logging.WARNING, logger="pipeline.handlers.mlflow"):
        resumed = _start(uri, {"git_commit": "bbb2222", "seed": "0", "fold": "1"})
    assert resumed.cur_run.info.run_id == first.cur_run.info.run_id   # MONAI resumed the same run
    run = MlflowClient(tracking_uri=uri).get_run(first.cur_run.info.run_id)
    params = {k: run.data.params.get(k) for k in ("git_commit", "seed", "fold")}
    assert params == {"git_commit": "aaa1111", "seed": "0", "fold": "1"}   # first values kept, new ones added
    assert run.data.tags["resumed.git_commit"] == "bbb2222"
    assert "resumed.seed" not in run.data.tags
    assert "git_commit=bbb2222" in caplog.text
    resumed.complete()
    resumed.close()


def test_a_finished_run_is_not_resumed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    first = _start(uri, {"git_commit": "aaa1111"})
    first_id = first.cur_run.info.run_id
    first.complete()
    first.close()
    second = _start(uri, {"git_commit": "bbb2222"})
    assert second.cur_run.info.run_id != first_id
    assert MlflowClient(tracking_uri=uri).get_run(second.cur_run.info.run_id).data.params["git_commit"] == "bbb2222"
    second.close()


def test_an_evaluation_is_nested_under_the_training_run_it_names(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    training = _start(uri, {"seed": "0"})
    evaluation = ResumableMLFlowHandler(tracking_uri=uri, experiment_name="exp", run_name="train_eval_val",
                                        parent_run_name="train", iteration_log=False, epoch_log=False)
    evaluation.start(Engine(lambda engine, batch: None))
    orphan = ResumableMLFlowHandler(tracking_uri=uri, experiment_name="exp", run_name="other_eval_val",
                                    parent_run_name="other", iteration_log=False, epoch_log=False)
    orphan.start(Engine(lambda engine, batch: None))
    client = MlflowClient(tracking_uri=uri)
    tags = client.get_run(evaluation.cur_run.info.run_id).data.tags
    assert tags["mlflow.parentRunId"] == training.cur_run.info.run_id
    assert "mlflow.parentRunId" not in client.get_run(orphan.cur_run.info.run_id).data.tags   # no such training run
