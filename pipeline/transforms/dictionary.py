"""Dictionary transforms the project adds to MONAI's: the Gaussian gradient magnitude channel (MTL-OCA, 003), grey
conversion, ultrasound speckle, the random shallow-network intensity augmentation (GIN), the optional extra input
channels of a preset, and the prediction refinement of paper 004 (the two heads made to agree on "normal")."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import Compose, MapTransform, RandomizableTransform

from pipeline.metrics import predicted_classes
from pipeline.transforms.array import GaussianGradientMagnitude, RandGlobalIntensityNonlinear

__all__ = [
    "GaussianGradientMagnitudeD",
    "GaussianGradientMagnitudeDict",
    "GaussianGradientMagnituded",
    "ToGreyd",
    "RandSpeckleNoised",
    "RandGlobalIntensityNonlineard",
    "RefinePredictiond",
    "REFINED_KEY",
    "EXTRA_CHANNELS",
    "extra_channels",
]

EXTRA_CHANNELS = ("gaussian_gradient_magnitude",)
REFINED_KEY = "refined"


class GaussianGradientMagnitudeD(MapTransform):
    """Dictionary version of :class:`GaussianGradientMagnitude`.

    Args:
        keys: keys of the images to transform (usually ``"image"``, never the mask).
        sigma: standard deviation of the Gaussian in pixels.
        append: append the magnitude as extra channel(s) (``True``) or replace the image with it.
        channel_wise: one magnitude per channel instead of one of the channel mean.
        mode: boundary handling of ``scipy.ndimage``.
        dtype: output dtype; ``None`` keeps the input's.
        allow_missing_keys: do not raise when a key is missing.
    """

    backend = GaussianGradientMagnitude.backend

    def __init__(
        self,
        keys: KeysCollection,
        sigma: float | tuple[float, ...] = 1.0,
        append: bool = True,
        channel_wise: bool = False,
        mode: str = "reflect",
        dtype: DtypeLike | torch.dtype | None = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = GaussianGradientMagnitude(
            sigma=sigma, append=append, channel_wise=channel_wise, mode=mode, dtype=dtype
        )

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


GaussianGradientMagnitudeDict = GaussianGradientMagnituded = GaussianGradientMagnitudeD


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


class RandGlobalIntensityNonlineard(RandomizableTransform, MapTransform):
    """Dictionary form of :class:`~pipeline.transforms.array.RandGlobalIntensityNonlinear`: one random network and
    blend weight per call, applied to every key (image keys only: the mask is not an intensity).

    Args:
        keys: image keys.
        layers, channels, kernel_size: as the array transform.
        prob: probability to apply.
    """

    def __init__(
        self, keys: KeysCollection, layers: int = 4, channels: int = 2, kernel_size: int = 3, prob: float = 0.3,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.gin = RandGlobalIntensityNonlinear(layers, channels, kernel_size, prob=1.0)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.gin.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        keys = list(self.key_iterator(d))
        if keys:   # one network for every key, sized by the first image's channels
            self.gin.randomize(int(d[keys[0]].shape[0]))
        for key in keys:
            d[key] = self.gin(d[key], randomize=False)
        return d


def extra_channels(names: Sequence[str], keys: KeysCollection = "image") -> Compose:
    """The transforms that append a preset's extra input channels (in order) to ``keys``.

    Raises:
        ValueError: an unknown channel name (the message lists the known ones).
    """
    transforms = []
    for name in names:
        if name == "gaussian_gradient_magnitude":
            transforms.append(GaussianGradientMagnituded(keys=keys))
        else:
            raise ValueError(f"unknown extra input channel {name!r}; known: {', '.join(EXTRA_CHANNELS)}")
    return Compose(transforms)


class RefinePredictiond(MapTransform):
    """Post-processing on decollated outputs: empty the binary mask of an image classified normal, and call an image
    with no lesion pixel normal (its probabilities become one-hot "normal"). Records whether anything changed
    under ``"refined"``.

    "Classified normal" is the decision the report and ``bmtl predict`` print: the argmax or, with an operating
    ``threshold`` on the positive class (``pipeline.metrics.predicted_classes``), the positive class wherever its
    probability reaches it. A no-op when the classes have no normal class (``normal_index=None``) or when
    ``enabled`` is False.

    Args:
        keys: the binary segmentation key (e.g. ``"pred_seg"``).
        cls_key: the class-probability key (e.g. ``"pred_cls"``).
        normal_index: index of the normal class, or None.
        empty_mask_means_normal: apply the second rule.
        normal_empties_mask: apply the first rule.
        enabled: switch the whole transform.
        threshold: operating threshold of the positive class (the last one); ``None``: argmax.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred_seg",
        cls_key: str = "pred_cls",
        normal_index: int | None = 0,
        empty_mask_means_normal: bool = True,
        normal_empties_mask: bool = True,
        enabled: bool = True,
        allow_missing_keys: bool = False,
        threshold: float | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.cls_key, self.normal_index, self.threshold = cls_key, normal_index, threshold
        self.empty_mask_means_normal, self.normal_empties_mask = empty_mask_means_normal, normal_empties_mask
        self.enabled = enabled

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        changed = False
        if self.enabled and self.normal_index is not None:
            for key in self.key_iterator(d):
                probs = torch.as_tensor(d[self.cls_key])
                mask = d[key]
                decided = predicted_classes(probs.reshape(-1).detach().cpu().numpy(), self.threshold)
                is_normal = int(decided[0]) == self.normal_index
                has_lesion = bool(torch.as_tensor(mask).any())
                if self.normal_empties_mask and is_normal and has_lesion:
                    d[key] = mask * 0
                    changed = True
                elif self.empty_mask_means_normal and not has_lesion and not is_normal:
                    one_hot = torch.zeros_like(probs)
                    one_hot.reshape(-1)[self.normal_index] = 1
                    d[self.cls_key] = one_hot
                    changed = True
        d[REFINED_KEY] = changed
        return d
