"""MONAI's ``MLFlowHandler`` for runs that resume an interrupted one, and for evaluations nested under the training
run they evaluate."""

from __future__ import annotations

import logging
from typing import Any

from monai.handlers import MLFlowHandler

__all__ = ["ResumableMLFlowHandler"]

logger = logging.getLogger(__name__)


class ResumableMLFlowHandler(MLFlowHandler):
    """``monai.handlers.MLFlowHandler`` that can log its parameters again into the run it resumes.

    MONAI resumes the unfinished MLflow run of the same ``run_name`` (an interrupted training) and logs
    ``experiment_param`` into it again; MLflow refuses a parameter whose value changed, so a training resumed after
    the code was updated (a new ``git_commit``) or a library upgraded stopped at its first iteration. Here a parameter
    already logged with the same value is skipped, and a changed one keeps its first value (what started the run)
    while the new value is recorded as the tag ``resumed.<name>``, with a warning.

    With ``parent_run_name`` (the evaluation of a training run), the run is tagged ``mlflow.parentRunId`` with the
    latest run of that name in the same experiment, so MLflow's UI shows each evaluation under the training it
    evaluates; without such a run it stays top-level. Everything else is MONAI's.

    Args:
        parent_run_name: the name of the run to nest this one under (None: top-level).
        kwargs: ``monai.handlers.MLFlowHandler``'s.
    """

    def __init__(self, *args: Any, parent_run_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parent_run_name = parent_run_name

    def start(self, engine: Any) -> None:
        super().start(engine)
        if self.parent_run_name is None or self.cur_run is None or self.parent_run_name == self.run_name:
            return
        parents = self.client.search_runs(
            [self.experiment.experiment_id], filter_string=f"attributes.run_name = '{self.parent_run_name}'",
            order_by=["attributes.start_time DESC"], max_results=1)
        if parents:
            self.client.set_tag(self.cur_run.info.run_id, "mlflow.parentRunId", parents[0].info.run_id)

    def _log_params(self, params: dict[str, Any]) -> None:
        if self.cur_run is not None and params:
            run_id = self.cur_run.info.run_id
            logged = self.client.get_run(run_id).data.params
            changed = {k: str(v) for k, v in params.items() if k in logged and logged[k] != str(v)}
            for key, value in changed.items():
                logger.warning("MLflow run %s resumed with %s=%s (it started with %s): kept as tag resumed.%s",
                               run_id, key, value, logged[key], key)
                self.client.set_tag(run_id, f"resumed.{key}", value)
            params = {k: v for k, v in params.items() if k not in logged}
            if not params:
                return
        super()._log_params(params)
