"""``pipeline.data.transforms``: where the bundles' grey conversion, speckle and extra-channel transforms lived before
``pipeline.transforms`` became their one home.

Kept because bundles exported before the move name ``pipeline.data.transforms.ToGreyd`` (and the others) in their
``configs/common.yaml``; new code and configs use ``pipeline.transforms``.
"""

from pipeline.transforms import EXTRA_CHANNELS, RandSpeckleNoised, ToGreyd, extra_channels

__all__ = ["ToGreyd", "RandSpeckleNoised", "extra_channels", "EXTRA_CHANNELS"]
