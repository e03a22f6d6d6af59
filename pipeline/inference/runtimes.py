"""An exported bundle opened (``open_exported_bundle``: complete, its configs parsed) and its three runtimes
(PyTorch, TorchScript, ONNX Runtime): which model file each reads, and loading it as a callable
``x -> {"seg", "cls"}`` (what ``MultiTaskInferer`` wants)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pipeline.bundle_folder import MODEL_FILES, RUNTIMES, resolve_runtime
from pipeline.keys import Head
from pipeline.switches import FALSE_WORDS, TRUE_WORDS

__all__ = [
    "RUNTIMES",
    "MODEL_FILES",
    "DictModel",
    "flag",
    "resolve_device",
    "resolve_runtime",
    "load_eager_network",
    "open_exported_bundle",
    "load_model",
]


def flag(value: Any) -> bool:
    """A switch from Python or from a command line (``python -m monai.bundle run ... --refine false``)."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in TRUE_WORDS:
            return True
        if lowered in (*FALSE_WORDS, "", "none", "null"):   # an unset YAML value reads as off
            return False
        raise ValueError(f"expected true or false, got {value!r}")
    return bool(value)


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto", ""):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but CUDA is not available; use --device cpu")
    return device


class DictModel:
    """Callable ``x -> {"seg", "cls"}`` over a model returning ``(seg, cls)`` (what ``MultiTaskInferer`` wants)."""

    def __init__(self, model: Callable[[torch.Tensor], Any], device: torch.device) -> None:
        self.model, self.device = model, device

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(torch.as_tensor(x).to(self.device, torch.float32))
        seg, cls = (out[Head.SEG.value], out[Head.CLS.value]) if isinstance(out, dict) else out
        return {Head.SEG.value: seg, Head.CLS.value: cls}


def load_eager_network(parser: Any, models: Path, device: torch.device) -> torch.nn.Module:
    """The bundle's ``export_network`` (the network returning ``(seg, cls)``) with ``models/model.pt`` loaded, in
    eval mode on ``device`` (the torch runtime and Grad-CAM).

    Raises:
        FileNotFoundError: ``model.pt`` is missing.
        pipeline.data.io.DataError: the weights do not fit the network (the message names the mismatch).
    """
    from pipeline.deploy import load_state_dict
    from pipeline.handlers.checkpoint import check_checkpoint_fits

    weights = models / MODEL_FILES["torch"]
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found (needed by the torch runtime and by Grad-CAM)")
    wrapper = parser.get_parsed_content("export_network")
    state = load_state_dict(weights)
    check_checkpoint_fits({"network": state}, {"network": wrapper.network}, weights)  # names the mismatch
    wrapper.load_state_dict(state)
    return wrapper.to(device).eval()


def load_model(models: Path, runtime: str, device: torch.device,
               eager: Callable[[], torch.nn.Module]) -> DictModel:
    """The model of ``runtime`` (resolved, not ``"auto"``) as a ``DictModel``; ``eager`` builds the torch one."""
    path = models / MODEL_FILES[runtime]
    if runtime == "torch":
        model = eager()
    elif runtime == "torchscript":
        from pipeline.export import load_torchscript

        model = load_torchscript(path, device)
    else:
        from pipeline.export import OnnxModel

        model = OnnxModel(path, device)
    return DictModel(model, device)


def open_exported_bundle(bundle: str | os.PathLike) -> tuple[Path, Any]:
    """The folder and the config parser of a complete exported bundle.

    Raises:
        FileNotFoundError: not an exported bundle.
        pipeline.data.io.DataError: an incomplete one (no ``models/export_report.json``).
    """
    from pipeline.bundle_folder import exported_bundle_root
    from pipeline.deploy import bundle_parser

    root = exported_bundle_root(bundle)
    return root, bundle_parser(root, ("common.yaml", "deploy.yaml", "inference.yaml"))
