"""bfloat16 autocast for the forward pass on CPUs that compute it natively (Intel AMX).

MONAI's engines offer mixed precision on CUDA only (``amp`` enters ``torch.autocast("cuda")``). On a CPU with AMX
tiles, ``torch.autocast("cpu", dtype=torch.bfloat16)`` runs convolutions in oneDNN's bfloat16 kernels: the default
``nmtnet`` trains 1.37x faster per step on the 2-core benchmark machine (27.2 -> 37.2 img/s at 128², channels_last,
``benchmarks/train_step.py --bf16-compare``). Without AMX the same kernels are emulated and slower, hence the detection.
The autocast is applied through the engine's inferer, so checkpoints, export and the network itself are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from monai.inferers import Inferer, SimpleInferer

__all__ = ["AutocastInferer", "cpu_has_fast_bf16"]


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bfloat16 matrix kernels in hardware (AMX tiles, Intel Sapphire Rapids and later).

    ``torch.cpu._is_amx_tile_supported`` is private; a torch without it is treated as "no", which only costs speed.
    """
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


def _to_float32(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() else output
    if isinstance(output, Mapping):
        return {key: _to_float32(value) for key, value in output.items()}
    if isinstance(output, (list, tuple)):
        return type(output)(_to_float32(value) for value in output)
    return output


class AutocastInferer(Inferer):
    """Run another inferer under ``torch.autocast(<input device>, dtype)`` and return float32 outputs.

    Only the forward pass runs in reduced precision: the loss, the backward pass (outside the autocast region, as
    PyTorch recommends), the optimizer and the weights stay float32. With ``enabled=False`` it is the inner
    inferer unchanged.

    Args:
        inferer: the inferer to wrap (default ``SimpleInferer()``).
        dtype: the autocast dtype, ``torch.bfloat16`` (CPU autocast supports bfloat16 and float16).
        enabled: whether to autocast at all.

    Raises:
        TypeError: ``inferer`` is not callable.
    """

    def __init__(self, inferer: Callable[..., Any] | None = None, dtype: torch.dtype = torch.bfloat16,
                 enabled: bool = True) -> None:
        super().__init__()
        if inferer is not None and not callable(inferer):
            raise TypeError(f"inferer must be a MONAI inferer (callable), got {type(inferer).__name__}")
        self.inferer = inferer if inferer is not None else SimpleInferer()
        self.dtype = dtype
        self.enabled = bool(enabled)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            return self.inferer(inputs, network, *args, **kwargs)
        with torch.autocast(torch.as_tensor(inputs).device.type, dtype=self.dtype):
            output = self.inferer(inputs, network, *args, **kwargs)
        return _to_float32(output)
