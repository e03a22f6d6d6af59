"""Grad-CAM of the classification head (``monai.visualize.GradCAM``) for ``bmtl predict --explain`` and the
evaluation report's worst cases."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from pipeline.keys import Head

__all__ = ["ClassLogits", "cam_layer_candidates", "find_cam_layer", "GradCAMExplainer", "unit_range"]


class ClassLogits(torch.nn.Module):
    """The class logits of a network returning ``(seg, cls)`` (an exported wrapper) or the zoo's head dict."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        out = self.net(inp)
        return out[Head.CLS.value] if isinstance(out, Mapping) else out[1]


def cam_layer_candidates(network: torch.nn.Module, x: torch.Tensor) -> list[str]:
    """The convolutions that the class logits of ``network`` depend on, best first: those at stride <= 16, the
    coarsest first and among equals the last executed first; then the coarser ones (a finer map than the last 1x1
    convolution of a classifier).

    Raises:
        RuntimeError: no convolution feeds the classification head (e.g. a segmentation-only network).
    """
    order: list[tuple[str, torch.Tensor]] = []
    hooks = []

    def record(name: str) -> Callable:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and output.requires_grad:
                output.retain_grad()
                order.append((name, output))
        return hook

    # convolutions whose maps are not aligned with the image (a network's ``unaligned_modules``, e.g. the lesion
    # crop's classifier) cannot be drawn over it
    unaligned = {id(sub) for m in network.modules() for part in getattr(m, "unaligned_modules", ())
                 for sub in part.modules()}
    for name, module in network.named_modules():
        if isinstance(module, torch.nn.Conv2d) and id(module) not in unaligned:
            hooks.append(module.register_forward_hook(record(name)))
    try:
        with torch.enable_grad():
            logits = network(x.requires_grad_(True))
            if not logits.requires_grad:
                raise RuntimeError("no convolution feeds the classification head (a segmentation-only network?): "
                                   "Grad-CAM explains a class, this network predicts none from the image")
            logits[0, int(logits[0].argmax())].backward()
    finally:
        for h in hooks:
            h.remove()
    height = x.shape[-2]
    used = [(i, n, o) for i, (n, o) in enumerate(order)
            if o.grad is not None and bool(o.grad.abs().sum() > 0) and o.shape[-2] > 1]
    if not used:
        raise RuntimeError("no convolution feeds the classification head: set cam_layer in inference.yaml")
    # Grad-CAM's usual target: the coarsest map at stride <= 16 (8 x 8 at 128²), the last such layer first. A
    # full-resolution decoder layer (what a mask-pooled classifier also depends on) gives pixel noise, not regions.
    fine = sorted(((o.shape[-2], -i, n) for i, n, o in used if o.shape[-2] * 16 >= height))
    names = [n for _, _, n in fine]
    return names + [n for _, n, _ in reversed(used) if n not in names]


def find_cam_layer(network: torch.nn.Module, x: torch.Tensor) -> str:
    """The best of ``cam_layer_candidates``.

    Raises:
        RuntimeError: no convolution feeds the classification head.
    """
    return cam_layer_candidates(network, x)[0]


def unit_range(maps: torch.Tensor) -> torch.Tensor:
    """Each map of a ``(B, 1, H, W)`` batch scaled to [0, 1] with its maximum at 1 (a constant map: 0).

    MONAI's ``GradCAM`` default (``default_normalizer``) maps (min, max) to (1, 0): the most important region would
    be drawn as the least important one.
    """
    flat = maps.reshape(len(maps), -1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    span = torch.where(high > low, high - low, torch.ones_like(high))
    return (maps - low.view(-1, 1, 1, 1)) / span.view(-1, 1, 1, 1)


class GradCAMExplainer:
    """Grad-CAM of a class for one preprocessed image, built on first use.

    Args:
        network: builds the eager network returning ``(seg, cls)`` (called once, on first use).
        device: where it runs.
        cam_layer: the target layer's name; ``None``: ``find_cam_layer``.
    """

    def __init__(self, network: Callable[[], torch.nn.Module], device: torch.device, cam_layer: str | None = None
                 ) -> None:
        self.network, self.device, self.cam_layer = network, device, cam_layer
        self.layer_used: str | None = None
        self._cam: Any = None

    def __call__(self, x: torch.Tensor, class_index: int) -> np.ndarray:
        """Grad-CAM of ``class_index`` for ``x`` ``(C, h, w)``: ``(h, w)`` in [0, 1]."""
        from monai.visualize import GradCAM

        if self._cam is not None:
            return self._compute(self._cam, x, class_index)
        module = ClassLogits(self.network()).eval()
        layers = ([str(self.cam_layer)] if self.cam_layer
                  else cam_layer_candidates(module, x[None].clone().to(self.device)))
        for i, layer in enumerate(layers):
            # a copy per try: MONAI's hooks stay on the module they were put on, a refused layer's with them
            cam = GradCAM(nn_module=copy.deepcopy(module) if len(layers) > 1 else module, target_layers=layer,
                          postprocessing=unit_range)
            try:
                heat = self._compute(cam, x, class_index)
            except RuntimeError as e:
                # the hooked output is modified in place downstream (a residual `x += identity`): autograd refuses
                # the backward hook there, so the next candidate layer is taken
                if "inplace" not in str(e) or i == len(layers) - 1:
                    raise
                continue
            self._cam, self.layer_used = cam, layer
            return heat
        raise RuntimeError("no layer to explain")   # not reached: the loop returns or raises

    def _compute(self, cam: Any, x: torch.Tensor, class_index: int) -> np.ndarray:
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = cam(x[None].to(self.device), class_idx=int(class_index))
        return np.asarray(torch.as_tensor(out)[0, 0].detach().cpu(), dtype=np.float32)
