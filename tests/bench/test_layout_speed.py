"""bench.layout_speed: the layout it forces reaches every prepared network and input, and is undone after."""

from __future__ import annotations

import torch

from bench.layout_speed import forced_layout
from models import precision
from models.config import BackboneConfig
from models.network import LandmarkNet
from models.precision import prepare_input, prepare_module


def test_a_forced_layout_holds_inside_whatever_the_precision_and_is_undone_after() -> None:
    chosen = precision.memory_format
    x = torch.rand(2, 1, 8, 6)
    with forced_layout(torch.contiguous_format):
        net = prepare_module(LandmarkNet(backbone=BackboneConfig(name="hrnet_w18_tiny"), step_sizes=[2]), "bf16")
        conv = next(
            m
            for m in net.modules()
            if isinstance(m, torch.nn.Conv2d) and m.weight.shape[1] > 1 and m.weight.shape[-1] > 1
        )
        assert conv.weight.is_contiguous() and not conv.weight.is_contiguous(memory_format=torch.channels_last)
        assert prepare_input(x, "bf16").is_contiguous()
    with forced_layout(torch.channels_last):
        assert prepare_input(x, "fp32").is_contiguous(memory_format=torch.channels_last)
    assert precision.memory_format is chosen
    assert prepare_input(x, "bf16").is_contiguous(memory_format=torch.channels_last)  # bf16's own layout again
