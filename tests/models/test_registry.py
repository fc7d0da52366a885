"""The strategy registry: one table for the trainer, the benchmark and the service."""

from __future__ import annotations

import pytest

from models.registry import (
    ASSOCIATING,
    BASELINES,
    DISTILLING,
    FALLBACK_MODALITY,
    MODALITIES,
    REGISTRY,
    SERVED,
    STRATEGIES,
    strategy,
)


def test_each_strategy_says_what_it_distils_associates_and_reads() -> None:
    assert STRATEGIES == ("finetune", "lwf", "cpr", "kamp", "kamp_ksd_only", "kamp_random", "joint", "joint_partial")
    assert {"lwf", "cpr", "kamp", "kamp_ksd_only", "kamp_random"} == DISTILLING
    assert {"kamp", "kamp_random"} == ASSOCIATING
    assert strategy("kamp").kanet == "chosen" and strategy("kamp_random").kanet == "random"
    assert strategy("cpr").distil == "cpr" and strategy("kamp_ksd_only").distil == "ksd"
    assert not strategy("finetune").teacher and strategy("lwf").teacher
    assert [n for n, s in REGISTRY.items() if s.data != "step"] == ["joint", "joint_partial"]


def test_the_service_may_train_only_what_its_data_allows() -> None:
    assert set(SERVED) == set(STRATEGIES) - {"joint", "joint_partial"}
    assert set(BASELINES) == {"joint", "joint_partial"} and all(BASELINES.values())


def test_an_unknown_strategy_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown strategy 'kmap'; choose one of finetune, lwf"):
        strategy("kmap")


def test_the_openapi_enum_is_the_registry_s_served_strategies() -> None:
    from server.projects.schemas import SERVED_STRATEGIES

    assert {"enum": list(SERVED)} == SERVED_STRATEGIES


def test_the_default_and_the_validated_settings_are_ones_the_service_can_train() -> None:
    from dataclasses import fields

    from models.config import TrainConfig
    from models.registry import DEFAULT_STRATEGY
    from server.training.config import validate_training

    assert DEFAULT_STRATEGY in SERVED
    names = {f.name for f in fields(TrainConfig)}
    for spec in REGISTRY.values():
        assert set(spec.validated) <= set(MODALITIES), spec.name
        for settings in spec.validated.values():
            assert set(settings) <= names, spec.name
            assert validate_training(dict(settings)) == settings, spec.name  # the service's own rule
    # The default is trained at the values it was chosen with, on every modality with a protocol.
    assert set(strategy(DEFAULT_STRATEGY).validated) == {"cephalometric", "chest"}


def test_a_modality_without_a_protocol_trains_the_fallbacks_choice() -> None:
    lwf = strategy("lwf")
    assert lwf.validated_for("other") == lwf.validated_for(FALLBACK_MODALITY) == lwf.validated["cephalometric"]
    assert lwf.validated_for("chest") == lwf.validated["chest"] != lwf.validated_for("other")
    assert strategy("finetune").validated_for("chest") == {}
    with pytest.raises(ValueError, match="unknown modality 'mri'; choose one of cephalometric, chest, other"):
        lwf.validated_for("mri")


def test_validated_settings_merge_under_the_callers_by_nested_key() -> None:
    """with_validated: the caller's top-level values win; a nested config (refine, kanet) merges key by key, so
    a caller's own local-stage setting keeps the validated local weight unless it sets that weight itself."""
    from models.registry import with_validated

    validated = dict(strategy("kamp_ksd_only").validated_for("cephalometric"))
    assert validated == {"alpha": 10.0, "refine": {"alpha": 300.0}}
    assert with_validated("kamp_ksd_only", {"alpha": 1, "refine": {"iterations": 5}}) == {
        "alpha": 1,
        "refine": {"alpha": 300.0, "iterations": 5},
    }
    assert with_validated("kamp_ksd_only", {"refine": {"alpha": 30}})["refine"] == {"alpha": 30}
    assert with_validated("finetune", {"kanet": {"lr": 0.1}}) == {"kanet": {"lr": 0.1}}
    merged = with_validated("kamp_ksd_only", {})
    merged["refine"]["alpha"] = 1.0  # a caller changing its copy
    assert strategy("kamp_ksd_only").validated_for("cephalometric") == validated
    assert with_validated("lwf", {}, "chest") == {"alpha": 10.0, "temperature": 0.05, "refine": {"alpha": 300.0}}


def test_switching_strategy_swaps_only_the_validated_values() -> None:
    """Known answer: KSD's cephalometric settings are alpha 10 and refine.alpha 300; LwF's alpha 100, T 0.05
    and refine.alpha 300. The caller's own values (alpha 3, refine.iterations 7, lr) stay."""
    from models.registry import switch_validated, with_validated

    stored = with_validated("kamp_ksd_only", {"refine": {"iterations": 7}, "lr": 0.001})
    assert switch_validated(stored, "kamp_ksd_only", "lwf", "cephalometric") == {
        "alpha": 100.0,
        "temperature": 0.05,
        "refine": {"alpha": 300.0, "iterations": 7},
        "lr": 0.001,
    }
    own_alpha = with_validated("kamp_ksd_only", {"alpha": 3.0})
    assert switch_validated(own_alpha, "kamp_ksd_only", "lwf", "cephalometric")["alpha"] == 3.0
    assert switch_validated(stored, "kamp_ksd_only", "finetune", "cephalometric") == {
        "refine": {"iterations": 7},
        "lr": 0.001,
    }
