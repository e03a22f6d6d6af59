"""What is specific to the SegResNet + EfficientNet configurations (paper 002) and to ``flexunet_mt``.

The shared network contract (shapes, gradients, tracing, ...) is in ``test_contract.py``.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.keys import Head
from pipeline.networks.flexunet_mt import FlexUNetMultiTask
from pipeline.networks.efficientnet import EfficientNetClassifier
from pipeline.networks.segresnet_mt import (
    SegResNetEffNet,
    SegResNetEffNetCascade,
    SegResNetEffNetParallel,
    SegResNetShared,
)
from pipeline.registry import create_network, network_info

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
PRESETS = [
    "segresnet_shared", "segresnet_effnet", "segresnet_effnet_cascade", "segresnet_effnet_parallel", "flexunet_mt",
]
SMALL = {"init_filters": 8}


def _x(batch: int = 2, channels: int = 1, size: tuple[int, int] = (64, 64)) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(batch, channels, *size)


def _grad_names(net: torch.nn.Module, prefix: str) -> list[str]:
    return [n for n, p in net.named_parameters() if n.startswith(prefix) and p.grad is not None]


# ---------------------------------------------------------------- presets and registry


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loads_and_builds_its_network(name):
    preset = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    assert preset["network_name"] == name
    assert {"network_kwargs", "image_size", "batch_size", "learning_rate", "extra_input_channels"} <= set(preset)
    assert all(s % 32 == 0 for s in preset["image_size"])
    assert {"seg_loss", "cls_loss", "seg_weight", "cls_weight", "aux_weights"} <= set(preset)
    net = create_network(preset["network_name"], **preset["network_kwargs"]).eval()
    with torch.no_grad():
        out = net(_x(1, size=(64, 64)))
    assert out[Head.SEG].shape == (1, 1, 64, 64)
    assert out[Head.CLS].shape == (1, 2)


@pytest.mark.parametrize("name", PRESETS)
def test_registered_with_a_paper_reference(name):
    assert network_info(name).paper


# ---------------------------------------------------------------- segresnet_shared


def test_shared_head_reads_the_bottleneck():
    net = SegResNetShared(**SMALL).eval()
    assert net.cls_head.mlp[-1].in_features == 8 * 2**3  # deepest level of blocks_down=(1, 2, 2, 4)
    x = _x()
    with torch.no_grad():
        bottleneck, _ = net.segresnet.encode(x)
        out = net(x)
        torch.testing.assert_close(out[Head.CLS], net.cls_head(bottleneck), rtol=0, atol=0)
        # the segmentation is MONAI's SegResNet forward, unchanged
        torch.testing.assert_close(out[Head.SEG], net.segresnet(x), rtol=0, atol=0)
    assert bottleneck.shape[-2:] == (8, 8)


def test_shared_cls_gradient_reaches_the_encoder_only():
    net = SegResNetShared(**SMALL).train()
    net(_x())[Head.CLS].sum().backward()
    assert _grad_names(net, "segresnet.down_layers")
    assert not _grad_names(net, "segresnet.up_layers") and not _grad_names(net, "segresnet.conv_final")


def test_shared_fine_grained_classifier_pools_the_decoder_under_the_lesion():
    net = SegResNetShared(**SMALL, classifier_features="decoder").eval()
    # three decoder stages (8 * 4, 8 * 2, 8), the bottleneck (8 * 8) and the lesion-area fraction; MLP width 8 * 8
    assert net.cls_head.head.mlp[1].in_features == 32 + 16 + 8 + 64 + 1
    assert net.cls_head.head.mlp[1].out_features == 64
    x = _x()
    with torch.no_grad():
        out = net(x)
        # the segmentation is still MONAI's SegResNet forward, unchanged
        torch.testing.assert_close(out[Head.SEG], net.segresnet(x), rtol=0, atol=0)
        # another lesion probability changes the class logits: the classifier reads the predicted mask
        net.segresnet.conv_final[-1].conv.bias.add_(5.0)
        assert not torch.allclose(net(x)[Head.CLS], out[Head.CLS])


def test_shared_fine_grained_classifier_gradient_stops_at_the_mask():
    net = SegResNetShared(**SMALL, classifier_features="decoder").train()
    net(_x())[Head.CLS].sum().backward()
    assert _grad_names(net, "segresnet.down_layers") and _grad_names(net, "segresnet.up_layers")
    assert not _grad_names(net, "segresnet.conv_final")   # the lesion probability is detached


def test_shared_classifier_features_are_checked():
    with pytest.raises(ValueError, match="classifier_features"):
        SegResNetShared(**SMALL, classifier_features="texture")


# ---------------------------------------------------------------- segresnet_effnet


def test_effnet_reads_the_deepest_encoder_feature_by_default():
    net = SegResNetEffNet(**SMALL).eval()
    assert net.feature_level == 3
    first = net.classifier.blocks[0]
    assert first.in_channels == 8 * 2**3
    x = _x()
    with torch.no_grad():
        _, features = net.segresnet.encode(x)
        torch.testing.assert_close(net(x)[Head.CLS], net.classifier(features[3]), rtol=0, atol=0)
        # the MBConv stages take the stride-8 feature down to EfficientNet's stride 32
        assert net.classifier.blocks(features[3]).shape[-2:] == (2, 2)


def test_effnet_intermediate_level_and_gradients():
    net = SegResNetEffNet(feature_level=1, **SMALL).train()
    assert net.classifier.blocks[0].in_channels == 16
    net(_x())[Head.CLS].sum().backward()
    assert _grad_names(net, "segresnet.down_layers.1")
    assert not _grad_names(net, "segresnet.down_layers.2")  # deeper than the attachment level
    assert not _grad_names(net, "segresnet.up_layers")


@pytest.mark.parametrize("level", [0, 4, 1.5])
def test_effnet_bad_feature_level(level):
    with pytest.raises(ValueError, match="feature_level"):
        SegResNetEffNet(feature_level=level, **SMALL)


# ---------------------------------------------------------------- segresnet_effnet_cascade


def test_cascade_classifier_reads_image_and_probability():
    # train mode (batch statistics) without stochastic depth: deterministic, and an untrained EfficientNet's output
    # depends on its input there (in eval mode its initial running statistics flatten the signal)
    net = SegResNetEffNetCascade(in_channels=3, drop_connect_rate=0.0, **SMALL).train()
    assert net.classifier.stem[0].in_channels == 4
    x = _x(channels=3)
    with torch.no_grad():
        out = net(x)
        expected = net.classifier(torch.cat([x, torch.sigmoid(out[Head.SEG])], dim=1))
        torch.testing.assert_close(out[Head.CLS], expected, rtol=0, atol=0)
        # moving the segmentation alone (its last bias) moves the classification
        net.segresnet.conv_final[-1].conv.bias.add_(3.0)
        moved = net(x)
    assert not torch.allclose(moved[Head.CLS], out[Head.CLS], rtol=1e-3, atol=1e-4)


def test_cascade_two_seg_channels_uses_softmax_lesion_channel():
    net = SegResNetEffNetCascade(seg_channels=2, **SMALL).eval()
    x = _x()
    with torch.no_grad():
        out = net(x)
        expected = net.classifier(torch.cat([x, torch.softmax(out[Head.SEG], 1)[:, 1:2]], dim=1))
    torch.testing.assert_close(out[Head.CLS], expected, rtol=0, atol=0)


@pytest.mark.parametrize("detach", [False, True])
def test_cascade_detach_switch(detach):
    net = SegResNetEffNetCascade(detach_probability=detach, **SMALL).train()
    net(_x())[Head.CLS].sum().backward()
    reached = _grad_names(net, "segresnet.")
    assert bool(reached) is not detach


def test_cascade_probability_not_detached_by_default():
    assert inspect.signature(SegResNetEffNetCascade).parameters["detach_probability"].default is False


# ---------------------------------------------------------------- segresnet_effnet_parallel


def test_parallel_shares_nothing():
    net = SegResNetEffNetParallel(**SMALL).train()
    seg_ids = {id(p) for p in net.segresnet.parameters()}
    cls_ids = {id(p) for p in net.classifier.parameters()}
    assert not seg_ids & cls_ids
    assert len(seg_ids) + len(cls_ids) == len(list(net.parameters()))
    out = net(_x())
    out[Head.CLS].sum().backward(retain_graph=True)
    assert not _grad_names(net, "segresnet.")
    net.zero_grad(set_to_none=True)
    out[Head.SEG].sum().backward()
    assert not _grad_names(net, "classifier.")


def test_parallel_classifier_is_a_full_efficientnet_b0_at_width_16():
    net = SegResNetEffNetParallel()
    assert net.classifier.stem[0].out_channels == 32
    assert len(net.classifier.blocks) == 16  # B0: 1 + 2 + 2 + 3 + 3 + 4 + 1 MBConv blocks
    assert net.classifier.blocks[-1].out_channels == 320
    assert net.classifier.head.mlp[-1].in_features == 1280


# ---------------------------------------------------------------- EfficientNetClassifier and arguments


@pytest.mark.parametrize(
    "stride,first_out,n_blocks", [(1, 16, 16), (2, 16, 16), (4, 40, 13), (8, 80, 11), (16, 112, 8), (32, 320, 1)]
)
def test_efficientnet_classifier_keeps_the_b0_stages_below_its_input_stride(stride, first_out, n_blocks):
    clf = EfficientNetClassifier(in_channels=24, num_classes=3, input_stride=stride).eval()
    assert clf.blocks[0].out_channels == first_out
    assert len(clf.blocks) == n_blocks
    with torch.no_grad():
        out = clf(torch.randn(1, 24, 64 // stride, 64 // stride))
    assert out.shape == (1, 3)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"init_filters": 12}, "init_filters"),
        ({"blocks_down": (1,) * 7}, "blocks_down"),
        ({"blocks_down": (1, 0, 1)}, "blocks_down"),
        ({"blocks_up": (1,)}, "blocks_up"),
        ({"seg_dropout": 1.5}, "seg_dropout"),
        ({"effnet_width": 0}, "effnet_width"),
        ({"effnet_depth": -1}, "effnet_depth"),
        ({"drop_connect_rate": 1.0}, "drop_connect_rate"),
    ],
)
def test_bad_segresnet_effnet_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SegResNetEffNet(**{**SMALL, **kwargs})


def test_deeper_segresnet_still_fits_multiples_of_32():
    net = SegResNetEffNet(blocks_down=(1, 1, 1, 1, 1, 1), **SMALL).eval()
    assert net.feature_level == 5
    with torch.no_grad():
        out = net(_x(1, size=(64, 96)))
    assert out[Head.SEG].shape == (1, 1, 64, 96)


# ---------------------------------------------------------------- flexunet_mt


def test_flexunet_pretrained_is_off_by_default():
    assert inspect.signature(FlexUNetMultiTask).parameters["pretrained"].default is False
    assert FlexUNetMultiTask(**SMALL).pretrained is False


def test_flexunet_widths_and_head_on_the_deepest_feature():
    net = FlexUNetMultiTask(**SMALL).eval()
    assert net.decoder_channels == (128, 64, 32, 16, 8)
    assert net.cls_head.mlp[-1].in_features == 320  # efficientnet-b0's stride-32 feature
    assert isinstance(net.net.encoder._fc, torch.nn.Identity)  # EfficientNet's unused classifier is gone
    x = _x()
    with torch.no_grad():
        features = net.net.encoder(x)
        out = net(x)
        torch.testing.assert_close(out[Head.CLS], net.cls_head(features[-1]), rtol=0, atol=0)
        # the segmentation is FlexibleUNet's own forward
        torch.testing.assert_close(out[Head.SEG], net.net(x), rtol=0, atol=0)
    assert features[-1].shape[-2:] == (2, 2)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"backbone": "resnet18"}, "backbone"),
        ({"pretrained": "yes"}, "pretrained"),
        ({"init_filters": 0}, "init_filters"),
    ],
)
def test_flexunet_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FlexUNetMultiTask(**{**SMALL, **kwargs})
