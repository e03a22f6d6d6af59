"""Tests of the lesion-crop classifier (``pipeline.networks.lesion_crop``); the network contract is checked for it
with every registered network in ``test_contract.py``."""

from __future__ import annotations

import pytest
import torch

from pipeline.keys import Head
from pipeline.networks.lesion_crop import crop_boxes, lesion_boxes
from pipeline.registry import create_network


def _mask(height: int, width: int, rows: slice, cols: slice, batch: int = 1) -> torch.Tensor:
    mask = torch.zeros(batch, 1, height, width)
    mask[..., rows, cols] = 1.0
    return mask


def test_lesion_box_is_the_square_around_the_mask_with_context():
    # a 10 (rows) x 20 (cols) lesion at rows 30-39, columns 10-29 of a 64 x 128 image
    box = lesion_boxes(_mask(64, 128, slice(30, 40), slice(10, 30)), context=0.25, min_side=8.0)[0]
    side = 20 * 1.5   # the longer side, widened by a quarter on each side
    expected = torch.tensor([20 / 128 * 2 - 1, 35 / 64 * 2 - 1, side / 128, side / 64])
    torch.testing.assert_close(box, expected)


def test_an_image_without_a_lesion_is_cropped_whole_and_a_tiny_one_to_the_minimum_side():
    boxes = lesion_boxes(torch.cat([torch.zeros(1, 1, 64, 64), _mask(64, 64, slice(10, 11), slice(20, 21))]),
                         context=0.0, min_side=8.0)
    torch.testing.assert_close(boxes[0], torch.tensor([0.0, 0.0, 1.0, 1.0]))
    torch.testing.assert_close(boxes[1, 2:], torch.tensor([8 / 64, 8 / 64]))


def test_the_crop_reads_the_box_at_the_crop_size():
    # an image whose value is its column index: a crop of columns 32-63 spans those values, at the crop's resolution
    image = torch.arange(128, dtype=torch.float32).expand(1, 1, 128, 128).contiguous()
    box = lesion_boxes(_mask(128, 128, slice(48, 80), slice(32, 64)), context=0.0, min_side=8.0)
    crop = crop_boxes(image, box, size=64)
    assert crop.shape == (1, 1, 64, 64)
    assert 31.5 <= float(crop.min()) <= 32.5 and 62.5 <= float(crop.max()) <= 63.5
    # a whole-image box of an image without a lesion gives the image resampled
    whole = crop_boxes(image, lesion_boxes(torch.zeros(1, 1, 128, 128), 0.25, 8.0), size=128)
    torch.testing.assert_close(whole, image)


def test_the_network_segments_at_seg_scale_and_returns_the_input_size():
    net = create_network("segresnet_shared_crop", init_filters=8, seg_scale=0.5, classifier_features="decoder").eval()
    seen = []
    net.network.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[-2:])))
    with torch.no_grad():
        out = net(torch.randn(2, 1, 128, 96))
    assert seen == [(64, 64)]   # 48 rounded up to a multiple of 32
    assert out[Head.SEG].shape == (2, 1, 128, 96) and out[Head.CLS].shape == (2, 2)


def test_a_traced_graph_recomputes_the_box_for_each_input():
    """The box depends on the predicted mask: a traced export must cut each input's own crop, not replay the box it
    was traced with."""

    class Crop(torch.nn.Module):
        def forward(self, image: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
            return crop_boxes(image, lesion_boxes(prob, 0.25, 8.0), 32)

    image = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    traced_on, other = _mask(64, 64, slice(5, 15), slice(5, 20)), _mask(64, 64, slice(30, 60), slice(40, 50))
    with torch.no_grad():
        traced = torch.jit.trace(Crop(), (image, traced_on), check_trace=False)
        for prob in (other, torch.zeros(1, 1, 64, 64)):
            torch.testing.assert_close(traced(image, prob), Crop()(image, prob))
        assert not torch.allclose(traced(image, other), traced(image, traced_on))


@pytest.mark.parametrize("kwargs, match", [({"seg_scale": 0.0}, "seg_scale"), ({"crop_size": 16}, "crop_size"),
                                           ({"context": -0.1}, "context"), ({"crop_filters": 2}, "crop_filters")])
def test_bad_crop_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_network("segresnet_shared_crop", **kwargs)


def test_grad_cam_leaves_out_the_crop_classifier_whose_maps_are_not_aligned_with_the_image():
    from pipeline.export import ExportWrapper
    from pipeline.inference.explain import ClassLogits, cam_layer_candidates

    net = create_network("segresnet_shared_crop", init_filters=8, seg_scale=1.0).eval()
    layers = cam_layer_candidates(ClassLogits(ExportWrapper(net)), torch.randn(1, 1, 64, 64))
    assert layers and not any("crop_classifier" in name for name in layers)
    assert any("crop_classifier" in name for name, m in net.named_modules() if isinstance(m, torch.nn.Conv2d))
