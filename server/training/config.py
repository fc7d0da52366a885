"""A training configuration's rules, shared by projects (their defaults) and submissions (their overrides): the
TrainConfig fields a request may set, checked and normalised one way."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter, ValidationError

from models.config import TrainConfig, from_dict, to_dict

from ..problems import Problem


@lru_cache
def _train_config_adapter() -> TypeAdapter[TrainConfig]:
    return TypeAdapter(TrainConfig)


def _only_given(full: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The normalised values of the keys that were given (nested configs keep only their given keys). A key the
    config lacks is refused: from_dict drops `amp`, which only old checkpoints may carry."""
    lacking = sorted(set(given) - set(full))
    if lacking:
        raise ValueError(f"unknown TrainConfig fields: {lacking}")
    out = {}
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(full[key], dict):
            out[key] = _only_given(full[key], value)
        else:
            out[key] = full[key]
    return out


def _non_finite(value: Any, where: str = "") -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return where
    if isinstance(value, dict):
        return next(
            (w for k, v in value.items() if (w := _non_finite(v, f"{where}.{k}".lstrip("."))) is not None), None
        )
    if isinstance(value, list | tuple):
        return next((w for i, v in enumerate(value) if (w := _non_finite(v, f"{where}[{i}]")) is not None), None)
    return None


def validate_training(overrides: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig overrides checked for unknown fields and wrong types, with their values normalised
    ("5" -> 5, lists -> tuples where the config wants them), so the worker can build the config as it is.
    Raises ValueError with a message naming the field."""
    try:
        from_dict(TrainConfig, overrides)  # unknown fields, at the top and in augment / kanet
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(str(exc)) from exc
    try:
        config = _train_config_adapter().validate_python(overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"TrainConfig field {where}: {first['msg']}") from exc
    normalised = _only_given(to_dict(config), overrides)
    bad = _non_finite(normalised)
    if bad is not None:
        raise ValueError(f"TrainConfig field {bad}: must be a finite number")
    return normalised


def invalid_training(exc: ValueError, why: str = "") -> Problem:
    """The 422 answer to training settings that validate_training or the service's bounds refused."""
    return Problem(422, f"training: {exc}{why}", slug="invalid-request", title="Invalid request")
