"""Multi-task networks; importing this package registers each of them (see ``pipeline.registry``)."""

from __future__ import annotations

from pipeline.networks import (  # noqa: F401
    flexunet_mt, lesion_crop, mtil, mtl_oca, nmtnet, segresnet_mt, single_task, unetpp_mt,
)
from pipeline.networks.auxiliary import AuxiliaryClassifiers, with_auxiliary_classifiers
from pipeline.networks.heads import ClassificationHead

__all__ = ["AuxiliaryClassifiers", "ClassificationHead", "with_auxiliary_classifiers"]
