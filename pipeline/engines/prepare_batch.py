"""``MultiTaskPrepareBatch``: a batch dict -> ``(image, {"seg": mask, "cls": label})`` for MONAI's stock engines."""

from __future__ import annotations

from typing import Any

import torch
from monai.data import MetaTensor
from monai.engines.utils import PrepareBatch

from pipeline.keys import BatchKey, Head

__all__ = ["MultiTaskPrepareBatch"]


class MultiTaskPrepareBatch(PrepareBatch):
    """Build the input and the target dict that ``pipeline.losses.MultiTaskLoss`` and the metrics expect.

    Args:
        image_key: batch key of the image.
        mask_key: batch key of the lesion mask (becomes ``target["seg"]``, float).
        cls_key: batch key of the class index (becomes ``target["cls"]``, long, shape ``(B,)``).
        keep_meta: pass ``MetaTensor``s on to the network as they are. Off by default: with a ``MetaTensor`` input
            every operation of the network (forward and backward) goes through ``MetaTensor.__torch_function__``,
            which copies metadata per operation (measured in BENCHMARKS.md, "engine overhead"), and nothing
            downstream needs it: post-processing such as ``Invertd`` reads the metadata from the batch's image.
        channels_last: give the network a 4D image in ``torch.channels_last`` memory format, to match a network
            converted with ``.to(memory_format=torch.channels_last)``; a contiguous input would make every
            convolution convert formats (measured in BENCHMARKS.md, "recipe").
        targets: ``False`` for unlabelled images (inference): ``(image, None)``, no mask or class needed.

    A batch with auxiliary targets (``batch["aux"]``, from ``pipeline.data.auxiliary.add_aux_targets``) adds each of
    them to the target dict under its name, as ``(B,)`` category indices (-1: no value).

    Raises:
        KeyError: the batch lacks one of the keys (the message lists the batch's keys).
    """

    def __init__(
        self,
        image_key: str = BatchKey.IMAGE,
        mask_key: str = BatchKey.LABEL,
        cls_key: str = BatchKey.CLS,
        keep_meta: bool = False,
        channels_last: bool = False,
        targets: bool = True,
    ) -> None:
        self.image_key, self.mask_key, self.cls_key = str(image_key), str(mask_key), str(cls_key)
        self.targets = bool(targets)
        self.keep_meta = bool(keep_meta)
        self.channels_last = bool(channels_last)

    def _tensor(self, value: Any) -> torch.Tensor:
        if isinstance(value, MetaTensor) and not self.keep_meta:
            return value.as_tensor()
        return torch.as_tensor(value)

    def __call__(
        self,
        batchdata: dict[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        needed = (self.image_key, self.mask_key, self.cls_key) if self.targets else (self.image_key,)
        missing = [k for k in needed if k not in batchdata]
        if missing:
            raise KeyError(f"batch has no {missing} key(s); batch keys: {sorted(batchdata)}")
        to = {"device": device, "non_blocking": non_blocking, **kwargs}
        image = self._tensor(batchdata[self.image_key]).to(**to)
        if self.channels_last and image.ndim == 4:
            image = image.contiguous(memory_format=torch.channels_last)
        if not self.targets:
            return image, None
        mask = self._tensor(batchdata[self.mask_key]).to(**to).float()
        label = self._tensor(batchdata[self.cls_key]).to(**to).long().view(-1)
        target = {Head.SEG.value: mask, Head.CLS.value: label}
        for name, value in batchdata.get(BatchKey.AUX.value, {}).items():
            target[name] = self._tensor(value).to(**to).long().view(-1)
        return image, target
