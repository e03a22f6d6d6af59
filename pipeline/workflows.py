"""Running the bundles from Python: one training run, its evaluation on one or several datasets (cross-validation
and the comparison of its results: ``pipeline.cross_validation``).

Each bundle run is ``python -m monai.bundle run <workflow> ...`` in a child process, exactly the command a user
types, so the CLI, the demo and the benchmarks exercise the same path as the README.
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.atomic import write_csv_atomic, write_json_atomic, write_text_atomic
from pipeline.resources import resource_dir

__all__ = [
    "bundles_dir",
    "WORKFLOWS",
    "default_bundle",
    "train_run",
    "evaluate_run",
    "evaluate_datasets",
    "evaluate_bundle",
    "bundle_command",
    "bundle_config_files",
    "RECORDED_NETWORK_KEYS",
    "run_bundle",
]


def bundles_dir() -> Path:
    """The project's bundles/ folder, looked up on use (as the presets' configs/): code that imports this module
    without the project's folders beside it (an MLflow model's copy of ``pipeline/``) still imports."""
    return resource_dir("bundles")


BUNDLE_FOR_MODALITY = {"US": "breast_us_mtl", "MR": "breast_mri_mtl"}
# the run_config.json values that rebuild a run's network and its input as trained (whatever preset made them)
RECORDED_NETWORK_KEYS = ("network_name", "network_kwargs", "extra_input_channels", "circle_training", "aux_targets",
                         "image_size")
TRAIN_ARGS = "train_args.json"   # how `train_run` made a run: bundle and overrides, reused by `evaluate_run`
# workflow -> (run id, config files after common.yaml)
WORKFLOWS = {
    "training": ("training", ["train.yaml"]),
    "evaluating": ("evaluating", ["evaluate.yaml"]),
    "inferring": ("inferring", ["inference.yaml"]),
}


def _format_override(value: Any) -> str:
    """A value as Python Fire (MONAI's command line) reads it back: a Python literal for booleans, None and
    containers (Fire reads JSON's true/false/null as the strings "true"/"false"/"null")."""
    if isinstance(value, (bool, list, tuple, dict)) or value is None:
        return repr(value)
    return str(value)


def bundle_config_files(
    bundle_dir: str | os.PathLike, workflow: str, overrides: Mapping[str, Any] | None = None,
    extra_configs: Sequence[str] = (),
) -> tuple[list[str], dict[str, Any]]:
    """The config files of ``workflow`` for the bundle in ``bundle_dir``, and the overrides left to pass on.

    A ``preset`` override names a preset (``configs/<name>.yaml`` or a file), a MONAI config fragment: it is merged as
    one more config file after the workflow's (``configs/README.md``), not passed on. Given together with
    ``preset_merged``, ``preset`` is only the name and the other overrides hold the values (a run's record).

    Raises:
        ValueError: unknown ``workflow``; a preset in the nested layout of before 2026-12-02.
        FileNotFoundError: ``bundle_dir`` has no ``configs/common.yaml``.
        KeyError: unknown preset.
    """
    if workflow not in WORKFLOWS:
        raise ValueError(f"workflow must be one of {list(WORKFLOWS)}, got {workflow!r}")
    configs = Path(bundle_dir).resolve() / "configs"
    if not (configs / "common.yaml").is_file():
        raise FileNotFoundError(f"{configs.parent}: not a bundle folder (no configs/common.yaml)")
    overrides = dict(overrides or {})
    fragment = []
    if "preset" in overrides and "preset_merged" not in overrides:
        from pipeline.presets import fragment_path

        fragment = [str(fragment_path(overrides.pop("preset")))]   # a bad preset is named here, not in the child's log
    files = [str(configs / "common.yaml"), *(str(configs / f) for f in WORKFLOWS[workflow][1]), *fragment,
             *extra_configs]
    return files, overrides


def bundle_command(
    bundle_dir: str | os.PathLike, workflow: str, overrides: Mapping[str, Any] | None = None,
    extra_configs: Sequence[str] = (),
) -> list[str]:
    """The ``python -m monai.bundle run`` command line of ``workflow`` for the bundle in ``bundle_dir`` (config files,
    overrides and errors: :func:`bundle_config_files`)."""
    config_files, overrides = bundle_config_files(bundle_dir, workflow, overrides, extra_configs)
    bundle = Path(bundle_dir).resolve()
    configs = bundle / "configs"
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", WORKFLOWS[workflow][0],
        "--meta_file", str(configs / "metadata.json"),
        "--config_file", json.dumps(config_files),
        "--logging_file", str(configs / "logging.conf"),
        "--bundle_root", str(bundle),
    ]
    for key, value in overrides.items():
        cmd += [f"--{key}", _format_override(value)]
    return cmd


def run_bundle(
    bundle_dir: str | os.PathLike, workflow: str, overrides: Mapping[str, Any] | None = None,
    log_file: str | os.PathLike | None = None, quiet: bool | None = None, extra_configs: Sequence[str] = (),
) -> float:
    """Run one bundle workflow in a child process; returns the wall time in seconds.

    Args:
        bundle_dir: the bundle folder.
        workflow: a key of ``WORKFLOWS``.
        overrides: bundle values (``--key value`` of ``monai.bundle run``).
        log_file: the child's output is written here as it comes (the folder is created).
        quiet: do not echo the child's output on the console (it still goes to ``log_file``); default: quiet when
            there is a log file.
        extra_configs: config files merged after the workflow's (``configs/deploy.yaml`` of an exported bundle).

    Raises:
        RuntimeError: the run failed; the message gives the command and the end of its log.
    """
    cmd = bundle_command(bundle_dir, workflow, overrides, extra_configs)
    quiet = log_file is not None if quiet is None else quiet
    start = time.perf_counter()
    if log_file is None and not quiet:
        result = subprocess.run(cmd, text=True)
        tail = ""
    else:
        log = None
        if log_file is not None:
            Path(log_file).parent.mkdir(parents=True, exist_ok=True)
            log = open(log_file, "w", encoding="utf-8")
        tail_lines: collections.deque[str] = collections.deque(maxlen=60)
        try:
            # streamed, not collected: the log shows a long training's progress while it runs
            with subprocess.Popen(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1) as child:
                for line in child.stdout:
                    tail_lines.append(line)
                    if log is not None:
                        log.write(line)
                        log.flush()
                    if not quiet:
                        sys.stdout.write(line)
                        sys.stdout.flush()
            result = child
        finally:
            if log is not None:
                log.close()
        tail = "".join(tail_lines)[-4000:]
    if result.returncode != 0:
        raise RuntimeError(f"bundle {workflow} failed (exit {result.returncode}): {' '.join(cmd)}\n{tail}")
    return time.perf_counter() - start


def default_bundle(datalist: str | os.PathLike) -> Path:
    """The project's bundle for the modality of ``datalist`` (US: breast_us_mtl, MR: breast_mri_mtl).

    Raises:
        DataError: ``datalist`` is missing or invalid.
    """
    from pipeline.data.datalist import load_datalist

    return bundles_dir() / BUNDLE_FOR_MODALITY[load_datalist(datalist)["modality"]]


def train_run(
    datalist: str | os.PathLike, output_dir: str | os.PathLike, bundle_dir: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None, quiet: bool = False,
) -> Path:
    """Train one run with the bundle's ``training`` workflow into ``output_dir`` (log: ``train.log``).

    ``train_args.json`` records the bundle and the overrides, so that :func:`evaluate_run` scores the run with the same
    values (image size, post-processing, ...) without the user repeating them.

    Args:
        datalist: the prepared ``datalist.json``.
        output_dir: the run folder (checkpoints, ``history.csv``, ``run_config.json``); a run already there resumes.
        bundle_dir: the bundle (default: the project's bundle for the datalist's modality).
        overrides: further bundle values, e.g. ``{"fold": 1, "budget_minutes": 20}``.
        quiet: keep the training output in ``train.log`` only.

    Returns:
        the run folder.
    """
    from pipeline.data.datalist import load_datalist

    datalist = Path(datalist).resolve()
    load_datalist(datalist)   # a missing or invalid datalist is named before anything is created
    bundle = Path(bundle_dir).resolve() if bundle_dir else default_bundle(datalist)
    output = Path(output_dir).resolve()
    values = {"datalist": str(datalist), "output_dir": str(output), "run_name": output.name, **(overrides or {})}
    output.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output / TRAIN_ARGS, {"bundle": str(bundle), "overrides": values})
    run_bundle(bundle, "training", values, log_file=output / "train.log", quiet=quiet)
    return output


def _run_values(run: Path) -> tuple[Path, dict[str, Any]]:
    """The bundle and the values a run was trained with: its ``train_args.json`` (``bmtl train``), else what its
    ``run_config.json`` records (runs trained with ``python -m monai.bundle run training``)."""
    if (run / TRAIN_ARGS).is_file():
        record = json.loads((run / TRAIN_ARGS).read_text())
        return Path(record["bundle"]), dict(record["overrides"])
    if (run / "run_config.json").is_file():
        config = json.loads((run / "run_config.json").read_text())
        # the values that change what the network sees or how its output becomes a mask, as the run was trained
        values = {k: config[k] for k in (*RECORDED_NETWORK_KEYS, "preset", "datalist", "fold", "seed",
                                         "seg_threshold", "keep_aspect") if k in config}
        if "preset" in values:   # the recorded values, not a preset file (pipeline.workflows.bundle_config_files)
            from pipeline.presets import preset_name

            values["preset_merged"] = values["preset"] = preset_name(values["preset"])
        values["resize_mode"] = config.get("resize_mode", "area")   # runs from before resize_mode used area
        return bundles_dir() / config["bundle"], values
    raise FileNotFoundError(f"{run}: neither {TRAIN_ARGS} nor run_config.json; not a run of this project")


def _evaluation_values(run: Path) -> tuple[Path, dict[str, Any]]:
    """:func:`_run_values` and the MLflow names the run was tracked under (``run_config.json``'s ``mlflow``), so that
    an evaluation nests under its training run whatever that run was called (``python -m monai.bundle run`` names it
    ``<preset>_fold<k>``, the demo ``demo_us_fold0``); the folder's name for runs that record none."""
    bundle, values = _run_values(run)
    config = run / "run_config.json"
    tracked = (json.loads(config.read_text()).get("mlflow") or {}) if config.is_file() else {}
    for key in ("experiment_name", "run_name"):   # not the store: a moved run folder keeps its own mlruns.db
        if tracked.get(key):
            values.setdefault(key, tracked[key])
    values.setdefault("run_name", run.name)
    return bundle, values


def _dataset_name(info: Mapping[str, Any]) -> str:
    """A datalist's name as it goes into metric and folder names (``external_<name>_``)."""
    return re.sub(r"[^A-Za-z0-9]+", "_", str(info.get("name", ""))).strip("_").lower() or "dataset"


def evaluate_run(
    run_dir: str | os.PathLike, split: str = "val", datalist: str | os.PathLike | None = None,
    eval_dir: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None, quiet: bool = False,
    ensemble: Sequence[str | os.PathLike] = (),
) -> Path:
    """Evaluate a training run with the bundle's ``evaluating`` workflow (log: ``evaluate.log`` in the run folder).

    The bundle and the values come from the run's ``train_args.json`` (written by :func:`train_run`), else from its
    ``run_config.json`` (bundle, preset, datalist, fold, seed: runs trained with ``python -m monai.bundle run``).

    Args:
        run_dir: the training run folder.
        split: ``val`` (the run's validation fold), ``test`` or ``all``.
        datalist: another prepared datalist to score (default: the one the run was trained on); its metrics are
            named ``external_<dataset>_*`` and go to ``<run>/eval_external_<dataset>_<split>`` by default. Its
            classes are matched to the model's by name; images of a class the model lacks are left out and counted
            in ``summary.json`` (``left_out``).
        eval_dir: where ``summary.json``, ``per_image.csv`` and the plots go (default ``<run>/eval_<split>``).
        overrides: further bundle values, e.g. ``{"flip_tta": False}``.
        quiet: keep the output in the log only.
        ensemble: other runs of the same configuration (e.g. the other cross-validation folds) whose models are
            averaged with this run's (the bundle's ``ensemble_checkpoints``); the default folder is then
            ``<run>/eval_<split>_ensemble``.

    Returns:
        the evaluation folder.

    Raises:
        FileNotFoundError: ``run_dir`` or an ``ensemble`` run is not a training run (no ``models/model.pt``), or no
            record of ``run_dir``'s values.
        ValueError: unknown ``split``; the split is empty in the datalist; a run named twice in the ensemble.
    """
    if split not in ("val", "test", "all"):
        raise ValueError(f"split must be val, test or all, got {split!r}")
    run = Path(run_dir).resolve()
    checkpoints = [Path(r).resolve() / "models" / "model.pt" for r in (run, *ensemble)]
    for checkpoint in checkpoints:
        if not checkpoint.is_file():
            raise FileNotFoundError(f"{checkpoint.parent.parent}: not a trained run (no models/model.pt); train it "
                                    "first with `bmtl train`")
    if len(set(checkpoints)) < len(checkpoints):
        raise ValueError(f"ensemble: a run is named twice among {run} and {', '.join(map(str, ensemble))} (it would "
                         "weigh double in the average)")
    bundle, values = _evaluation_values(run)
    values.update(output_dir=str(run), split=split)
    if ensemble:
        values["ensemble_checkpoints"] = [str(c) for c in checkpoints[1:]]
    if datalist is not None and Path(datalist).resolve() != Path(values.get("datalist", "")).resolve():
        from pipeline.data.datalist import load_datalist

        values["datalist"] = str(Path(datalist).resolve())
        # the model's classes, so that the other datalist's are matched to them by name (evaluate.yaml)
        if (run / "run_config.json").is_file():
            values["classes"] = list(json.loads((run / "run_config.json").read_text())["classes"])
        # metrics of a dataset the run was not trained on are never confused with its own val/test figures
        values["metric_prefix"] = f"external_{_dataset_name(load_datalist(datalist))}_"
    default_dir = f"eval_{values['metric_prefix']}{split}" if "metric_prefix" in values else f"eval_{split}"
    if {**values, **(overrides or {})}.get("ensemble_checkpoints"):
        default_dir += "_ensemble"   # never over the run's own evaluation
    target = Path(eval_dir).resolve() if eval_dir else run / default_dir
    values["eval_dir"] = str(target)
    values.update(overrides or {})
    if "datalist" in values:   # an empty split is named here, not by the end of the child's log
        from pipeline.data.datalist import split_items

        split_items(values["datalist"], values.get("fold", 0), split)
    run_bundle(bundle, "evaluating", values, log_file=run / "evaluate.log", quiet=quiet)
    return target


def evaluate_datasets(
    run_dir: str | os.PathLike, datalists: Sequence[str | os.PathLike], split: str = "all",
    overrides: Mapping[str, Any] | None = None, quiet: bool = False,
) -> tuple[Path, list[tuple[str, dict[str, Any]]]]:
    """Evaluate a run on several datalists and write one table over them (the cross-dataset report).

    Each datalist is evaluated by :func:`evaluate_run` into its own folder (``eval_external_<dataset>_<split>``, or
    ``eval_<split>`` for the run's own datalist); the table, ``<run>/datasets_<split>.md`` and ``.csv``, has one row per
    dataset with the bootstrap CIs, and is logged to the run's MLflow run when it has one.

    Returns:
        the Markdown table's path and the ``(evaluation name, summary)`` pairs.
    """
    from pipeline.tracking import log_artifacts

    run = Path(run_dir).resolve()
    evaluations = []
    for datalist in datalists:
        eval_dir = evaluate_run(run, split=split, datalist=datalist, overrides=overrides, quiet=quiet)
        evaluations.append((eval_dir.name.removeprefix("eval_"), json.loads((eval_dir / "summary.json").read_text())))
    table = write_datasets_table(run, run.name, evaluations, split)
    bundle, values = _evaluation_values(run)
    uri = (values.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
           or ((run / "mlruns.db").is_file() and f"sqlite:///{run / 'mlruns.db'}"))
    if values.get("use_mlflow", True) and uri:
        log_artifacts(uri, str(values.get("experiment_name", bundle.name)), str(values["run_name"]),
                      [str(table), str(table.with_suffix(".csv")), str(table.with_suffix(".html"))])
    return table, evaluations


def write_datasets_table(folder: Path, title: str, evaluations: Sequence[tuple[str, Mapping[str, Any]]],
                         split: str) -> Path:
    """``<folder>/datasets_<split>.md``, ``.csv`` and ``.html``: one row per evaluation (name, images, left out,
    metrics with their bootstrap CIs; the page links each evaluation's report); returns the Markdown table's path."""
    from pipeline.html_report import write_datasets_report
    from pipeline.model_card import evaluation_table

    rows = []
    for name, summary in evaluations:
        seg, cls = summary["segmentation"], summary.get("classification", {})
        row: dict[str, Any] = {"evaluation": name, "images": summary.get("n_images"),
                               "left_out": sum(summary.get("left_out", {}).get("per_class", {}).values())}
        for key in ("dice", "jaccard"):
            row[key] = seg[key]["mean"]
            row[f"{key}_ci_low"], row[f"{key}_ci_high"] = (seg[key].get("ci95") or [None, None])[:2]
        row["hd95"] = seg["hd95"]["mean"]
        for key in ("auc", "sensitivity", "specificity", "balanced_accuracy"):
            row[key] = cls.get(key)
            row[f"{key}_ci_low"], row[f"{key}_ci_high"] = (cls.get("ci95", {}).get(key) or [None, None])[:2]
        row["ece"], row["cls_threshold"] = cls.get("ece"), cls.get("operating_threshold")
        rows.append(row)
    table = folder / f"datasets_{split}.md"
    frame = pd.DataFrame(rows)
    write_csv_atomic(table.with_suffix(".csv"), frame)
    write_datasets_report(folder, title, frame, split)
    write_text_atomic(table, f"# {title}: evaluation on {len(evaluations)} datasets ({split})\n\n"
                      + "\n".join(evaluation_table(evaluations)) + "\n")
    return table


def evaluate_bundle(
    bundle_dir: str | os.PathLike, datalists: Sequence[str | os.PathLike], output_dir: str | os.PathLike,
    split: str = "all", overrides: Mapping[str, Any] | None = None, quiet: bool = False,
) -> tuple[Path, list[tuple[str, dict[str, Any]]]]:
    """Score an exported bundle (``bmtl export``) on prepared datalists, also ones it never saw (external validation).

    The bundle's own ``evaluating`` workflow runs with its pinned values (``configs/deploy.yaml``: classes, image size,
    thresholds, preprocessing) and its ``models/model.pt``, so the figures are those of the model as deployed. Classes
    are matched by name as in :func:`evaluate_run`; metrics are named ``external_<dataset>_*`` (``<split>_*`` for the
    datalist the bundle was trained on). Each datalist goes to ``<output>/eval_<prefix><split>``; with several, one
    table over them, ``<output>/datasets_<split>.md`` and ``.csv``.

    Args:
        bundle_dir: the exported bundle folder.
        datalists: prepared ``datalist.json`` files.
        output_dir: where the evaluations and the log (``evaluate.log``) go.
        split: ``all`` (default: every item), ``test`` or ``val`` (the bundle's training fold).
        overrides: further bundle values, e.g. ``{"flip_tta": False}``.
        quiet: keep the output in the log only.

    Returns:
        the table's path (the one evaluation folder's ``summary.json`` for a single datalist) and the
        ``(evaluation name, summary)`` pairs.

    Raises:
        pipeline.data.io.DataError: not a complete exported bundle, or one exported before bundles carried
            ``evaluate.yaml``; a missing or invalid datalist.
        ValueError: unknown ``split``, no datalist, an empty split.
    """
    import yaml

    from pipeline.bundle_folder import exported_bundle_root
    from pipeline.data.datalist import load_datalist, split_items
    from pipeline.data.io import DataError

    if split not in ("val", "test", "all"):
        raise ValueError(f"split must be val, test or all, got {split!r}")
    if not datalists:
        raise ValueError("no datalist to evaluate on")
    bundle = exported_bundle_root(bundle_dir)
    configs = bundle / "configs"
    if not (configs / "evaluate.yaml").is_file():
        raise DataError(bundle, "exported without configs/evaluate.yaml (an older `bmtl export`): export the run "
                                "again to evaluate the bundle")
    source = (yaml.safe_load((configs / "deploy.yaml").read_text()) or {}).get("source_run", {})
    output = Path(output_dir).resolve()
    evaluations = []
    for datalist in datalists:
        datalist = Path(datalist).resolve()
        info = load_datalist(datalist)
        own = str(source.get("datalist", "")) and Path(source["datalist"]).resolve() == datalist
        prefix = f"{split}_" if own else f"external_{_dataset_name(info)}_"
        eval_dir = output / (f"eval_{split}" if own else f"eval_{prefix}{split}")   # as a run's evaluations
        values = {"datalist": str(datalist), "split": split, "output_dir": str(output), "eval_dir": str(eval_dir),
                  "metric_prefix": prefix, "checkpoint": str(bundle / "models" / "model.pt"),
                  "run_name": f"{bundle.name}_{eval_dir.name}", "use_mlflow": False,
                  **({"fold": source["fold"]} if own and "fold" in source else {}), **(overrides or {})}
        split_items(datalist, values.get("fold", 0), split)   # an empty split is named here, not by the child's log
        # deploy.yaml last: the pinned values of the exported model win over evaluate.yaml's run-folder defaults
        run_bundle(bundle, "evaluating", values, log_file=output / f"evaluate_{prefix}{split}.log", quiet=quiet,
                   extra_configs=[str(configs / "deploy.yaml")])
        evaluations.append((eval_dir.name.removeprefix("eval_"), json.loads((eval_dir / "summary.json").read_text())))
    table = (write_datasets_table(output, bundle.name, evaluations, split) if len(evaluations) > 1
             else output / f"eval_{evaluations[0][0]}" / "summary.json")
    return table, evaluations
