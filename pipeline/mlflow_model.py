"""An exported bundle as an MLflow ``pyfunc`` model: ``bmtl log-model`` and ``mlflow models serve``.

``log_bundle_model(EXPORTED, tracking_uri=...)`` logs the exported bundle folder (see ``pipeline.deploy``) as the
artifact of a ``BundlePyfunc`` model, with the ``pipeline`` package as its code, the project's runtime requirements,
a signature inferred from a synthetic ultrasound image and that image as input example; optionally it registers it.
The logged model needs nothing else of ours: ``mlflow models serve -m runs:/<id>/model --env-manager local`` serves
it over HTTP.

Input: a DataFrame with a column ``image`` of image file bytes (PNG, JPEG, BMP or TIFF). The signature declares the
column ``binary``, so MLflow's JSON scoring protocol carries it base64-encoded and the server decodes it before the
model sees it::

    curl -X POST localhost:5001/invocations -H 'Content-Type: application/json' \\
        -d '{"dataframe_split": {"columns": ["image"], "data": [["<base64 of scan.png>"]]}}'

In Python, ``mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"image": [png_bytes]}))``; base64 text is accepted
there too. Output: one row per input with ``prob_<class>`` per class, ``predicted_class``, ``mask_png`` (base64 PNG
of the 0/255 lesion mask at the input's own size) and the input's ``height`` and ``width``. Each image goes through
``pipeline.inference.Predictor``, the code of ``bmtl predict``: same preprocessing, model, threshold and mask
post-processing, so the mask PNG and the probabilities are those ``bmtl predict`` writes for the same file.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import platform
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
from monai.utils import optional_import

mlflow, has_mlflow = optional_import("mlflow")
PythonModel, _ = optional_import("mlflow.pyfunc", name="PythonModel", as_type="base")

__all__ = ["BundlePyfunc", "log_bundle_model", "log_into_training_run", "training_run_tracking", "tracking_store",
           "runtime_requirements", "serve_command", "INPUT_COLUMN"]

logger = logging.getLogger(__name__)

INPUT_COLUMN = "image"
DEFAULT_EXPERIMENT = "breast_mtl_models"
_DISTRIBUTION = "breast-mtl"
# fallback when the package metadata is not installed (a source checkout run without `pip install -e .`)
_FALLBACK_REQUIREMENTS = ("torch", "monai", "numpy", "scipy", "pandas", "scikit-image", "pillow", "nibabel",
                          "pydicom", "tqdm", "matplotlib", "mlflow", "pyyaml")
_MODEL_CODE = '''"""The MLflow model of an exported breast-mtl bundle (logged by `bmtl log-model`)."""
import mlflow

from pipeline.mlflow_model import BundlePyfunc

mlflow.models.set_model(BundlePyfunc())
'''
# suffixes only name the temporary files; the reader identifies the format from the bytes
_MAGIC = ((b"\x89PNG", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"BM", ".bmp"), (b"II*\x00", ".tif"),
          (b"MM\x00*", ".tif"))


def _invalid(message: str) -> Exception:
    """An input error: MLflow's scoring server answers it with HTTP 400 and the message."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _image_bytes(value: Any) -> bytes:
    """The image file bytes of one input cell: bytes as they are (the server already decoded the JSON's base64),
    text as base64 (optionally a ``data:image/...;base64,`` URL).

    Raises:
        ValueError: missing value, another type, or text that is not base64.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        text = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
        try:
            return base64.b64decode("".join(text.split()), validate=True)  # MLflow's encoder wraps lines
        except (binascii.Error, ValueError):
            raise ValueError("text that is not valid base64 (expected the base64 of a PNG/JPEG file)") from None
    if value is None or (isinstance(value, float) and value != value):
        raise ValueError("no image (empty cell)")
    raise ValueError(f"expected image file bytes or their base64 text, got {type(value).__name__}")


class BundlePyfunc(PythonModel):
    """``pyfunc`` model over an exported bundle (artifact ``bundle``), predicting with ``pipeline.inference``.

    The model's ``model_config`` holds ``Predictor`` options (``runtime``, ``device``, ``threshold``, ...); overlays,
    Grad-CAM and the progress bar are always off.
    """

    def __init__(self) -> None:
        self.predictor = None

    def load_context(self, context: Any) -> None:
        """Load the bundle's model and preprocessing once, when MLflow loads the model."""
        from pipeline.inference import Predictor

        options = {**(context.model_config or {}), "overlays": False, "explain": False, "progress": False}
        self.predictor = Predictor(context.artifacts["bundle"], **options)

    @property
    def classes(self) -> list[str]:
        return list(self.predictor.classes)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
                ) -> pd.DataFrame:
        """Segment and classify each row's image.

        Args:
            context: MLflow's model context (unused: ``load_context`` did the loading).
            model_input: a DataFrame with a column ``image`` (image file bytes, or their base64 text).
            params: unused.

        Returns:
            one row per input: ``prob_<class>``..., ``predicted_class``, ``mask_png``, ``height``, ``width``.

        Raises:
            mlflow.exceptions.MlflowException: (``INVALID_PARAMETER_VALUE``, HTTP 400 when served) no ``image``
                column, or bad rows; the message names each bad row by its index and says what is wrong.
        """
        from pipeline.inference import InputItem

        if self.predictor is None:
            raise RuntimeError("the model is not loaded (load it with mlflow.pyfunc.load_model)")
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if INPUT_COLUMN not in frame.columns:
            raise _invalid(f"the input needs a column {INPUT_COLUMN!r} holding image files (base64 in JSON); "
                           f"got columns {[str(c) for c in frame.columns]}")
        problems: dict[int, str] = {}
        with tempfile.TemporaryDirectory(prefix="bmtl_pyfunc_") as tmp:
            inputs, items = Path(tmp) / "inputs", []
            inputs.mkdir()
            for row, value in enumerate(frame[INPUT_COLUMN].tolist()):
                try:
                    data = _image_bytes(value)
                except ValueError as e:
                    problems[row] = str(e)
                    continue
                suffix = next((s for magic, s in _MAGIC if data.startswith(magic)), ".img")
                path = inputs / f"row{row:06d}{suffix}"
                path.write_bytes(data)
                items.append((row, InputItem(path, "raster", path.stem, relative=path.name)))
            result = self.predictor([item for _, item in items], Path(tmp) / "outputs") if items else None
            # the predictor keeps its input order, one row per input (an error row for a bad image)
            rows = dict(zip((row for row, _ in items), result.rows if result else []))
            problems.update((row, out["error"]) for row, out in rows.items() if out["status"] != "ok")
            if problems:
                raise _invalid(f"{len(problems)} of {len(frame)} input image(s) could not be predicted: "
                               + "; ".join(f"row {row}: {problems[row]}" for row in sorted(problems)))
            records = []
            for row in range(len(frame)):
                out = rows[row]
                record: dict[str, Any] = {f"prob_{c}": float(out[f"prob_{c}"]) for c in self.classes}
                record.update(predicted_class=str(out["predicted_class"]),
                              mask_png=base64.b64encode(result.path(out).read_bytes()).decode("ascii"),
                              height=int(out["height"]), width=int(out["width"]))
                records.append(record)
        columns = [*(f"prob_{c}" for c in self.classes), "predicted_class", "mask_png", "height", "width"]
        return pd.DataFrame.from_records(records, columns=columns)


def runtime_requirements() -> list[str]:
    """The project's runtime requirements (``install_requires``), pinned to the installed versions, for the
    environment MLflow records with the model (``--env-manager virtualenv|conda`` rebuild it; ``local`` uses the
    current one)."""
    from packaging.requirements import Requirement

    try:
        declared = [Requirement(r) for r in metadata.requires(_DISTRIBUTION) or []]
        declared = [r for r in declared if r.marker is None]  # extras (onnx, dev) are not needed to serve
    except metadata.PackageNotFoundError:
        declared = [Requirement(name) for name in _FALLBACK_REQUIREMENTS]
    pinned = []
    for req in declared:
        extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
        try:
            version = metadata.version(req.name).split("+", 1)[0]  # "2.4.0+cpu": the local label is no PyPI version
            pinned.append(f"{req.name}{extras}=={version}")
        except metadata.PackageNotFoundError:
            pinned.append(str(req))
    return pinned


def _input_example(size: Sequence[int] = (64, 64)) -> pd.DataFrame:
    """One synthetic ultrasound PNG (``pipeline.data.synthetic``) as the model's input example."""
    from pipeline.data.synthetic import make_us_dataset

    with tempfile.TemporaryDirectory(prefix="bmtl_example_") as tmp:
        root = make_us_dataset(tmp, n=1, seed=0, size=(max(int(size[0]), 32), max(int(size[1]), 32)))
        image = next(p for p in sorted(root.rglob("*.png")) if "_mask" not in p.name)
        return pd.DataFrame({INPUT_COLUMN: [image.read_bytes()]})


def _provenance(bundle: Path) -> dict[str, str]:
    """Versions, commit and source of the logged model (run tags and model metadata)."""
    import json

    from pipeline.tracking import provenance

    # the same commit and versions as a training run's parameters (str(): the MLmodel YAML takes plain strings)
    info = {**{k: str(v) for k, v in provenance().items()}, "version.python": platform.python_version(),
            "bundle": str(bundle)}
    report = bundle / "models" / "export_report.json"
    if report.is_file():
        exported = json.loads(report.read_text(encoding="utf-8"))
        info.update(network=str(exported.get("network_name", "")), source_run=str(exported.get("source_run", "")),
                    checkpoint_sha256=str(exported.get("checkpoint", {}).get("sha256", "")))
    return info


def _artifact_location(tracking_uri: str) -> str | None:
    """Artifacts of a new experiment in an sqlite store go beside the database (``mlartifacts/``, as ``bmtl cv``
    does), not into MLflow's default ``./mlruns`` of the current directory; None (the store's default) otherwise."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    return (Path(tracking_uri[len(prefix):].split("?", 1)[0]).resolve().parent / "mlartifacts").as_uri()


def serve_command(model_uri: str, port: int = 5001) -> str:
    """The shell command that serves ``model_uri`` over HTTP in the current environment."""
    return f"mlflow models serve -m {model_uri} --env-manager local -p {int(port)}"


@contextlib.contextmanager
def tracking_store(tracking_uri: str | None) -> Iterator[None]:
    """Use ``tracking_uri`` (None: the current one) inside the block, and leave the caller's store as it was.

    ``mlflow.set_tracking_uri`` also sets the ``MLFLOW_TRACKING_URI`` environment variable, so setting the previous
    URI back is not enough: the variable would stay set and send every later run of the process (the bundles read it)
    to MLflow's default store. The variable is restored (or removed) here.
    """
    previous_uri, previous_env = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri or previous_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous_uri)
        _restore_env("MLFLOW_TRACKING_URI", previous_env)


def _restore_env(name: str, previous: str | None) -> None:
    """Give the environment variable ``name`` back its ``previous`` value (None: it was not set)."""
    if previous is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = previous


@contextlib.contextmanager
def _quiet_artifact_progress() -> Iterator[None]:
    """MLflow's artifact progress bars off inside the block (``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR``)."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    previous, os.environ[name] = os.environ.get(name), "false"
    try:
        yield
    finally:
        _restore_env(name, previous)


def log_bundle_model(
    bundle_dir: str | os.PathLike,
    tracking_uri: str | None = None,
    run_id: str | None = None,
    experiment_name: str = DEFAULT_EXPERIMENT,
    artifact_path: str = "model",
    register_name: str | None = None,
    predictor_options: dict[str, Any] | None = None,
) -> str:
    """Log an exported bundle as an MLflow ``pyfunc`` model (see the module docstring) and return its URI.

    Args:
        bundle_dir: the exported bundle folder (``bmtl export``).
        tracking_uri: the tracking store (``sqlite:///mlruns.db``, ``http://host:5000``); None: MLflow's default
            (``MLFLOW_TRACKING_URI``).
        run_id: log into this existing run (e.g. the training run); None: a new run in ``experiment_name``.
        experiment_name: the experiment of a new run.
        artifact_path: the model's name in the run (``runs:/<run_id>/<artifact_path>``).
        register_name: also register the model under this name (a new version each time).
        predictor_options: ``Predictor`` options fixed in the model (``runtime``, ``device``, ``threshold``, ...).

    Returns:
        ``runs:/<run_id>/<artifact_path>``, which ``mlflow models serve -m`` and ``mlflow.pyfunc.load_model`` take.

    Raises:
        FileNotFoundError: not an exported bundle.
        ImportError: MLflow is not installed.
    """
    if not has_mlflow:
        raise ImportError("MLflow is not installed: pip install mlflow")
    from mlflow.models import infer_signature
    from mlflow.pyfunc import PythonModelContext

    bundle = Path(bundle_dir).resolve()
    config = dict(predictor_options or {})
    # load it here first: a bad bundle fails before anything is logged, and the real output types make the signature
    model = BundlePyfunc()
    model.load_context(PythonModelContext(artifacts={"bundle": str(bundle)}, model_config=config))
    example = _input_example(model.predictor.image_size)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*integer column")  # height/width are never missing
        signature = infer_signature(example, model.predict(None, example))
    info = _provenance(bundle)
    with tracking_store(tracking_uri):  # the fluent log_model below logs to the current store
        experiment_id = None
        if run_id is None:
            client = mlflow.MlflowClient(mlflow.get_tracking_uri())
            experiment = client.get_experiment_by_name(experiment_name)
            experiment_id = experiment.experiment_id if experiment else client.create_experiment(
                experiment_name, artifact_location=_artifact_location(mlflow.get_tracking_uri()))
        with mlflow.start_run(run_id=run_id, experiment_id=experiment_id,
                              run_name=None if run_id else f"model_{bundle.name}") as run:
            mlflow.set_tags({f"bmtl.{k}": v for k, v in info.items()})
            # the input-example check re-reads the logged files with a progress bar per call: noise in a CLI's output
            with tempfile.TemporaryDirectory(prefix="bmtl_model_") as tmp, _quiet_artifact_progress():
                # MLflow's "models from code": the logged model is this script, not a pickled object
                code = Path(tmp) / "bmtl_model.py"
                code.write_text(_MODEL_CODE, encoding="utf-8")
                logged = mlflow.pyfunc.log_model(
                    name=artifact_path,
                    python_model=str(code),
                    model_config=config,
                    artifacts={"bundle": str(bundle)},
                    code_paths=[str(Path(__file__).resolve().parent)],  # `pipeline`: the served model imports it
                    pip_requirements=runtime_requirements(),
                    signature=signature,
                    input_example=example,
                    metadata={**info, "classes": model.classes},
                    registered_model_name=register_name,
                )
    logger.info("logged %s (%s)%s", logged.model_uri, run.info.run_id,
                f", registered as {register_name} version {logged.registered_model_version}" if register_name else "")
    return f"runs:/{run.info.run_id}/{artifact_path}"


def training_run_tracking(run_dir: str | os.PathLike) -> dict[str, str]:
    """Where a training run was tracked, from its ``run_config.json`` (``mlflow``: store, experiment, run name).

    Raises:
        FileNotFoundError: ``run_dir`` has no ``run_config.json``.
        ValueError: the run was trained without MLflow (or before runs recorded their MLflow run).
    """
    import json

    config_path = Path(run_dir) / "run_config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: not a training run of this project")
    tracked = json.loads(config_path.read_text()).get("mlflow")
    if not tracked:
        raise ValueError(f"{run_dir} was trained without MLflow (use_mlflow False, or before runs recorded their "
                         "MLflow run): log the exported bundle into a new run with `bmtl log-model --bundle BUNDLE "
                         "--tracking-uri URI`")
    return dict(tracked)


def log_into_training_run(run_dir: str | os.PathLike, bundle_dir: str | os.PathLike,
                          register_name: str | None = None) -> tuple[str, str]:
    """Log the exported bundle of a training run as an MLflow model into that training run.

    The model lands beside the run's parameters, metrics and artifacts, as ``runs:/<training run id>/model``.

    Returns:
        the model URI and the tracking store.

    Raises:
        FileNotFoundError, ValueError: as :func:`training_run_tracking`; also when the run's MLflow run is not in
            the store any more.
    """
    from pipeline.tracking import find_run

    tracked = training_run_tracking(run_dir)
    run_id = find_run(tracked["tracking_uri"], tracked["experiment_name"], tracked["run_name"])
    if run_id is None:
        raise ValueError(f"no MLflow run {tracked['run_name']!r} in experiment {tracked['experiment_name']!r} of "
                         f"{tracked['tracking_uri']}: log the exported bundle into a new run with `bmtl log-model`")
    uri = log_bundle_model(bundle_dir, tracking_uri=tracked["tracking_uri"], run_id=run_id,
                           register_name=register_name)
    return uri, tracked["tracking_uri"]
