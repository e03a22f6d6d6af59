"""Tests of MTL-OCA (paper 003) beyond the zoo contract."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from pipeline.keys import Head
from pipeline.networks.mtl_oca import MTLOCA, ObjectContextualAttention
from pipeline.registry import create_network

PRESET = Path(__file__).resolve().parents[3] / "configs" / "mtl_oca.yaml"


def _net(**kwargs) -> MTLOCA:
    torch.manual_seed(0)
    return create_network("mtl_oca", **{"init_filters": 8, **kwargs})


@pytest.mark.parametrize("size", [(64, 64), (96, 160)])
def test_object_regions_shape_and_softmax(size):
    net = _net(in_channels=2, num_classes=3).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 2, *size))
    regions = out[Head.OBJECT_REGIONS]
    assert regions.shape == (2, 2, *size)
    assert out[Head.SEG].shape == (2, 1, *size)
    assert out[Head.CLS].shape == (2, 3)
    torch.testing.assert_close(torch.softmax(regions, dim=1).sum(dim=1), torch.ones(2, *size))


def test_num_regions():
    net = _net(num_regions=3).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 64, 64))
    assert out[Head.OBJECT_REGIONS].shape == (1, 3, 64, 64)


def test_group_norm_is_used_and_batch_norm_is_not():
    net = _net(norm_groups=4)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == 4 for m in norms)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    # three levels: the bottleneck is at 1/8 of the input
    feats = net.backbone(torch.randn(1, 1, 64, 64))
    assert [f.shape[-1] for f in feats] == [8, 16, 32, 64]


def test_oca_relation_and_region_weights(monkeypatch):
    """Eq. 1 pools with weights that sum to 1 over the pixels; Eq. 2 relations sum to 1 over the K regions."""
    torch.manual_seed(0)
    oca = ObjectContextualAttention(8, 16, 8, num_regions=2, out_channels=1, norm_groups=4).eval()
    captured = {}
    original = torch.softmax

    def spy(x, dim):
        result = original(x, dim=dim)
        captured.setdefault("calls", []).append((dim, result))
        return result

    monkeypatch.setattr(torch, "softmax", spy)
    with torch.no_grad():
        seg, regions = oca(torch.randn(2, 8, 16, 16))
    monkeypatch.undo()
    (dim1, region_weights), (dim2, relation) = captured["calls"]
    assert region_weights.shape == (2, 2, 256)
    torch.testing.assert_close(region_weights.sum(dim=dim1), torch.ones(2, 2))
    assert relation.shape == (2, 256, 2)
    torch.testing.assert_close(relation.sum(dim=dim2), torch.ones(2, 256))
    assert seg.shape == (2, 1, 16, 16) and regions.shape == (2, 2, 16, 16)


def test_segmentation_depends_on_object_regions():
    net = _net().train()
    out = net(torch.randn(2, 1, 64, 64))
    net.zero_grad()
    out[Head.SEG].square().sum().backward()
    grads = [p.grad for n, p in net.named_parameters() if n.startswith("oca.region_head")]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("cls_features", ["full", "decoder", "bottleneck"])
def test_cls_features(cls_features):
    net = _net(cls_features=cls_features).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 64, 64))
    assert out[Head.CLS].shape == (1, 2)
    assert sum(isinstance(m, torch.nn.Linear) for m in net.classifier.modules()) == 2  # 2-layer MLP


@pytest.mark.parametrize(
    "kwargs,match",
    [({"norm_groups": 3}, "norm_groups"), ({"num_regions": 1}, "num_regions"), ({"cls_features": "x"}, "cls_features"),
     ({"init_filters": 0}, "init_filters"), ({"cls_hidden": 0}, "cls_hidden")],
)
def test_bad_specific_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_network("mtl_oca", **kwargs)


def test_preset_loads_and_builds():
    preset = yaml.safe_load(PRESET.read_text())
    assert preset["network_name"] == "mtl_oca"
    assert preset["aux_weights"] == {"object_regions": 0.4}
    assert preset["extra_input_channels"] == ["gaussian_gradient_magnitude"]
    in_channels = 1 + len(preset["extra_input_channels"])  # as the bundles derive it
    assert in_channels == 2
    net = create_network(preset["network_name"], in_channels=in_channels, **preset["network_kwargs"]).eval()
    with torch.no_grad():
        out = net(torch.randn(1, in_channels, *preset["image_size"]))
    assert out[Head.OBJECT_REGIONS].shape == (1, 2, *preset["image_size"])
