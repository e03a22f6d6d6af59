from __future__ import annotations

import torch

from pipeline.inference.explain import GradCAMExplainer, cam_layer_candidates, unit_range


class _BrightIsMalignant(torch.nn.Module):
    """seg = a feature map; cls: class 1's logit grows with the image's brightness, class 0's falls."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Conv2d(1, 2, 3, padding=1)
        self.down = torch.nn.Conv2d(2, 2, 3, stride=4, padding=1)
        with torch.no_grad():
            self.features.weight.zero_()
            self.features.weight[:, 0, 1, 1] = 1.0
            self.features.bias.zero_()
            self.down.weight.zero_()
            self.down.weight[0, 0, 1, 1] = self.down.weight[1, 1, 1, 1] = 1.0
            self.down.bias.zero_()

    def forward(self, x):
        coarse = torch.relu(self.down(torch.relu(self.features(x))))
        pooled = coarse.mean(dim=(2, 3))
        return {"seg": x, "cls": torch.stack([-pooled[:, 0], pooled[:, 1]], dim=1)}


def test_the_region_that_raises_the_class_is_hot_not_cold():
    """MONAI's default CAM normaliser maps the maximum to 0; the explainer's heat is 1 where the evidence is."""
    image = torch.zeros(1, 64, 64)
    image[:, 8:24, 8:24] = 1.0   # the only evidence for class 1
    heat = GradCAMExplainer(lambda: _BrightIsMalignant(), torch.device("cpu"))(image, 1)
    assert heat.shape == (64, 64)
    assert heat[8:24, 8:24].mean() > 0.5 > heat[40:, 40:].mean()
    assert heat.max() == 1.0


def test_candidates_prefer_the_coarsest_map_at_stride_16_or_finer():
    from pipeline.inference.explain import ClassLogits

    names = cam_layer_candidates(ClassLogits(_BrightIsMalignant()), torch.rand(1, 1, 64, 64))
    assert names == ["net.down", "net.features"]   # 16 x 16 (stride 4) before the full-resolution 64 x 64


def test_unit_range_scales_each_map_and_leaves_a_constant_one_at_zero():
    maps = torch.stack([torch.arange(4.0).view(1, 2, 2), torch.full((1, 2, 2), 3.0)])
    out = unit_range(maps)
    assert torch.equal(out[0, 0], torch.tensor([[0.0, 1 / 3], [2 / 3, 1.0]]))
    assert torch.equal(out[1], torch.zeros(1, 2, 2))
