"""The single-task baselines: the head a baseline does not learn is a parameter-free constant."""

from __future__ import annotations

import pytest
import torch

from pipeline.keys import Head
from pipeline.networks.single_task import EMPTY_MASK_LOGIT
from pipeline.registry import create_network, register_network


def test_seg_only_has_no_classifier_and_uniform_class_logits():
    net = create_network("segresnet_seg_only", init_filters=8, num_classes=3).eval()
    shared = create_network("segresnet_shared", init_filters=8, num_classes=3)
    # exactly the SegResNet of the multi-task networks, without the head
    segresnet = {n for n, _ in shared.named_parameters() if n.startswith("segresnet.")}
    assert {n for n, _ in net.named_parameters()} == segresnet
    out = net(torch.randn(2, 1, 64, 64))
    assert torch.equal(out[Head.CLS], torch.zeros(2, 3))


def test_cls_only_is_the_parallel_networks_classifier_and_predicts_empty_masks():
    net = create_network("efficientnet_cls_only", init_filters=8).eval()
    parallel = create_network("segresnet_effnet_parallel", init_filters=8)
    assert {n for n, _ in net.named_parameters()} == {
        n for n, _ in parallel.named_parameters() if n.startswith("classifier.")
    }
    out = net(torch.randn(2, 1, 64, 96))
    assert out[Head.SEG].shape == (2, 1, 64, 96)
    assert torch.all(out[Head.SEG] == EMPTY_MASK_LOGIT)
    assert torch.sigmoid(out[Head.SEG]).max() < 1e-3


@pytest.mark.parametrize("tasks", [(), ("depth",)])
def test_register_rejects_unknown_tasks(tasks):
    with pytest.raises(ValueError, match="tasks"):
        register_network("never_registered", tasks=tasks)
