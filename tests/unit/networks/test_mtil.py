"""Tests of the multi-task interaction network (paper 001) beyond the zoo contract."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from pipeline.keys import Head
from pipeline.networks.mtil import MTIL, circle_forward
from pipeline.registry import create_network

PRESET = Path(__file__).resolve().parents[3] / "configs" / "mtil.yaml"


def _net(**kwargs) -> MTIL:
    torch.manual_seed(0)
    return create_network("mtil", **{"init_filters": 8, **kwargs})


def test_prev_seg_changes_the_output_and_zeros_equal_none():
    net = _net().eval()
    x = torch.randn(2, 1, 64, 64)
    prev = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        none = net(x)
        zeros = net(x, prev_seg=torch.zeros(2, 1, 64, 64))
        with_prev = net(x, prev_seg=prev)
    for key in (Head.SEG, Head.CLS):
        torch.testing.assert_close(none[key], zeros[key], rtol=0, atol=0)
    assert not torch.allclose(none[Head.SEG], with_prev[Head.SEG])
    assert not torch.allclose(none[Head.CLS], with_prev[Head.CLS])


def test_first_convolution_sees_the_extra_channel():
    net = _net(in_channels=3)
    first_conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 4
    assert net.in_channels == 3


@pytest.mark.parametrize("shape", [(2, 2, 64, 64), (2, 1, 32, 64), (1, 1, 64, 64)])
def test_bad_prev_seg_shape(shape):
    with pytest.raises(ValueError, match="prev_seg"):
        _net()(torch.randn(2, 1, 64, 64), prev_seg=torch.rand(*shape))


def test_circle_forward_returns_two_passes():
    net = _net(num_classes=3).train()
    x = torch.randn(2, 1, 64, 96)
    first, second = circle_forward(net, x)
    for out in (first, second):
        assert isinstance(out, dict)
        assert out[Head.SEG].shape == (2, 1, 64, 96)
        assert out[Head.CLS].shape == (2, 3)
    assert not torch.allclose(first[Head.SEG], second[Head.SEG])
    # the map handed to pass 2 is detached: the loss of pass 2 does not reach pass 1's output
    first[Head.SEG].retain_grad()
    second[Head.SEG].sum().backward()
    assert first[Head.SEG].grad is None


def test_circle_forward_matches_manual_passes():
    net = _net().eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        first, second = circle_forward(net, x)
        manual = net(x, prev_seg=torch.sigmoid(net(x)[Head.SEG]))
    torch.testing.assert_close(second[Head.SEG], manual[Head.SEG])


def _grads(net: torch.nn.Module, loss: torch.Tensor, prefix: str) -> list[torch.Tensor]:
    net.zero_grad()
    loss.backward()
    return [p.grad for n, p in net.named_parameters() if n.startswith(prefix)]


@pytest.mark.parametrize("prefix", ["seg_bottleneck", "decoder8", "interaction16.seg_location"])
def test_classification_depends_on_segmentation_branch(prefix):
    """Cross-task location attention: parameters used only by the segmentation branch steer the class logits."""
    net = _net().train()
    out = net(torch.randn(2, 1, 64, 64))
    grads = _grads(net, out[Head.CLS].square().sum(), prefix)
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("prefix", ["cls_bottleneck", "cls_stage8", "interaction16.cls_semantic"])
def test_segmentation_depends_on_classification_branch(prefix):
    """Cross-task semantic attention: the classification branch reweights the segmentation channels."""
    net = _net().train()
    out = net(torch.randn(2, 1, 64, 64))
    grads = _grads(net, out[Head.SEG].square().sum(), prefix)
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)


def test_late_decoder_is_segmentation_only():
    net = _net().train()
    out = net(torch.randn(2, 1, 64, 64))
    grads = _grads(net, out[Head.CLS].square().sum(), "seg_head")
    assert all(g is None or g.abs().sum() == 0 for g in grads)


@pytest.mark.parametrize("kwargs,match", [({"init_filters": 0}, "init_filters"), ({"reduction": 0}, "reduction"),
                                          ({"cls_hidden": -1}, "cls_hidden")])
def test_bad_specific_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_network("mtil", **kwargs)


def test_cls_hidden_gives_an_mlp():
    net = _net(cls_hidden=32).eval()
    assert sum(isinstance(m, torch.nn.Linear) for m in net.cls_head.modules()) == 2


def test_preset_loads_and_builds():
    preset = yaml.safe_load(PRESET.read_text())
    assert preset["network_name"] == "mtil"
    assert preset["circle_training"] is True
    net = create_network(preset["network_name"], **preset["network_kwargs"]).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, *preset["image_size"]))
    assert out[Head.SEG].shape == (1, 1, *preset["image_size"])
