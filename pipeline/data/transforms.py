"""Dictionary transforms the bundles use that MONAI does not have: grey conversion, ultrasound speckle, and the
optional extra input channels of a preset."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import Compose, MapTransform, RandomizableTransform

__all__ = ["ToGreyd", "RandSpeckleNoised", "extra_channels", "EXTRA_CHANNELS"]

EXTRA_CHANNELS = ("gaussian_gradient_magnitude",)


class ToGreyd(MapTransform):
    """Make a channel-first image single-channel: RGB(A) -> ITU-R 601 luma (alpha dropped), grey+alpha -> grey.

    Scanner exports are often RGB with grey content; the networks read one channel.
    """

    _LUMA = (0.299, 0.587, 0.114)

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            channels = img.shape[0]
            if channels in (3, 4):
                weights = torch.as_tensor(self._LUMA, dtype=torch.float32).view(3, *([1] * (img.ndim - 1)))
                grey = (torch.as_tensor(img[:3]).float() * weights).sum(0, keepdim=True)
                d[key] = MetaTensor(grey, meta=img.meta) if isinstance(img, MetaTensor) else grey
            elif channels == 2:
                d[key] = img[:1]
        return d


class RandSpeckleNoised(RandomizableTransform, MapTransform):
    """Multiplicative, spatially correlated speckle-like noise: ``x * (1 + std * n)``, ``n`` Gaussian noise smoothed
    over a few pixels and normalised to unit variance, clipped at 0.

    MONAI has additive Gaussian and Rician noise; ultrasound speckle is multiplicative and correlated, so its
    strength follows the local echo level.

    Args:
        keys: image keys.
        std: standard deviation of the multiplicative factor.
        correlation: Gaussian smoothing sigma of the noise field, in pixels (0 = white).
        prob: probability to apply.
    """

    def __init__(
        self, keys: KeysCollection, std: float = 0.15, correlation: float = 1.0, prob: float = 0.2,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if std < 0:
            raise ValueError(f"std must be >= 0, got {std}")
        if correlation < 0:
            raise ValueError(f"correlation must be >= 0, got {correlation}")
        self.std, self.correlation = float(std), float(correlation)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        from scipy.ndimage import gaussian_filter

        for key in self.key_iterator(d):
            img = d[key]
            noise = self.R.standard_normal(tuple(img.shape)).astype(np.float32)
            if self.correlation > 0:
                sigma = (0,) + (self.correlation,) * (noise.ndim - 1)
                noise = gaussian_filter(noise, sigma=sigma)
                noise /= max(float(noise.std()), 1e-6)
            factor = torch.as_tensor(1.0 + self.std * noise)
            d[key] = (img * factor.to(img.device if isinstance(img, torch.Tensor) else "cpu")).clamp(min=0)
        return d


def extra_channels(names: Sequence[str], keys: KeysCollection = "image") -> Compose:
    """The transforms that append a preset's extra input channels (in order) to ``keys``.

    Raises:
        ValueError: an unknown channel name (the message lists the known ones).
    """
    transforms = []
    for name in names:
        if name == "gaussian_gradient_magnitude":
            from pipeline.transforms import GaussianGradientMagnituded

            transforms.append(GaussianGradientMagnituded(keys=keys))
        else:
            raise ValueError(f"unknown extra input channel {name!r}; known: {', '.join(EXTRA_CHANNELS)}")
    return Compose(transforms)
