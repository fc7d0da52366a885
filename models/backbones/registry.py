"""Backbones by name: `BackboneConfig.name` -> a factory that builds the network.

Built-in backbones register themselves when `models.backbones` is imported; other code can add its own
with the `register_backbone` decorator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, cast, runtime_checkable

from torch import Tensor, nn

from models.backbones.pretrained import load_pretrained
from models.config import BackboneConfig

logger = logging.getLogger(__name__)


@runtime_checkable
class Backbone(Protocol):
    """What heads rely on: (B, in_channels, H, W) -> (B, out_channels, H / stride, W / stride)."""

    out_channels: int
    stride: int

    def forward(self, x: Tensor) -> Tensor: ...


class BackboneModule(nn.Module):
    """What build_backbone answers: a module with the Backbone protocol's attributes (built-in backbones derive
    from it; a registered factory's module need only satisfy the protocol)."""

    out_channels: int
    stride: int


BackboneFactory = Callable[[BackboneConfig], Backbone]

_REGISTRY: dict[str, BackboneFactory] = {}


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator registering `factory(config) -> Backbone` under `name`; a name can be taken only once."""

    def decorate(factory: BackboneFactory) -> BackboneFactory:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorate


def available_backbones() -> list[str]:
    """Registered backbone names, sorted."""
    return sorted(_REGISTRY)


def build_backbone(config: BackboneConfig) -> BackboneModule:
    """Build `config.name` and load `config.pretrained` (a local file) into it when set."""
    factory = _REGISTRY.get(config.name)
    if factory is None:
        raise ValueError(f"unknown backbone {config.name!r}; available: {', '.join(available_backbones())}")
    model = factory(config)
    if not isinstance(model, nn.Module) or not isinstance(model, Backbone):
        raise TypeError(f"factory of {config.name!r} returned {type(model).__name__}, not a Backbone module")
    if config.pretrained:
        report = load_pretrained(model, config.pretrained)
        logger.info("backbone %s: %s", config.name, report.summary())
    return cast(BackboneModule, model)  # checked above: a module with the protocol's attributes
