"""Tests of the multi-task UNet++ (paper 004) beyond the zoo contract."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from monai.networks.nets import BasicUNetPlusPlus

from pipeline.keys import Head
from pipeline.networks.unetpp_mt import UNetPlusPlusMT
from pipeline.registry import create_network

PRESET = Path(__file__).resolve().parents[3] / "configs" / "unetpp_mt.yaml"


def _net(**kwargs) -> UNetPlusPlusMT:
    torch.manual_seed(0)
    return create_network("unetpp_mt", **{"init_filters": 8, **kwargs})


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("size", [(64, 64), (64, 96)])
def test_deep_supervision_list(train, size):
    net = _net(seg_channels=2).train(train)
    with torch.set_grad_enabled(train):
        out = net(torch.randn(2, 1, *size))
    maps = out[Head.DEEP_SUPERVISION]
    assert isinstance(maps, list) and len(maps) == 4
    assert all(m.shape == (2, 2, *size) for m in maps)
    assert maps[-1] is out[Head.SEG]  # X_{0,4} is the main output
    assert len(net.deep_supervision_weights) == len(maps) and net.deep_supervision_weights[-1] == 1.0


def test_without_deep_supervision_the_key_is_always_absent():
    net = _net(deep_supervision=False)
    for mode in (True, False):
        out = net.train(mode)(torch.randn(1, 1, 64, 64))
        assert set(out) == {Head.SEG, Head.CLS}
    # the heads of X_{0,1..3} are not built, so no parameter is left without gradient
    assert not any(k.startswith(("final_conv_0_1", "final_conv_0_2", "final_conv_0_3")) for k in net.state_dict())


def test_widths_follow_the_paper_pattern():
    net = _net(init_filters=24)
    assert net.features == (24, 48, 96, 192, 384, 24)  # the paper's MTUNetPlusPlus features
    # the classifier fuses X_{3,0} and X_{3,1} (each through the shared Down block) with the bottleneck X_{4,0}
    assert net.classifier.down.max_pooling is not None
    assert net.classifier.fuse.conv_0.conv.in_channels == 3 * 384


def test_paper_classifier_widths():
    net = _net(cls_channels=512, cls_hidden=256, num_classes=3).eval()
    assert net.classifier.fuse.conv_1.conv.out_channels == 512
    linears = [m for m in net.classifier.head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 256), (256, 3)]
    with torch.no_grad():
        assert net(torch.randn(1, 1, 64, 64))[Head.CLS].shape == (1, 3)


def test_monai_unetplusplus_weights_load_and_give_the_same_segmentation():
    torch.manual_seed(0)
    monai_net = BasicUNetPlusPlus(
        spatial_dims=2, in_channels=1, out_channels=1, features=(8, 16, 32, 64, 128, 8), deep_supervision=True
    ).eval()
    net = _net().eval()
    result = net.load_state_dict(monai_net.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert all(k.startswith("classifier.") for k in result.missing_keys)
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        expected = monai_net(x)
        out = net(x)
    for ours, theirs in zip(out[Head.DEEP_SUPERVISION], expected):
        torch.testing.assert_close(ours, theirs)


def test_bad_arguments():
    with pytest.raises(ValueError, match="init_filters"):
        _net(init_filters=0)
    with pytest.raises(ValueError, match="cls_channels"):
        _net(cls_channels=-1)
    with pytest.raises(ValueError, match="upsample"):
        _net(upsample="bilinear")


def test_preset_builds_and_runs():
    preset = yaml.safe_load(PRESET.read_text())
    assert preset["network_name"] == "unetpp_mt"
    assert preset["seg_weight"] == 0.35 and preset["cls_weight"] == 0.65  # the paper's alpha
    net = create_network(preset["network_name"], **preset["network_kwargs"]).eval()
    size = preset["image_size"]
    with torch.no_grad():
        out = net(torch.randn(1, 1, *size))
    assert out[Head.SEG].shape == (1, 1, *size)
    assert out[Head.CLS].shape == (1, 2)
    assert len(out[Head.DEEP_SUPERVISION]) == 4
