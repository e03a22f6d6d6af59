"""Runtime choice and switches of ``bmtl predict`` (the models themselves are exercised in tests/integration)."""

from __future__ import annotations

import pytest
import torch

import pipeline.inference
import pipeline.predict
from pipeline.inference.runtimes import MODEL_FILES, flag, resolve_device, resolve_runtime


@pytest.mark.parametrize(
    "files, expected", [(["model.pt"], "torch"), (["model.pt", "model.ts"], "torchscript"),
                        (["model.pt", "model.ts", "model.onnx"], "torchscript")],
)
def test_auto_runtime_prefers_torchscript_then_onnx_then_torch(tmp_path, files, expected):
    for name in files:
        (tmp_path / name).write_bytes(b"")
    assert resolve_runtime(tmp_path, "auto") == expected
    assert resolve_runtime(tmp_path, "") == expected


def test_auto_runtime_skips_onnx_without_onnxruntime(tmp_path, monkeypatch):
    (tmp_path / MODEL_FILES["onnx"]).write_bytes(b"")
    (tmp_path / MODEL_FILES["torch"]).write_bytes(b"")
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # import fails
    assert resolve_runtime(tmp_path, "auto") == "torch"


def test_runtime_errors_name_the_file_or_the_choices(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected model.ts, model.onnx or model.pt"):
        resolve_runtime(tmp_path, "auto")
    with pytest.raises(FileNotFoundError, match="model.ts"):
        resolve_runtime(tmp_path, "TorchScript")
    with pytest.raises(ValueError, match="choose from auto, torch, torchscript, onnx"):
        resolve_runtime(tmp_path, "tensorrt")


@pytest.mark.parametrize("value, expected", [(True, True), ("false", False), ("Yes", True), ("off", False),
                                             ("null", False), (0, False), (1, True)])
def test_flag(value, expected):
    assert flag(value) is expected


def test_flag_refuses_other_words():
    with pytest.raises(ValueError, match="expected true or false"):
        flag("maybe")


def test_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_former_module_name_still_serves_old_exported_bundles():
    assert pipeline.predict.predict is pipeline.inference.predict
    assert pipeline.predict.Predictor is pipeline.inference.Predictor
