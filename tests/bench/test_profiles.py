"""Benchmark profiles and the settings a results folder is bound to (profile.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.profiles import LATER_FIELDS, PROFILES, STEP0_FREE, check_profile, checked_profile, with_precision


def test_changed_profile_settings_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "p"
    check_profile(out, {"name": "x", "iterations": 1, "precision": "bf16"})
    check_profile(out, {"name": "x", "iterations": 1, "precision": "bf16"})
    with pytest.raises(SystemExit, match="other profile settings"):
        check_profile(out, {"name": "x", "iterations": 2, "precision": "bf16"})
    with pytest.raises(SystemExit, match="other profile settings"):
        check_profile(out, {"name": "x", "iterations": 1, "precision": "fp32"})


def test_a_folder_from_before_the_precision_setting_holds_fp32_runs(tmp_path: Path) -> None:
    out = tmp_path / "p"
    out.mkdir()
    (out / "profile.json").write_text(json.dumps({"name": "x", "iterations": 1}))
    check_profile(out, {"name": "x", "iterations": 1, "precision": "fp32"})
    with pytest.raises(SystemExit, match="its runs are fp32: pass --precision fp32"):
        check_profile(out, {"name": "x", "iterations": 1, "precision": "bf16"})


def test_checked_profile_binds_the_resolved_precision() -> None:
    fp32 = checked_profile(with_precision(PROFILES["smoke"], "fp32"), "cpu")
    bf16 = checked_profile(with_precision(PROFILES["smoke"], "bf16"), "cpu")
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    assert checked_profile(PROFILES["smoke"], "cpu")["precision"] in ("fp32", "bf16")


def test_low_shot_profiles_share_the_default_networks_step_0() -> None:
    base = asdict_profile("cpu-local-preact-head")
    for shots in (1, 5, 10, 50):
        low = asdict_profile(f"lowshot-{shots}")
        assert low["max_incremental_images"] == shots and low["step0_of"] == "cpu-local-preact-head"
        assert {k: v for k, v in low.items() if k not in STEP0_FREE} == {
            k: v for k, v in base.items() if k not in STEP0_FREE
        }


def asdict_profile(name: str) -> dict[str, object]:
    return checked_profile(PROFILES[name], "cpu")


def test_a_folder_written_before_later_fields_holds_runs_of_their_earlier_values(tmp_path: Path) -> None:
    out = tmp_path / "p"
    current = checked_profile(PROFILES["cpu-local-preact"], "cpu")
    older = {k: v for k, v in current.items() if k not in LATER_FIELDS or k in ("local_stage", "last_relu")}
    out.mkdir()
    (out / "profile.json").write_text(json.dumps(older))
    check_profile(out, json.loads(json.dumps(current)))  # head_channels 0, step0_of None: what it ran
    wider = checked_profile(PROFILES["cpu-local-preact-head"], "cpu") | {"name": "cpu-local-preact"}
    with pytest.raises(SystemExit, match="other profile settings"):
        check_profile(out, json.loads(json.dumps(wider)))


def test_the_head_profile_differs_from_the_default_network_only_in_its_head() -> None:
    base = checked_profile(PROFILES["cpu-local-preact"], "cpu")
    head = checked_profile(PROFILES["cpu-local-preact-head"], "cpu")
    assert {k for k in base if base[k] != head[k]} == {"name", "head_channels"}
    assert PROFILES["cpu-local-preact-head"].backbone_config().head_channels == 128
