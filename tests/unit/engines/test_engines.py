from __future__ import annotations

import pytest
import torch

from pipeline.engines import MultiTaskInferer, MultiTaskPrepareBatch


class _Net(torch.nn.Module):
    """Seg = the input; cls = the mean, so outputs are easy to predict."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x):
        self.calls.append(tuple(x.shape[-2:]))
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError("size contract")
        mean = x.mean(dim=(1, 2, 3))
        return {"seg": x[:, :1] * 2, "cls": torch.stack([mean, -mean], dim=1)}


def test_prepare_batch_builds_the_target_dict():
    batch = {"image": torch.rand(2, 1, 8, 8), "label": torch.ones(2, 1, 8, 8, dtype=torch.uint8),
             "cls": torch.tensor([[1], [0]])}
    image, target = MultiTaskPrepareBatch()(batch, device="cpu")
    assert image.shape == (2, 1, 8, 8)
    assert target["seg"].dtype == torch.float32 and target["cls"].tolist() == [1, 0]
    with pytest.raises(KeyError, match="batch has no \\['cls'\\]"):
        MultiTaskPrepareBatch()({"image": image, "label": image}, device="cpu")


def test_prepare_batch_adds_the_auxiliary_targets():
    batch = {"image": torch.rand(2, 1, 8, 8), "label": torch.ones(2, 1, 8, 8), "cls": torch.tensor([1, 0]),
             "aux": {"birads": torch.tensor([3, -1])}}
    _, target = MultiTaskPrepareBatch()(batch, device="cpu")
    assert set(target) == {"seg", "cls", "birads"}
    assert target["birads"].dtype == torch.long and target["birads"].tolist() == [3, -1]


def test_prepare_batch_hands_the_network_plain_tensors_unless_asked():
    from monai.data import MetaTensor

    meta = {"filename_or_obj": ["a.png", "b.png"]}
    batch = {"image": MetaTensor(torch.rand(2, 1, 8, 8), meta=meta), "label": MetaTensor(torch.ones(2, 1, 8, 8)),
             "cls": torch.tensor([1, 0])}
    image, target = MultiTaskPrepareBatch()(batch, device="cpu")
    assert type(image) is torch.Tensor and type(target["seg"]) is torch.Tensor
    torch.testing.assert_close(image, batch["image"].as_tensor())
    assert isinstance(batch["image"], MetaTensor)  # the batch itself keeps its metadata for post-processing
    kept, _ = MultiTaskPrepareBatch(keep_meta=True)(batch, device="cpu")
    assert isinstance(kept, MetaTensor) and kept.meta["filename_or_obj"] == ["a.png", "b.png"]


def test_prepare_batch_gives_a_channels_last_network_a_channels_last_image():
    batch = {"image": torch.rand(2, 3, 8, 8), "label": torch.ones(2, 1, 8, 8), "cls": torch.tensor([1, 0])}
    plain, _ = MultiTaskPrepareBatch()(batch, device="cpu")
    assert plain.is_contiguous() and not plain.is_contiguous(memory_format=torch.channels_last)
    image, target = MultiTaskPrepareBatch(channels_last=True)(batch, device="cpu")
    assert image.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(image, batch["image"])
    assert target["seg"].is_contiguous()  # the target keeps its layout: only the network's input is converted


def test_inferer_small_image_is_padded_and_cropped_back():
    net = _Net()
    x = torch.rand(1, 1, 50, 60)
    out = MultiTaskInferer(roi_size=(64, 64))(x, net)
    assert out["seg"].shape == (1, 1, 50, 60)
    torch.testing.assert_close(out["seg"], x * 2)
    assert net.calls == [(64, 64)]


def test_inferer_large_image_tiles_seg_and_resizes_for_cls():
    net = _Net()
    x = torch.rand(1, 1, 128, 160)
    out = MultiTaskInferer(roi_size=(64, 64), mode="constant")(x, net)
    torch.testing.assert_close(out["seg"], x * 2, rtol=1e-5, atol=1e-5)
    assert out["cls"].shape == (1, 2)
    assert net.calls[-1] == (64, 64) and len(net.calls) > 2
    # area resizing to the ROI keeps the mean up to the overlap of adaptive pooling bins
    torch.testing.assert_close(out["cls"][0, 0], x.mean(), rtol=0, atol=2e-3)


def test_inferer_rejects_bad_roi():
    with pytest.raises(ValueError, match="roi_size"):
        MultiTaskInferer(roi_size=(64,))


class _LeftNet(torch.nn.Module):
    """Seg marks the left half; cls is the mean of the left half, so a flip changes both heads."""

    def forward(self, x):
        w = x.shape[-1]
        seg = torch.zeros_like(x[:, :1])
        seg[..., : w // 2] = 1.0
        left = x[..., : w // 2].mean(dim=(1, 2, 3))
        return {"seg": seg, "cls": torch.stack([left, -left], dim=1), "aux": seg}


def test_inferer_flip_tta_averages_both_heads():
    x = torch.zeros(1, 1, 64, 64)
    x[..., 32:] = 1.0  # bright right half
    plain = MultiTaskInferer(roi_size=(64, 64))(x, _LeftNet())
    tta = MultiTaskInferer(roi_size=(64, 64), flip_tta=True)(x, _LeftNet())
    assert plain["seg"].mean() == 0.5 and plain["cls"][0, 0] == 0.0
    # the flipped pass marks the right half, flipped back it is the right half: the average is 0.5 everywhere
    torch.testing.assert_close(tta["seg"], torch.full_like(x, 0.5))
    torch.testing.assert_close(tta["cls"], torch.tensor([[0.5, -0.5]]))
    assert "aux" in tta
