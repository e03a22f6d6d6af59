"""Tests of NMTNet (paper 000) beyond the zoo contract."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from monai.networks.nets import resnet18

from pipeline.keys import Head
from pipeline.networks.nmtnet import LesionRegionEnhancement, MultiScaleFusionChannelRefinement, NMTNet
from pipeline.networks.resnet_encoder import ResNet18Encoder
from pipeline.registry import create_network

PRESET = Path(__file__).resolve().parents[3] / "configs" / "nmtnet.yaml"


def _net(**kwargs) -> NMTNet:
    torch.manual_seed(0)
    return create_network("nmtnet", **{"init_filters": 8, **kwargs})


def test_encoder_strides_and_widths():
    encoder = ResNet18Encoder(in_channels=3, init_filters=8).eval()
    with torch.no_grad():
        feats = encoder(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [
        (8, 32, 48), (8, 16, 24), (16, 8, 12), (32, 4, 6), (64, 2, 3)
    ]
    # ResNet18: 4 stages of 2 basic blocks
    assert [len(getattr(encoder.resnet, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]


@pytest.mark.parametrize("dilations", [(1, 2, 3), (1, 2)])
def test_mfcr_keeps_shape(dilations):
    mfcr = MultiScaleFusionChannelRefinement(32, dilations=dilations).eval()
    x = torch.randn(2, 32, 4, 6)
    with torch.no_grad():
        assert mfcr(x).shape == x.shape
    assert isinstance(mfcr.project, torch.nn.Identity) == (dilations == (1, 2, 3))


def test_mfcr_bad_dilations():
    with pytest.raises(ValueError, match="mfcr_dilations"):
        _net(mfcr_dilations=())


def test_lre_shapes_attention_and_edges():
    lre = LesionRegionEnhancement(8).eval()
    x = torch.randn(2, 8, 16, 24)
    with torch.no_grad():
        assert lre(x).shape == x.shape
        attention = lre.attention_map(x)
        assert attention.shape == (2, 1, 16, 24)
        assert attention.min() >= 0 and attention.max() <= 1
        # a constant map has no edges (replicate padding: none at the border either); a step has some
        assert torch.count_nonzero(lre.edges(torch.full((1, 8, 16, 24), 3.0))) == 0
        step = torch.zeros(1, 8, 16, 24)
        step[..., 12:] = 1.0
        edges = lre.edges(step)
        assert edges.shape == (1, 24, 16, 24)
        assert edges[..., 11:13].sum() > 0 and edges[..., :10].sum() == 0


def test_lre_fixed_filters_are_not_parameters_learnable_ones_are():
    fixed = LesionRegionEnhancement(4)
    assert "edge_filters" not in dict(fixed.named_parameters())
    assert "edge_filters" not in fixed.state_dict()
    learnable = LesionRegionEnhancement(4, learnable_edges=True)
    assert "edge_filters" in dict(learnable.named_parameters())
    learnable(torch.randn(2, 4, 8, 8)).sum().backward()
    assert learnable.edge_filters.grad is not None


def test_classifier_features_are_checked():
    with pytest.raises(ValueError, match="classifier_features"):
        _net(classifier_features="texture")


@pytest.mark.parametrize("norm", ["group", "instance"])
def test_per_image_norms_keep_no_running_statistics(norm):
    net = _net(norm=norm, init_filters=16).train()
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert any(isinstance(m, (torch.nn.GroupNorm, torch.nn.InstanceNorm2d)) for m in net.modules())
    x = torch.randn(3, 1, 64, 64)
    net(x)[Head.CLS].sum().backward()
    net.eval()
    with torch.no_grad():   # an image's output does not depend on the rest of the batch, in eval as in training
        alone = net(x[:1])[Head.CLS]
        together = net(x)[Head.CLS][:1]
    torch.testing.assert_close(alone, together, rtol=1e-4, atol=1e-5)


def test_norm_arguments_are_checked():
    with pytest.raises(ValueError, match="norm must be one of"):
        _net(norm="layer")
    with pytest.raises(ValueError, match="divisible by 16"):
        _net(norm="group", init_filters=8)
    with pytest.raises(ValueError, match="norm='batch'"):
        _net(norm="instance", init_filters=64, pretrained="/nonexistent.pth")


def test_network_classification_follows_the_segmentation():
    """Shifting the seg head's bias changes the lesion probability, hence the class logits."""
    net = _net().eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        before = net(x)
        net.seg_head.conv.bias.add_(3.0)
        after = net(x)
    assert not torch.allclose(before[Head.CLS], after[Head.CLS])


@pytest.mark.parametrize("detach_mask", [True, False])
def test_detach_mask_stops_the_classification_gradient_at_the_mask(detach_mask):
    net = _net(detach_mask=detach_mask).train()
    out = net(torch.randn(2, 1, 64, 64))
    out[Head.CLS].square().sum().backward()
    reached = net.seg_head.conv.weight.grad is not None and net.seg_head.conv.weight.grad.abs().sum() > 0
    assert reached == (not detach_mask)


def test_two_seg_channels_use_the_softmax_foreground():
    net = _net(seg_channels=2).eval()
    seg = torch.tensor([[[[2.0]], [[0.0]]]])  # background logit 2, lesion logit 0
    torch.testing.assert_close(net.lesion_probability(seg), torch.softmax(seg, dim=1)[:, 1:])


def test_only_seg_and_cls_are_returned():
    net = _net()
    for mode in (True, False):
        out = net.train(mode)(torch.randn(2, 1, 64, 64))
        assert set(out) == {Head.SEG, Head.CLS}


def test_bad_init_filters_and_pretrained():
    with pytest.raises(ValueError, match="init_filters"):
        _net(init_filters=2)
    with pytest.raises(ValueError, match="cls_hidden"):
        _net(cls_hidden=0)
    with pytest.raises(ValueError, match="pretrained"):
        _net(pretrained=True)  # no download switch: a path or nothing
    with pytest.raises(ValueError, match="init_filters=64"):
        _net(init_filters=8, pretrained="weights.pth")


def test_pretrained_loads_a_local_torchvision_layout_file(tmp_path):
    torch.manual_seed(1)
    # a stand-in for torchvision's resnet18 state dict: same names, 3 input channels, an fc layer
    source = resnet18(spatial_dims=2, n_input_channels=3, conv1_t_stride=2, bias_downsample=False, num_classes=10)
    path = tmp_path / "resnet18.pth"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, path)
    net = NMTNet(in_channels=1, init_filters=64, pretrained=str(path))
    loaded = net.encoder.resnet.state_dict()
    torch.testing.assert_close(loaded["conv1.weight"], source.conv1.weight.detach().sum(dim=1, keepdim=True))
    torch.testing.assert_close(loaded["layer3.0.downsample.0.weight"], source.layer3[0].downsample[0].weight.detach())
    # a file of another architecture is refused
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="pretrained"):
        NMTNet(init_filters=64, pretrained=str(tmp_path / "bad.pth"))


def test_preset_builds_and_runs():
    preset = yaml.safe_load(PRESET.read_text())
    assert preset["network_name"] == "nmtnet"
    net = create_network(preset["network_name"], **preset["network_kwargs"]).eval()
    size = preset["image_size"]
    with torch.no_grad():
        out = net(torch.randn(1, 1, *size))
    assert out[Head.SEG].shape == (1, 1, *size)
    assert out[Head.CLS].shape == (1, 2)
