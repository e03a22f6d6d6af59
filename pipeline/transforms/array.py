"""Array transforms the project adds to MONAI's: the Gaussian gradient magnitude input channel of MTL-OCA (003), and
the random shallow-network intensity augmentation (GIN) for images from other scanners.

MTL-OCA (Lu et al., Front. Oncol. 2025, section 3.2) concatenates the magnitude of the Gaussian derivatives of a
breast ultrasound image to the grey image, which highlights lesion boundaries; the network then takes 2 channels.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.config import DtypeLike, NdarrayOrTensor
from monai.transforms import RandomizableTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_numpy
from scipy import ndimage

__all__ = ["GaussianGradientMagnitude", "RandGlobalIntensityNonlinear"]


class GaussianGradientMagnitude(Transform):
    """Magnitude of the Gaussian derivatives of an image, min-max normalised to [0, 1], appended as a channel.

    With the 2D Gaussian kernel ``G(x, y) = exp(-(x^2 + y^2) / (2 sigma^2)) / (2 pi sigma^2)`` and its derivatives
    ``dG/dx = -x / sigma^2 G`` and ``dG/dy = -y / sigma^2 G``, the Gaussian derivatives of an image ``f`` are
    ``f_x = f * dG/dx`` and ``f_y = f * dG/dy`` (``*`` is convolution) and the magnitude is
    ``M = sqrt(f_x^2 + f_y^2)`` (paper 003, Eq. 6-9). It is computed with
    ``scipy.ndimage.gaussian_gradient_magnitude`` over the spatial axes (2D or 3D), then rescaled per image to
    ``(M - min M) / (max M - min M)`` (all zeros for a flat image).

    Paper 003 does not state sigma in the text we have; the default ``sigma=1.0`` pixel is ours (at 128x128 it keeps
    lesion boundaries sharp while speckle is smoothed a little). Apply the transform after resizing so that sigma is
    in pixels of the network input.

    Args:
        sigma: standard deviation of the Gaussian in pixels (a scalar, or one value per spatial axis).
        append: ``True``: return the image with the magnitude appended as extra channel(s); ``False``: return only
            the magnitude.
        channel_wise: ``False``: one magnitude of the channel mean (an RGB-grey image gives one channel, as in the
            paper's grey images); ``True``: one magnitude per input channel.
        mode: boundary handling of ``scipy.ndimage`` (``"reflect"``, ``"nearest"``, ``"mirror"``, ...).
        dtype: output dtype; ``None`` keeps the input's dtype (integer inputs should use a float dtype).

    Raises:
        ValueError: ``sigma`` not positive, or an input without spatial axes.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        sigma: float | tuple[float, ...] = 1.0,
        append: bool = True,
        channel_wise: bool = False,
        mode: str = "reflect",
        dtype: DtypeLike | torch.dtype | None = np.float32,
    ) -> None:
        sigmas = np.atleast_1d(np.asarray(sigma, dtype=float))
        if sigmas.size == 0 or not np.all(sigmas > 0):
            raise ValueError(f"sigma must be positive, got {sigma!r}")
        self.sigma = sigma
        self.append = append
        self.channel_wise = channel_wise
        self.mode = mode
        self.dtype = dtype

    def _magnitude(self, channel: np.ndarray) -> np.ndarray:
        magnitude = ndimage.gaussian_gradient_magnitude(channel, sigma=self.sigma, mode=self.mode)
        low, high = float(magnitude.min()), float(magnitude.max())
        if high - low <= 1e-12 * max(1.0, abs(high)):
            return np.zeros_like(magnitude)
        return (magnitude - low) / (high - low)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Apply to ``img`` of shape ``(C, spatial...)`` (numpy array, torch tensor or MetaTensor).

        Returns:
            the same type as ``img`` (a MetaTensor keeps its meta data), ``(C + M, ...)`` with ``append`` else
            ``(M, ...)``, where ``M`` is 1 or ``C`` (``channel_wise``).
        """
        if img.ndim < 2:
            raise ValueError(f"expected a channel-first image (C, spatial...), got shape {tuple(img.shape)}")
        data = convert_to_numpy(img, wrap_sequence=True).astype(np.float64, copy=False)
        channels = list(data) if self.channel_wise else [data.mean(axis=0)]
        magnitude = np.stack([self._magnitude(c) for c in channels])
        out = np.concatenate([data, magnitude], axis=0) if self.append else magnitude
        dtype = self.dtype if self.dtype is not None else img.dtype
        return convert_to_dst_type(out, dst=img, dtype=dtype)[0]


class RandGlobalIntensityNonlinear(RandomizableTransform):
    """Global Intensity Non-linear augmentation (GIN; Ouyang et al., "Causality-inspired single-source domain
    generalization for medical image segmentation", IEEE TMI 2022): the image passed through a shallow convolutional
    network with freshly drawn random weights, scaled to the image's norm (as the paper), clipped to the image's
    intensity range and blended with it, ``x' = a * g(x) + (1 - a) * x`` with ``a ~ U(0, 1)``.

    Another scanner maps echoes to grey levels through another non-linear, locally varying transfer (gain, dynamic
    range compression, speckle reduction filters); ``g`` draws such a mapping, with a local (``kernel_size``) texture
    change, so the network learns shape and echo pattern rather than one scanner's grey-level curve. MONAI has global
    curves (``RandAdjustContrast``, ``RandHistogramShift``) but no random local transfer. Ours: ``g`` has no bias
    (the black outside the ultrasound fan stays black) and keeps the image's polarity (its output is negated when it
    correlates negatively with the input): echogenicity, a dark lesion in brighter tissue, is diagnostic on every
    scanner, so an inverted image would teach the wrong thing.

    Args:
        layers: convolutions of ``g`` (leaky ReLU between them).
        channels: width of ``g``'s hidden layers.
        kernel_size: odd kernel size of the convolutions (1: a per-pixel curve; 3: a local texture change too).
        prob: probability to apply.

    Raises:
        ValueError: ``layers`` or ``channels`` below 1, or an even or non-positive ``kernel_size``.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, layers: int = 4, channels: int = 2, kernel_size: int = 3, prob: float = 0.3) -> None:
        RandomizableTransform.__init__(self, prob)
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        self.layers, self.channels, self.kernel_size = int(layers), int(channels), int(kernel_size)
        self._weights: list[np.ndarray] = []
        self._alpha = 0.0

    def randomize(self, in_channels: int) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        widths = [in_channels] + [self.channels] * (self.layers - 1) + [in_channels]
        k = self.kernel_size
        # He-like scale, so that the activations neither vanish nor explode through the layers
        self._weights = [(self.R.standard_normal((c_out, c_in, k, k)) / np.sqrt(c_in * k * k)).astype(np.float32)
                         for c_in, c_out in zip(widths[:-1], widths[1:])]
        self._alpha = float(self.R.uniform(0.0, 1.0))

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """``img``: channel-first 2D image (C, H, W)."""
        if img.ndim != 3:
            raise ValueError(f"RandGlobalIntensityNonlinear takes a channel-first 2D image (C, H, W), got shape "
                             f"{tuple(img.shape)}")
        if randomize:
            self.randomize(int(img.shape[0]))
        if not self._do_transform:
            return img
        x = torch.as_tensor(convert_to_numpy(img), dtype=torch.float32)[None]
        g = x
        pad = [self.kernel_size // 2] * 4   # replicated edges: zero padding would draw a frame round the image
        for i, weight in enumerate(self._weights):
            g = torch.nn.functional.conv2d(torch.nn.functional.pad(g, pad, mode="replicate"), torch.from_numpy(weight))
            if i < len(self._weights) - 1:
                g = torch.nn.functional.leaky_relu(g, 0.2)
        for c in range(g.shape[1]):   # per channel: the input's polarity, energy (as the paper) and range
            xc, gc = x[0, c], g[0, c]
            if torch.sum((xc - xc.mean()) * (gc - gc.mean())) < 0:
                gc = -gc
            norm = torch.linalg.vector_norm(gc)
            gc = gc * (torch.linalg.vector_norm(xc) / norm) if norm > 0 else torch.zeros_like(gc)
            g[0, c] = gc.clamp(xc.min(), xc.max())
        out = self._alpha * g[0] + (1.0 - self._alpha) * x[0]
        return convert_to_dst_type(out, img, dtype=out.dtype if not isinstance(img, np.ndarray) else img.dtype)[0]
