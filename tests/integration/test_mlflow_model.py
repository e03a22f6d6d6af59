"""`bmtl log-model` / `pipeline.mlflow_model`: an exported bundle logged as an MLflow pyfunc to an sqlite store, loaded
back, registered, and served by `mlflow models serve --env-manager local` over HTTP; its masks and probabilities are
those of `bmtl predict` on the same image.

The bundle is the tiny US export of ``test_predict`` with its deterministic fake TorchScript model (lesion logit
``20 * (intensity - 0.5)``), so the mask has both lesion and background pixels.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.types import DataType
from PIL import Image

from pipeline.cli import main
from pipeline.data.synthetic import make_us_dataset
from pipeline.deploy import export_bundle
from pipeline.mlflow_model import log_bundle_model, tracking_store
from pipeline.inference import predict
from tests.integration.conftest import US_BUNDLE
from tests.integration.test_export_bundle import make_run
from tests.integration.test_predict import with_fake_model

pytestmark = pytest.mark.slow
TRACKING_ENV_AT_IMPORT = os.environ.get("MLFLOW_TRACKING_URI")  # before any fixture logged a model
CLASSES = ["normal", "benign", "malignant"]
SIZE = (72, 96)  # (H, W): not the training size, not square


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mlflow_bundle")
    run = make_run(root / "run", "segresnet_effnet")
    export_bundle(US_BUNDLE, run, root / "exported", formats=["torchscript"])
    return with_fake_model(root / "exported", root / "bundle", [0.0, 1.0, 2.0])


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    root = make_us_dataset(tmp_path_factory.mktemp("mlflow_image"), n=3, seed=1, size=SIZE)
    return next(p for p in sorted(root.glob("benign/*.png")) if "_mask" not in p.name)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow_store') / 'mlruns.db'}"


@pytest.fixture(scope="module")
def model_uri(bundle, store) -> str:
    return log_bundle_model(bundle, tracking_uri=store)


def decode_mask(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))


def check_output(frame: pd.DataFrame, n: int) -> None:
    assert list(frame.columns) == [*(f"prob_{c}" for c in CLASSES), "predicted_class", "mask_png", "height", "width"]
    assert len(frame) == n
    probs = frame[[f"prob_{c}" for c in CLASSES]].to_numpy(dtype=float)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    for _, row in frame.iterrows():
        mask = decode_mask(row["mask_png"])
        assert mask.shape == SIZE == (row["height"], row["width"])
        assert set(np.unique(mask)) == {0, 255}  # the fake model finds the bright lesion and the dark background
        assert row["predicted_class"] == CLASSES[int(np.argmax(row[[f"prob_{c}" for c in CLASSES]].to_numpy()))]


def test_logged_model_predicts_like_bmtl_predict(model_uri, store, bundle, image, tmp_path):
    with tracking_store(store):
        model = mlflow.pyfunc.load_model(model_uri)
        run = mlflow.get_run(model_uri.split("/")[1])
    # nothing leaks into later runs of the process: the bundles send their runs to MLFLOW_TRACKING_URI when it is set
    assert os.environ.get("MLFLOW_TRACKING_URI") == TRACKING_ENV_AT_IMPORT
    assert [c.name for c in model.metadata.get_input_schema().inputs] == ["image"]
    assert model.metadata.get_input_schema().inputs[0].type == DataType.binary
    assert "mask_png" in model.metadata.get_output_schema().input_names()
    tags = run.data.tags
    for key in ("bmtl.git_commit", "bmtl.version.torch", "bmtl.version.monai", "bmtl.version.mlflow",
                "bmtl.version.python"):
        assert tags.get(key), key
    assert model.metadata.metadata["classes"] == CLASSES

    data = image.read_bytes()
    # bytes (what the server hands over after decoding the JSON's base64) and base64 text give the same answer
    out = model.predict(pd.DataFrame({"image": [data, base64.b64encode(data).decode("ascii")]}))
    check_output(out, 2)
    assert out.iloc[0].to_dict() == out.iloc[1].to_dict()

    reference = predict(bundle, image, tmp_path / "predicted", progress=False)
    row = reference.rows[0]
    assert row["status"] == "ok"
    for c in CLASSES:
        assert out.loc[0, f"prob_{c}"] == pytest.approx(float(row[f"prob_{c}"]), abs=1e-12)
    assert out.loc[0, "predicted_class"] == row["predicted_class"]
    np.testing.assert_array_equal(decode_mask(out.loc[0, "mask_png"]), np.asarray(Image.open(reference.path(row))))

    with pytest.raises(MlflowException) as error:
        model.predict(pd.DataFrame({"image": [data, b"not an image", "%%% not base64"]}))
    message = error.value.message
    assert "2 of 3" in message and "row 1: not an image" in message and "row 0" not in message
    assert "row 2: text that is not valid base64" in message


def test_cli_logs_into_a_run_and_registers(bundle, store, capsys):
    client = mlflow.MlflowClient(store)
    experiment = client.create_experiment("training", artifact_location=Path(store[10:]).with_name("art").as_uri())
    training = client.create_run(experiment).info.run_id
    assert main(["log-model", "--bundle", str(bundle), "--tracking-uri", store, "--run-id", training,
                 "--register-model", "breast_us_test"]) == 0
    out = capsys.readouterr().out
    assert f"model: runs:/{training}/model" in out
    assert f"mlflow models serve -m runs:/{training}/model --env-manager local -p 5001" in out
    versions = client.search_model_versions("name='breast_us_test'")
    assert len(versions) == 1 and versions[0].run_id == training
    assert client.get_run(training).data.tags["bmtl.git_commit"]


def test_export_logs_the_model_into_the_training_run(tmp_path, store, capsys):
    """`bmtl export --log-model` finds the run's own MLflow run from run_config.json (as training records it) and
    logs the exported model there; a run trained without MLflow is told what to do instead (exit 2)."""
    run = make_run(tmp_path / "run", "segresnet_shared")
    config = json.loads((run / "run_config.json").read_text())
    args = ["export", "--bundle", str(US_BUNDLE), "--run", str(run), "--format", "torchscript", "--log-model"]
    assert main([*args, "--output", str(tmp_path / "untracked")]) == 2
    assert "trained without MLflow" in capsys.readouterr().err and not (tmp_path / "untracked").exists()
    client = mlflow.MlflowClient(store)
    experiment = client.create_experiment("breast_us_mtl_export",
                                          artifact_location=Path(store[10:]).with_name("art_export").as_uri())
    training = client.create_run(experiment, run_name="shared_fold0").info.run_id
    config["mlflow"] = {"tracking_uri": store, "experiment_name": "breast_us_mtl_export", "run_name": "shared_fold0"}
    (run / "run_config.json").write_text(json.dumps(config))
    assert main([*args, "--output", str(tmp_path / "exported"), "--register-model", "breast_us_export"]) == 0
    assert f"MLflow model in the training run: runs:/{training}/model" in capsys.readouterr().out
    versions = client.search_model_versions("name='breast_us_export'")
    assert len(versions) == 1 and versions[0].run_id == training
    config["mlflow"]["run_name"] = "gone"
    (run / "run_config.json").write_text(json.dumps(config))
    assert main([*args, "--output", str(tmp_path / "exported"), "--overwrite"]) == 2
    assert "no MLflow run 'gone'" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_mlflow_models_serve(model_uri, store, image, tmp_path):
    port = free_port()
    # `mlflow models serve` starts `uvicorn` by name: the environment's scripts must be on PATH, as in an activated
    # environment (a bare `.venv/bin/python -m pytest` does not put them there)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    log = tmp_path / "serve.log"
    with open(log, "wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
             "-p", str(port), "--host", "127.0.0.1"],
            cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"server exited ({server.returncode}):\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, f"no /ping answer in 120 s:\n{log.read_text()[-3000:]}"
            time.sleep(1)

        encoded = base64.b64encode(image.read_bytes()).decode("ascii")
        status, body = post(f"{base}/invocations", {"dataframe_split": {"columns": ["image"], "data": [[encoded]]}})
        assert status == 200, body
        check_output(pd.DataFrame(body["predictions"]), 1)

        status, body = post(f"{base}/invocations", {"dataframe_split": {"columns": ["image"], "data": [["aGVsbG8="]]}})
        assert status == 400 and "row 0: not an image" in body["message"], body
    finally:
        stop(server)


def stop(server: subprocess.Popen) -> None:
    """End mlflow's CLI and the uvicorn server it started (one process group)."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, None)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            break
        try:
            server.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
