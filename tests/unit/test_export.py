"""Export of every registered network through the (seg, cls) wrapper: TorchScript and ONNX parity, state dicts,
parity failures, and the shipped metadata schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.engines import circle_training
from pipeline.export import (
    ExportParityError,
    ExportWrapper,
    OnnxModel,
    check_parity,
    export_onnx,
    export_torchscript,
    load_torchscript,
    parity_inputs,
    read_torchscript_metadata,
)
from pipeline.registry import create_network, list_networks
from pipeline.schemas import META_SCHEMA, MetadataError, metadata_errors, validate_metadata

NETWORKS = list_networks()
SIZE = (64, 64)
REPO = Path(__file__).resolve().parents[2]


def _wrapper(name: str, num_classes: int = 3) -> ExportWrapper:
    torch.manual_seed(0)
    return ExportWrapper(create_network(name, init_filters=8, in_channels=1, num_classes=num_classes)).eval()


def test_wrapper_returns_both_heads_as_a_tuple():
    seg, cls = _wrapper("segresnet_shared")(torch.rand(2, 1, *SIZE))
    assert seg.shape == (2, 1, *SIZE) and cls.shape == (2, 3)


def test_wrapper_loads_the_plain_network_state_dict_and_its_own():
    source = create_network("segresnet_shared", init_filters=8, num_classes=2)
    wrapper = ExportWrapper(create_network("segresnet_shared", init_filters=8, num_classes=2))
    wrapper.load_state_dict(source.state_dict())  # what training saves as model.pt
    for key, value in source.state_dict().items():
        torch.testing.assert_close(wrapper.network.state_dict()[key], value)
    wrapper.load_state_dict(ExportWrapper(source).state_dict())
    with pytest.raises(RuntimeError, match="Missing key"):
        wrapper.load_state_dict({"network.nothing": torch.zeros(1)})


def test_wrapper_of_circle_training_loads_the_circle_checkpoint():
    torch.manual_seed(0)
    trained = circle_training(create_network("mtil", init_filters=8, num_classes=2))
    wrapper = ExportWrapper(circle_training(create_network("mtil", init_filters=8, num_classes=2))).eval()
    wrapper.load_state_dict(trained.state_dict())  # keys "network.*" of the CircleTraining module
    x = torch.rand(1, 1, *SIZE)
    with torch.no_grad():
        expected = trained.eval()(x)
        seg, cls = wrapper(x)
    torch.testing.assert_close(seg, expected["seg"])
    torch.testing.assert_close(cls, expected["cls"])


def test_parity_inputs_shapes_and_extra_channels():
    inputs = parity_inputs(2, (48, 40), ["gaussian_gradient_magnitude"], batch=2)
    assert set(inputs) == {"random uniform", "random normal", "synthetic ultrasound"}
    for x in inputs.values():
        assert x.shape == (2, 2, 48, 40) and x.dtype == torch.float32
    synthetic = inputs["synthetic ultrasound"]
    assert 0 <= float(synthetic[:, 0].min()) and float(synthetic[:, 0].max()) <= 1
    assert not torch.equal(synthetic[:, 0], synthetic[:, 1])  # the second channel is the gradient magnitude


@pytest.mark.parametrize("name", NETWORKS)
def test_torchscript_export_matches_eager(name, tmp_path):
    wrapper = _wrapper(name)
    inputs = parity_inputs(1, SIZE)
    report = export_torchscript(wrapper, tmp_path / "model.ts", inputs, meta={"name": name})
    assert set(report) == set(inputs)
    assert all(d["seg"] <= 1e-4 and d["cls"] <= 1e-4 for d in report.values())
    loaded = load_torchscript(tmp_path / "model.ts")
    seg, cls = loaded(torch.rand(3, 1, *SIZE))  # another batch size than the tracing example
    assert seg.shape == (3, 1, *SIZE) and cls.shape == (3, 3)
    assert read_torchscript_metadata(tmp_path / "model.ts")["name"] == name


@pytest.mark.slow
@pytest.mark.parametrize("name", NETWORKS)
def test_onnx_export_is_one_file_and_matches_eager(name, tmp_path):
    wrapper = _wrapper(name)
    inputs = parity_inputs(1, SIZE)
    path = tmp_path / "model.onnx"
    report = export_onnx(wrapper, path, inputs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no external data file
    assert set(report) == set(inputs)
    model = OnnxModel(path)
    assert model.input_name == "image" and model.output_names == ["seg", "cls"]
    x = torch.rand(3, 1, *SIZE)
    seg, cls = model(x)  # dynamic batch
    with torch.no_grad():
        eager_seg, eager_cls = wrapper(x)
    assert seg.shape == eager_seg.shape and cls.shape == eager_cls.shape
    torch.testing.assert_close(cls, eager_cls, atol=1e-4, rtol=0)


class _Shifted(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module, seg_shift: float = 0.0, cls_shift: float = 0.0) -> None:
        super().__init__()
        self.inner, self.seg_shift, self.cls_shift = inner, seg_shift, cls_shift

    def forward(self, x):
        seg, cls = self.inner(x)
        return seg + self.seg_shift, cls + self.cls_shift


def test_parity_failure_names_the_head_and_the_difference():
    wrapper = _wrapper("segresnet_shared")
    inputs = parity_inputs(1, SIZE)
    report = check_parity(wrapper, _Shifted(wrapper, 5e-5), inputs, atol=1e-4)
    assert all(abs(d["seg"] - 5e-5) < 1e-6 for d in report.values())
    with pytest.raises(ExportParityError, match=r"cls on 'random uniform': max \|fake - eager\| = 0.001 > atol"):
        check_parity(wrapper, _Shifted(wrapper, cls_shift=1e-3), inputs, atol=1e-4, name="fake")


def test_failed_torchscript_export_leaves_no_file(tmp_path, monkeypatch):
    import pipeline.export as export

    wrapper = _wrapper("segresnet_shared")
    monkeypatch.setattr(export, "load_torchscript", lambda path: _Shifted(wrapper, seg_shift=1e-2))
    with pytest.raises(ExportParityError, match="TorchScript does not match the eager network"):
        export_torchscript(wrapper, tmp_path / "model.ts", parity_inputs(1, SIZE))
    assert not (tmp_path / "model.ts").exists()


# ---------------------------------------------------------------------------------------------------------- schema
@pytest.mark.parametrize("bundle", ["breast_us_mtl", "breast_mri_mtl"])
def test_bundle_metadata_follows_the_shipped_schema(bundle):
    path = REPO / "bundles" / bundle / "configs" / "metadata.json"
    assert validate_metadata(path)["network_data_format"]["outputs"].keys() >= {"seg", "cls"}


def test_schema_requires_both_heads_and_lists_every_problem():
    meta = json.loads((REPO / "bundles" / "breast_us_mtl" / "configs" / "metadata.json").read_text())
    del meta["network_data_format"]["outputs"]["cls"]
    meta["network_data_format"]["inputs"]["image"]["num_channels"] = 0
    errors = metadata_errors(meta)
    assert "network_data_format.outputs: 'cls' is a required property" in errors
    assert any(e.startswith("network_data_format.inputs.image") and "minimum" in e for e in errors)
    with pytest.raises(MetadataError, match="'cls' is a required property"):
        validate_metadata(meta)


def test_schema_is_package_data():
    assert META_SCHEMA.is_file() and META_SCHEMA.parent.name == "schemas"
    setup = (REPO / "setup.cfg").read_text()
    assert "pipeline.schemas = *.json" in setup
