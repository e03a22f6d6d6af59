"""Tests of ``pipeline.transforms``: the Gaussian gradient magnitude channel of MTL-OCA (paper 003) and the GIN
augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from pipeline.transforms import (
    GaussianGradientMagnitude,
    GaussianGradientMagnitudeD,
    GaussianGradientMagnitudeDict,
    GaussianGradientMagnituded,
    RandGlobalIntensityNonlinear,
    RandGlobalIntensityNonlineard,
)


def _step_image(channels: int = 1) -> np.ndarray:
    """A vertical edge at column 32: left half 0, right half 200."""
    img = np.zeros((channels, 64, 64), dtype=np.float32)
    img[:, :, 32:] = 200.0
    return img


@pytest.mark.parametrize("as_tensor", [False, True])
def test_array_appends_a_normalised_channel(as_tensor):
    img = _step_image()
    data = torch.from_numpy(img) if as_tensor else img
    out = GaussianGradientMagnitude(sigma=1.0)(data)
    assert isinstance(out, torch.Tensor if as_tensor else np.ndarray)
    out = np.asarray(out)
    assert out.shape == (2, 64, 64)
    np.testing.assert_array_equal(out[0], img[0])  # the image is kept as channel 0
    assert out[1].min() == pytest.approx(0.0) and out[1].max() == pytest.approx(1.0)


def test_edge_has_high_magnitude_and_flat_areas_none():
    mag = GaussianGradientMagnitude(sigma=1.0, append=False)(_step_image())[0]
    assert mag[:, 31:33].min() > 0.9  # at the edge
    assert mag[:, :26].max() < 1e-3 and mag[:, 38:].max() < 1e-3  # flat areas, a few sigma away


def test_replace_and_channel_wise_counts():
    rgb = _step_image(3)
    assert GaussianGradientMagnitude()(rgb).shape == (4, 64, 64)
    assert GaussianGradientMagnitude(append=False)(rgb).shape == (1, 64, 64)
    assert GaussianGradientMagnitude(channel_wise=True)(rgb).shape == (6, 64, 64)
    assert GaussianGradientMagnitude(append=False, channel_wise=True)(rgb).shape == (3, 64, 64)


def test_larger_sigma_widens_the_edge():
    narrow = GaussianGradientMagnitude(sigma=1.0, append=False)(_step_image())[0, 0]
    wide = GaussianGradientMagnitude(sigma=3.0, append=False)(_step_image())[0, 0]
    assert (wide > 0.1).sum() > (narrow > 0.1).sum()


def test_flat_image_gives_zeros():
    out = GaussianGradientMagnitude(append=False)(np.full((1, 32, 32), 5.0, dtype=np.float32))
    np.testing.assert_array_equal(out, 0.0)


def test_integer_input_becomes_float_and_dtype_none_keeps():
    img = _step_image().astype(np.uint8)
    assert GaussianGradientMagnitude()(img).dtype == np.float32
    assert GaussianGradientMagnitude(dtype=None)(torch.from_numpy(_step_image()).double()).dtype == torch.float64


def test_metatensor_meta_is_kept():
    img = MetaTensor(torch.from_numpy(_step_image()), affine=torch.diag(torch.tensor([0.5, 0.5, 1.0, 1.0])),
                     meta={"filename_or_obj": "case_1.png"})
    out = GaussianGradientMagnitude()(img)
    assert isinstance(out, MetaTensor)
    assert out.meta["filename_or_obj"] == "case_1.png"
    torch.testing.assert_close(out.affine, img.affine)
    assert out.shape == (2, 64, 64)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_dict_version(as_tensor):
    img = _step_image()
    data = {"image": torch.from_numpy(img) if as_tensor else img, "label": np.zeros((1, 64, 64), np.float32)}
    out = Compose([GaussianGradientMagnitudeD(keys="image", sigma=1.0)])(data)
    assert out["image"].shape == (2, 64, 64)
    assert out["label"].shape == (1, 64, 64)  # untouched
    assert float(out["image"][1].max()) == pytest.approx(1.0)


def test_dict_missing_keys_and_aliases():
    assert GaussianGradientMagnitudeDict is GaussianGradientMagnitudeD is GaussianGradientMagnituded
    with pytest.raises(KeyError):
        GaussianGradientMagnitudeD(keys="image")({"label": np.zeros((1, 8, 8))})
    out = GaussianGradientMagnitudeD(keys=["image", "other"], allow_missing_keys=True)({"image": _step_image()})
    assert out["image"].shape == (2, 64, 64) and "other" not in out


@pytest.mark.parametrize("sigma", [0.0, -1.0])
def test_bad_sigma(sigma):
    with pytest.raises(ValueError, match="sigma"):
        GaussianGradientMagnitude(sigma=sigma)


def test_bundles_exported_before_the_move_still_find_their_transforms():
    """Exported bundles copy common.yaml, which named the transforms by their former homes."""
    import pipeline.data.transforms as former
    import pipeline.engines as engines
    import pipeline.transforms as transforms

    assert former.ToGreyd is transforms.ToGreyd and former.RandSpeckleNoised is transforms.RandSpeckleNoised
    assert former.extra_channels is transforms.extra_channels
    assert engines.RefinePredictiond is transforms.RefinePredictiond


def _fan_image() -> torch.Tensor:
    """A 64x64 ultrasound-like image: black outside a fan, bright tissue with a dark (hypoechoic) disc inside."""
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    image = 0.6 + 0.1 * torch.rand(64, 64, generator=torch.Generator().manual_seed(0))
    image[(yy - 32) ** 2 + (xx - 32) ** 2 < 100] = 0.15
    image[(xx < 8) | (xx > 55)] = 0.0
    return image[None]


def test_gin_keeps_range_polarity_and_black_background():
    image = _fan_image()
    gin = RandGlobalIntensityNonlinear(prob=1.0)
    for seed in range(20):
        gin.set_random_state(seed)
        out = gin(image)
        assert out.shape == image.shape and out.dtype == torch.float32
        assert out.min() >= image.min() - 1e-6 and out.max() <= image.max() + 1e-6   # the image's range
        # polarity: the lesion stays darker than the tissue around it
        assert out[0, 28:36, 28:36].mean() < out[0, 10:20, 12:52].mean()
        assert not torch.allclose(out, image)   # a mapping was applied
        # no bias: the black beyond the network's receptive field (4 layers of 3x3) from the fan stays black
        assert torch.equal(out[0, :, :4], torch.zeros(64, 4))


def test_gin_is_reproducible_and_varies_with_the_seed():
    image = _fan_image()
    a = RandGlobalIntensityNonlinear(prob=1.0).set_random_state(3)(image)
    b = RandGlobalIntensityNonlinear(prob=1.0).set_random_state(3)(image)
    c = RandGlobalIntensityNonlinear(prob=1.0).set_random_state(4)(image)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_gin_prob_zero_and_numpy_and_metatensor():
    image = _fan_image()
    assert RandGlobalIntensityNonlinear(prob=0.0)(image) is image
    out = RandGlobalIntensityNonlinear(prob=1.0).set_random_state(0)(image.numpy())
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    meta = MetaTensor(image, meta={"filename_or_obj": "a.png"})
    out = RandGlobalIntensityNonlineard(keys="image", prob=1.0).set_random_state(0)({"image": meta, "label": 1})
    assert isinstance(out["image"], MetaTensor) and out["image"].meta["filename_or_obj"] == "a.png"
    assert out["label"] == 1


def test_gin_dict_applies_one_mapping_to_every_key():
    image = _fan_image()
    out = RandGlobalIntensityNonlineard(keys=["a", "b"], prob=1.0).set_random_state(0)({"a": image, "b": image})
    assert torch.equal(out["a"], out["b"])


@pytest.mark.parametrize("kwargs,match", [({"layers": 0}, "layers"), ({"channels": 0}, "channels"),
                                          ({"kernel_size": 2}, "kernel_size")])
def test_gin_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RandGlobalIntensityNonlinear(**kwargs)


def test_gin_rejects_a_3d_volume():
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        RandGlobalIntensityNonlinear(prob=1.0)(torch.rand(1, 8, 8, 8))
