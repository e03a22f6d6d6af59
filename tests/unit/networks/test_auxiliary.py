"""Auxiliary classification heads (``pipeline.networks.auxiliary``) on every registered network with a classifier."""

from __future__ import annotations

import copy

import pytest
import torch

from pipeline.export import ExportWrapper
from pipeline.keys import Head
from pipeline.networks import AuxiliaryClassifiers, with_auxiliary_classifiers
from pipeline.registry import create_network, list_networks, network_info

CLASSIFIERS = [name for name in list_networks() if "cls" in network_info(name).tasks]


def _build(name: str, num_classes: int = 2) -> AuxiliaryClassifiers:
    torch.manual_seed(0)
    return AuxiliaryClassifiers(create_network(name, init_filters=8, num_classes=num_classes), num_classes,
                                {"birads": 4})


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_heads_read_the_features_of_the_networks_own_classifier(name):
    net = _build(name, num_classes=3).train()
    classifier = [m for m in net.network.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 3][-1]
    seen = {}
    classifier.register_forward_hook(lambda module, args, output: seen.update(features=args[0], logits=output))
    inner = getattr(net.network, "crop_classifier", None) is not None   # LesionCropNet: its logits add the inner's
    if inner:
        net.network.network.register_forward_hook(lambda module, args, output: seen.update(inner=output[Head.CLS]))
    out = net(torch.randn(2, 1, 64, 64))
    assert out[Head.CLS].shape == (2, 3) and out["birads"].shape == (2, 4)
    # the hooked layer is the one that gives the class logits (with a lesion crop: the crop classifier's, added to the
    # inner network's), and the head reads its input
    torch.testing.assert_close(out[Head.CLS], seen["logits"] + (seen["inner"] if inner else 0))
    torch.testing.assert_close(out["birads"], net.heads["birads"](seen["features"]))
    # the auxiliary loss alone trains the shared features below the classifier
    out["birads"].square().mean().backward()
    assert net.heads["birads"].weight.grad is not None
    shared = [p for n, p in net.network.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert shared, f"{name}: no gradient of the auxiliary head reaches the network"
    assert classifier.weight.grad is None  # the class logits' own layer is not what the auxiliary target trains


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_eval_mode_and_export_see_the_networks_contract(name):
    net = _build(name).eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        out = net(x)
        assert set(out) == set(net.network(x))
        seg, cls = ExportWrapper(net).eval()(x)
        traced = torch.jit.trace(ExportWrapper(net).eval(), x, check_trace=False)
        t_seg, t_cls = traced(x)
    torch.testing.assert_close(t_cls, cls, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(t_seg, seg, rtol=1e-4, atol=1e-4)
    # a copy (EMA, batch-norm re-estimation) keeps working heads of its own
    clone = copy.deepcopy(net).train()
    assert clone(x)["birads"].shape == (1, 4)
    assert net._features is None


def test_state_dict_has_the_heads_and_no_heads_means_the_network_itself():
    net = _build("nmtnet")
    assert "heads.birads.weight" in net.state_dict()
    plain = create_network("nmtnet", init_filters=8)
    assert with_auxiliary_classifiers(plain, 2, {}) is plain


def test_bad_arguments():
    plain = create_network("segresnet_seg_only", init_filters=8)
    with pytest.raises(ValueError, match="no linear layer with num_classes=2"):
        AuxiliaryClassifiers(plain, 2, {"birads": 4})
    with pytest.raises(ValueError, match="heads must name"):
        AuxiliaryClassifiers(create_network("nmtnet", init_filters=8), 2, {})
    with pytest.raises(ValueError, match=r"heads\['cls'\]"):
        AuxiliaryClassifiers(create_network("nmtnet", init_filters=8), 2, {"cls": 4})
    with pytest.raises(ValueError, match=r"heads\['birads'\]"):
        AuxiliaryClassifiers(create_network("nmtnet", init_filters=8), 2, {"birads": 1})
