from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from pipeline.data.sampling import class_balanced_sampler, oversample
from pipeline.transforms import RandSpeckleNoised, ToGreyd, extra_channels


def _items(counts):
    return [{"id": f"{c}_{i}", "cls": c} for c, n in counts.items() for i in range(n)]


def test_oversample_repeats_each_class_round_one_over_share():
    items = _items({0: 60, 1: 30, 2: 10})  # shares 0.6, 0.3, 0.1 -> factors 2, 3, 10
    out = oversample(items)
    counts = Counter(i["cls"] for i in out)
    assert counts == {0: 60 * 2, 1: 30 * 3, 2: 10 * 10}
    assert out[:2] == [items[0], items[0]]  # deterministic: each item followed by its copies
    with pytest.raises(ValueError, match="empty"):
        oversample([])


def test_class_balanced_sampler_draws_classes_evenly_and_is_seeded():
    items = _items({0: 90, 1: 10})
    draws = [items[i]["cls"] for i in class_balanced_sampler(items, seed=3)]
    assert len(draws) == 100 and 0.3 < np.mean(draws) < 0.7
    assert draws == [items[i]["cls"] for i in class_balanced_sampler(items, seed=3)]


def test_to_grey_keeps_meta_and_converts_rgb_and_grey_alpha():
    rgb = MetaTensor(torch.stack([torch.full((4, 5), 1.0), torch.zeros(4, 5), torch.zeros(4, 5)]),
                     meta={"filename_or_obj": "x.png"})
    out = ToGreyd(keys="image")({"image": rgb})["image"]
    assert out.shape == (1, 4, 5) and torch.allclose(out, torch.full((1, 4, 5), 0.299))
    assert out.meta["filename_or_obj"] == "x.png"
    grey_alpha = torch.rand(2, 4, 5)
    assert torch.equal(ToGreyd(keys="image")({"image": grey_alpha})["image"], grey_alpha[:1])
    grey = torch.rand(1, 4, 5)
    assert ToGreyd(keys="image")({"image": grey})["image"] is grey


def test_speckle_is_multiplicative_seeded_and_nonnegative():
    image = torch.zeros(1, 32, 32)
    image[:, :, 16:] = 1.0
    t = RandSpeckleNoised(keys="image", std=0.3, prob=1.0)
    t.set_random_state(0)
    out = t({"image": image})["image"]
    assert torch.all(out[:, :, :16] == 0)  # no echo, no speckle
    assert out[:, :, 16:].std() > 0.1 and out.min() >= 0
    t.set_random_state(0)
    assert torch.equal(out, t({"image": image})["image"])
    with pytest.raises(ValueError, match="std"):
        RandSpeckleNoised(keys="image", std=-1)


def test_extra_channels_appends_the_gradient_magnitude_and_rejects_unknown_names():
    image = torch.zeros(1, 32, 32)
    image[:, :, 16:] = 1.0
    out = extra_channels(["gaussian_gradient_magnitude"])({"image": image})["image"]
    assert out.shape == (2, 32, 32) and out[1, :, 15:17].mean() > out[1, :, :8].mean()
    assert extra_channels([])({"image": image})["image"] is image
    with pytest.raises(ValueError, match="unknown extra input channel 'edges'"):
        extra_channels(["edges"])
