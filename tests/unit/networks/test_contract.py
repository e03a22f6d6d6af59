"""The network contract, checked for every registered network (a new network is tested the day it is added) and for
the variants of them that presets and benchmark rows train."""

from __future__ import annotations

import pytest
import torch

from pipeline.export import ExportWrapper
from pipeline.keys import Head
from pipeline.registry import create_network, list_networks, network_info

NETWORKS = list_networks()
SMALL = {"init_filters": 8}  # the width argument every network takes; small keeps the suite fast
# every registered network at its defaults, and each switch value that changes a network's forward (the
# lesion-focused classifiers read the predicted mask, group norm keeps no running statistics): the benchmark rows
# train these, and a variant is held to the same contract as the network it varies
VARIANTS = {
    "segresnet_shared[decoder]": ("segresnet_shared", {"classifier_features": "decoder"}),
    "segresnet_shared[bottleneck]": ("segresnet_shared", {"classifier_features": "bottleneck"}),
    "segresnet_shared_crop[decoder]": ("segresnet_shared_crop", {"classifier_features": "decoder"}),
    "segresnet_shared_crop[mask]": ("segresnet_shared_crop", {"seg_scale": 1.0, "crop_image": False}),
    "nmtnet[bottleneck]": ("nmtnet", {"classifier_features": "bottleneck"}),
    "nmtnet[global]": ("nmtnet", {"classifier_features": "global"}),
    "nmtnet[group]": ("nmtnet", {"norm": "group", "init_filters": 16}),
}
CONFIGURATIONS = {**{name: (name, {}) for name in NETWORKS}, **VARIANTS}


def _build(configuration: str, **kwargs) -> torch.nn.Module:
    name, variant = CONFIGURATIONS[configuration]
    torch.manual_seed(0)
    return create_network(name, **{**SMALL, **variant, **kwargs})


def _tasks(configuration: str) -> tuple[str, ...]:
    return network_info(CONFIGURATIONS[configuration][0]).tasks


def _joint_loss(out: dict, mask: torch.Tensor, label: torch.Tensor, tasks=("seg", "cls")) -> torch.Tensor:
    """The sum of the losses of the tasks the network learns (a single-task baseline's other head is constant)."""
    terms = {
        "seg": lambda: torch.nn.functional.binary_cross_entropy_with_logits(out[Head.SEG], mask),
        "cls": lambda: torch.nn.functional.cross_entropy(out[Head.CLS], label),
    }
    return sum(terms[task]() for task in tasks)


def test_registry_lists_the_zoo():
    expected = {
        "segresnet_shared", "segresnet_effnet", "segresnet_effnet_cascade", "segresnet_effnet_parallel",
        "nmtnet", "mtil", "mtl_oca", "unetpp_mt", "flexunet_mt", "segresnet_seg_only", "efficientnet_cls_only",
    }
    assert expected <= set(NETWORKS)
    assert network_info("segresnet_effnet").tasks == ("seg", "cls")
    assert network_info("segresnet_seg_only").tasks == ("seg",)
    assert network_info("efficientnet_cls_only").tasks == ("cls",)


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(KeyError, match="segresnet_shared"):
        create_network("no_such_network")


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
@pytest.mark.parametrize("in_channels,num_classes,size", [(1, 2, (64, 64)), (3, 3, (64, 96)), (1, 3, (96, 64))])
def test_output_keys_shapes_dtypes(configuration, in_channels, num_classes, size):
    net = _build(configuration, in_channels=in_channels, num_classes=num_classes).eval()
    with torch.no_grad():
        out = net(torch.randn(2, in_channels, *size))
    assert isinstance(out, dict)
    assert out[Head.SEG].shape == (2, 1, *size)
    assert out[Head.CLS].shape == (2, num_classes)
    for key in (Head.SEG, Head.CLS):
        assert out[key].dtype == torch.float32
        assert torch.isfinite(out[key]).all()
    # the same return type in train mode (auxiliary outputs allowed under other keys)
    train_out = net.train()(torch.randn(2, in_channels, *size))
    assert {Head.SEG, Head.CLS} <= set(train_out)


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_two_seg_channels(configuration):
    net = _build(configuration, seg_channels=2).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 64, 64))
    assert out[Head.SEG].shape == (1, 2, 64, 64)


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_gradient_reaches_every_parameter(configuration):
    net = _build(configuration).train()
    out = net(torch.randn(2, 1, 64, 64))
    loss = sum(v.float().square().mean() for v in _tensors(out))
    loss.backward()
    exempt = tuple(getattr(net, "parameters_without_gradient", ()))
    missing = [n for n, p in net.named_parameters() if p.grad is None and not n.startswith(exempt)]
    assert not missing, f"no gradient reaches: {missing[:10]}"


def _tensors(out):
    for value in out.values():
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from (v for v in value if isinstance(v, torch.Tensor))


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_eval_is_deterministic_and_state_dict_round_trips(configuration):
    net = _build(configuration).eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        first, second = net(x), net(x)
        clone = _build(configuration)
        clone.load_state_dict(net.state_dict())
        third = clone.eval()(x)
    for key in (Head.SEG, Head.CLS):
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0)
        torch.testing.assert_close(first[key], third[key], rtol=0, atol=0)


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_batch_norm_statistics_follow_training_within_an_epoch(configuration):
    """After 30 steps (a third of a BUS-BRA epoch at batch 16) a batch norm's running statistics must owe at most 5 %
    to their initial values. TF's momentum (0.01, MONAI's EfficientNet default) leaves 74 % and made the eval-mode
    EfficientNet classifiers give one output for every image after 1-3 epochs (BENCHMARKS.md)."""
    norms = [m for m in _build(configuration).modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        initial_share = 0.0 if norm.momentum is None else (1.0 - norm.momentum) ** 30
        assert initial_share <= 0.05, f"{configuration}: {norm} keeps {initial_share:.0%} of its initial statistics"


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_export_wrapper_traces_and_matches_eager(configuration):
    net = _build(configuration).eval()
    wrapper = ExportWrapper(net).eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        seg, cls = wrapper(x)
        traced = torch.jit.trace(wrapper, x, check_trace=False)
        t_seg, t_cls = traced(x)
    torch.testing.assert_close(t_seg, seg, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(t_cls, cls, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_twenty_steps_lower_the_joint_loss(configuration):
    torch.manual_seed(0)
    x = torch.randn(4, 1, 64, 64)
    mask = torch.zeros(4, 1, 64, 64)
    mask[:, :, 16:40, 20:44] = 1.0
    x = x + 2 * mask
    label = torch.tensor([0, 1, 0, 1])
    net = _build(configuration).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = _joint_loss(net(x), mask, label, _tasks(configuration))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.9, losses


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
@pytest.mark.parametrize(
    "kwargs,match",
    [({"in_channels": 4}, "in_channels"), ({"num_classes": 5}, "num_classes"), ({"dropout": 1.5}, "dropout")],
)
def test_bad_arguments(configuration, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _build(configuration, **kwargs)


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_bad_input_size(configuration):
    net = _build(configuration).eval()
    with pytest.raises(ValueError, match="divisible by 32"):
        net(torch.randn(1, 1, 50, 64))
    with pytest.raises(ValueError, match="expected input of shape"):
        net(torch.randn(1, 2, 64, 64))


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_gradcam_explains_every_network_with_a_classification_head(configuration):
    """`bmtl predict --explain` works for each network whose class depends on the image (a residual block that
    adds in place after the best layer makes the explainer take the next one); a segmentation-only network is
    refused with a message, not a traceback from autograd."""
    from pipeline.inference.explain import GradCAMExplainer

    net = ExportWrapper(_build(configuration, in_channels=1, num_classes=3)).eval()
    explainer = GradCAMExplainer(lambda: net, torch.device("cpu"))
    image = torch.rand(1, 64, 64, generator=torch.Generator().manual_seed(0))
    if "cls" not in _tasks(configuration):
        with pytest.raises(RuntimeError, match="no convolution feeds the classification head"):
            explainer(image, 1)
        return
    heat = explainer(image, 1)
    assert heat.shape == (64, 64) and 0.0 <= heat.min() and heat.max() <= 1.0 and heat.std() > 0
    assert explainer.layer_used is not None
    assert explainer(image, 0).shape == (64, 64)   # the explainer is reused for the next image
