"""Grad-CAM of the classification head (``monai.visualize.GradCAM``) for ``bmtl predict --explain``."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = ["ClassLogits", "cam_layer_candidates", "find_cam_layer", "GradCAMExplainer"]


class ClassLogits(torch.nn.Module):
    """The class logits of a network returning ``(seg, cls)``."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        return self.net(inp)[1]


def cam_layer_candidates(network: torch.nn.Module, x: torch.Tensor) -> list[str]:
    """The convolutions that the class logits of ``network`` depend on, best first: those at stride <= 16 from the
    last (in execution order) back, then the coarser ones (a finer map than the last 1x1 convolution of a
    classifier).

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

    for name, module in network.named_modules():
        if isinstance(module, torch.nn.Conv2d):
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
    used = [(n, o) for n, o in order if o.grad is not None and bool(o.grad.abs().sum() > 0) and o.shape[-2] > 1]
    if not used:
        raise RuntimeError("no convolution feeds the classification head: set cam_layer in inference.yaml")
    fine = [n for n, o in reversed(used) if o.shape[-2] * 16 >= height]
    return fine + [n for n, _ in reversed(used) if n not in fine]


def find_cam_layer(network: torch.nn.Module, x: torch.Tensor) -> str:
    """The best of ``cam_layer_candidates``.

    Raises:
        RuntimeError: no convolution feeds the classification head.
    """
    return cam_layer_candidates(network, x)[0]


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
            cam = GradCAM(nn_module=copy.deepcopy(module) if len(layers) > 1 else module, target_layers=layer)
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
