"""MLflow helpers for the bundles: flattened parameters and end-of-run artifacts."""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.atomic import write_json_atomic

__all__ = ["flatten_params", "find_run", "log_artifacts", "write_run_config", "git_commit", "provenance",
           "MAX_PARAM_LENGTH"]

MAX_PARAM_LENGTH = 500


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested dicts into ``{"a.b.c": "value"}`` strings, as MLflow parameters are flat strings."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_LENGTH]
    return flat


def find_run(tracking_uri: str, experiment_name: str, run_name: str) -> str | None:
    """The id of the latest run named ``run_name`` in ``experiment_name``; None when there is none."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"attributes.run_name = '{run_name}'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    return runs[0].info.run_id if runs else None


def log_artifacts(tracking_uri: str, experiment_name: str, run_name: str, paths: Sequence[str]) -> int:
    """Log the existing files of ``paths`` to the latest run named ``run_name``; returns how many were logged.

    MONAI's ``MLFlowHandler`` logs artifacts when its engine completes; the plots, history and best checkpoint are
    written by other handlers after that, so the bundle's ``finalize`` step logs them here.
    """
    from mlflow.tracking import MlflowClient

    run_id = find_run(tracking_uri, experiment_name, run_name)
    if run_id is None:
        return 0
    client = MlflowClient(tracking_uri=tracking_uri)
    logged = 0
    for path in paths:
        if os.path.isfile(path):
            client.log_artifact(run_id, path)
            logged += 1
    return logged


def git_commit(repo: str | os.PathLike | None = None) -> str:
    """Short commit of the repository (this package's by default), ``-dirty`` appended when tracked files have
    uncommitted changes; ``"unknown"`` outside a git checkout."""
    import subprocess

    repo = Path(repo) if repo else Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, text=True, capture_output=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, text=True,
                               capture_output=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance() -> dict[str, str]:
    """What produced a run, for its MLflow parameters: the git commit of the code (``git_commit``) and the versions
    of the libraries that decide the numbers. MLflow records the commit only for MLflow Projects, and a bundle run is
    not one."""
    import importlib.metadata

    versions = {}
    for package in ("breast-mtl", "monai", "torch", "pytorch-ignite", "mlflow"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {"git_commit": git_commit(), **{f"version.{k}": v for k, v in versions.items()}}


def write_run_config(output_dir: str | os.PathLike, run_config: Mapping[str, Any]) -> str:
    """Write ``run_config.json`` (network, preset, classes, sizes of a training run) into ``output_dir``, so the run
    can be exported and served without its datalist. Returns the path."""
    path = os.path.join(output_dir, "run_config.json")
    write_json_atomic(path, dict(run_config), default=str)  # export reads it: never a partial file
    return path
