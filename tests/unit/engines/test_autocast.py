from __future__ import annotations

import pytest
import torch
from monai.inferers import SimpleInferer

from pipeline.engines import AutocastInferer, MultiTaskInferer, cpu_has_fast_bf16
from pipeline.presets import available_presets, load_preset


class _ConvNet(torch.nn.Module):
    """A convolution for the seg head and a linear layer for the cls head; records the dtype each one computed in."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
        self.fc = torch.nn.Linear(1, 2)
        self.seen = []

    def forward(self, x):
        seg = self.conv(x)
        cls = self.fc(seg.mean(dim=(2, 3)))
        self.seen = [seg.dtype, cls.dtype]
        return {"seg": seg, "cls": cls, "index": torch.tensor([1, 2])}


def test_disabled_is_the_inner_inferer_unchanged():
    torch.manual_seed(0)
    net, x = _ConvNet(), torch.rand(2, 1, 32, 32)
    out = AutocastInferer(enabled=False)(x, net)
    ref = SimpleInferer()(x, net)
    assert net.seen == [torch.float32, torch.float32]
    assert torch.equal(out["seg"], ref["seg"]) and torch.equal(out["cls"], ref["cls"])


def test_enabled_computes_in_bfloat16_and_returns_float32_close_to_float32():
    torch.manual_seed(0)
    net, x = _ConvNet(), torch.rand(2, 1, 32, 32)
    ref = net(x)
    out = AutocastInferer()(x, net)
    assert net.seen == [torch.bfloat16, torch.bfloat16]          # the forward ran in reduced precision
    assert out["seg"].dtype == torch.float32 and out["cls"].dtype == torch.float32
    assert out["index"].dtype == torch.int64                        # integer outputs are left alone
    torch.testing.assert_close(out["seg"], ref["seg"], atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(out["cls"], ref["cls"], atol=3e-2, rtol=3e-2)


def test_enabled_training_step_keeps_float32_weights_and_gradients():
    torch.manual_seed(0)
    net = _ConvNet()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = net.conv.weight.detach().clone()
    out = AutocastInferer()(torch.rand(4, 1, 32, 32), net)
    (out["seg"].mean() + out["cls"].logsumexp(1).mean()).backward()   # outside the autocast region
    assert net.conv.weight.grad is not None and net.conv.weight.grad.dtype == torch.float32
    opt.step()
    assert net.conv.weight.dtype == torch.float32 and not torch.equal(net.conv.weight, before)


def test_wraps_another_inferer():
    net, x = _ConvNet(), torch.rand(1, 1, 40, 40)
    out = AutocastInferer(MultiTaskInferer(roi_size=(32, 32)))(x, net)
    assert out["seg"].shape == (1, 1, 40, 40) and out["seg"].dtype == torch.float32
    assert net.seen == [torch.bfloat16, torch.bfloat16]


def test_rejects_a_non_callable_inferer():
    with pytest.raises(TypeError, match="inferer must be a MONAI inferer"):
        AutocastInferer(inferer="simple")


def test_cpu_detection_is_a_bool_and_false_without_the_probe(monkeypatch):
    assert isinstance(cpu_has_fast_bf16(), bool)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert cpu_has_fast_bf16() is False


def test_every_preset_says_whether_it_trains_in_bfloat16_on_cpu():
    flags = {name: load_preset(name)["cpu_bf16"] for name in available_presets()}
    on_amx = "$pipeline.engines.cpu_has_fast_bf16()"   # bfloat16 where the CPU has AMX, float32 elsewhere
    assert all(flag is False or flag == on_amx for flag in flags.values()), flags
    assert flags["nmtnet"] == on_amx                # the default network: measured 1.37x per step
    assert flags["segresnet_effnet"] is False       # depthwise convolutions: measured slower in bfloat16
