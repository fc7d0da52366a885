"""Feature extractors: (B, in_channels, H, W) images -> (B, out_channels, H / stride, W / stride) maps."""

from models.backbones.hrnet import HRNet, HRNetSpec
from models.backbones.registry import Backbone, available_backbones, build_backbone, register_backbone

__all__ = ["Backbone", "HRNet", "HRNetSpec", "available_backbones", "build_backbone", "register_backbone"]
