"""Multi-task networks; importing this package registers each of them (see ``pipeline.registry``)."""

from __future__ import annotations

from pipeline.networks import flexunet_mt, mtil, mtl_oca, nmtnet, segresnet_mt, single_task, unetpp_mt  # noqa: F401
from pipeline.networks.auxiliary import AuxiliaryClassifiers, with_auxiliary_classifiers
from pipeline.networks.heads import ClassificationHead

__all__ = ["AuxiliaryClassifiers", "ClassificationHead", "with_auxiliary_classifiers"]
