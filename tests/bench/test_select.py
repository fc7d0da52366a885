"""bench.select: model choice on a split of the step's own images, on the smoke profile with real images."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench import ikl, select
from bench.compute import compute_kind
from models.datasets import load_protocol


def test_split_holds_out_a_fixed_share_and_never_everything() -> None:
    tr, va = select.split(40, 0.2, seed=0)
    assert len(va) == 8 and len(tr) == 32 and not set(tr) & set(va)
    assert np.array_equal(va, select.split(40, 0.2, seed=0)[1])  # the same seed, the same split
    assert len(select.split(2, 0.9, seed=0)[0]) == 1  # at least one image stays for training
    with pytest.raises(ValueError):
        select.split(1, 0.2, seed=0)


def test_grid_parses_typed_values_and_refuses_unknown_fields() -> None:
    grid = select.parse_grid(["alpha=0.3,1", "ksd_mode=marginal,rows"])
    assert grid == {"alpha": [0.3, 1], "ksd_mode": ["marginal", "rows"]}
    assert len(select.candidates(grid)) == 4 and select.candidates({}) == [{}]
    for bad in ("alpha", "alpha=", "no_such_field=1"):
        with pytest.raises(ValueError):
            select.parse_grid([bad])


@pytest.mark.slow
def test_smoke_selection_measures_new_error_and_old_drift(data_root: Path, tmp_path: Path) -> None:
    common = ["--protocol", "cld38-5step", "--profile", "smoke", "--data-root", str(data_root), "--out", str(tmp_path)]
    assert select.main([*common, "--step", "1", "--strategy", "lwf"]) == 2  # no step-0 model yet: a clear error
    assert ikl.main([*common, "--strategies", "lwf", "--max-steps", "2"]) == 0
    args = [*common, "--step", "1", "--strategy", "lwf", "--grid", "alpha=0.5,2"]
    assert select.main(args) == 0
    out = tmp_path / "cld38-5step-smoke" / "selection" / "lwf-step1-seed0.json"
    record = json.loads(out.read_text())
    assert len(record["val_ids"]) == 2  # 20% of the smoke profile's 8 step images, rounded up
    assert [c["overrides"] for c in record["candidates"]] == [{"alpha": 0.5}, {"alpha": 2}]
    for c in record["candidates"]:
        assert c["unit"] == "mm" and all(math.isfinite(c[k]) and c[k] > 0 for k in ("score", "new_mre", "old_drift"))
        assert len(c["per_landmark"]) == 24  # 19 old (drift) + 5 new (error)
        assert c["score"] == pytest.approx(np.mean(list(c["per_landmark"].values())))
        assert c["trained_on"] == compute_kind("cpu")  # candidates of one table may come from several machines
    assert f"({compute_kind('cpu')}, " in out.with_suffix(".md").read_text()
    # A rerun finds every candidate done and trains nothing.
    assert select.main(args) == 0
    assert json.loads(out.read_text()) == record
    # Its candidates grew from the evaluated step-0 model; a record of another one (retrained) is refused.
    step0 = tmp_path / "cld38-5step-smoke" / "evals" / "step0-seed0-step0.json"
    assert record["previous_sha256"] == json.loads(step0.read_text())["checkpoint_sha256"]
    # A candidate in another precision than the folder's (fp32 where bf16 is emulated) records its own; two
    # iterations, as emulated bf16 trains several times slower than fp32.
    folder = json.loads((tmp_path / "cld38-5step-smoke" / "profile.json").read_text())["precision"]
    other = "fp32" if folder == "bf16" else "bf16"
    assert select.main([*args[:-1], "alpha=1", "--grid", "iterations=2", "--candidate-precision", other]) == 0
    mixed = json.loads(out.read_text())["candidates"]
    assert [c["precision"] for c in mixed] == [folder, folder, other]
    assert f"({compute_kind('cpu')}, {other}) |" in out.with_suffix(".md").read_text()
    out.write_text(json.dumps({**record, "previous_sha256": "0" * 64}))
    assert select.main(args) == 2
    # Step 2 from the lwf chain's step-1 model: KSD alone has no chain of its own, so only --previous-arm finds one.
    later = [*common, "--step", "2", "--strategy", "kamp_ksd_only", "--grid", "alpha=1"]
    assert select.main(later) == 2
    assert select.main([*later, "--previous-arm", "lwf"]) == 0
    after = tmp_path / "cld38-5step-smoke" / "selection" / "kamp_ksd_only-after-lwf-step2-seed0.json"
    step1 = tmp_path / "cld38-5step-smoke" / "evals" / "lwf-seed0-step1.json"
    assert json.loads(after.read_text())["previous_sha256"] == json.loads(step1.read_text())["checkpoint_sha256"]
    assert "grows from the step-1 model of the chain `lwf`" in after.with_suffix(".md").read_text()


@pytest.mark.slow
def test_smoke_selection_through_later_steps_measures_every_step_against_its_labels(
    data_root: Path, tmp_path: Path
) -> None:
    common = ["--protocol", "cld38-5step", "--profile", "smoke", "--data-root", str(data_root), "--out", str(tmp_path)]
    assert ikl.main([*common, "--strategies", "lwf", "--max-steps", "1"]) == 0
    args = [*common, "--step", "1", "--through", "2", "--strategy", "lwf", "--grid", "alpha=2"]
    assert select.main([*args[:-4], "--through", "9"]) == 2  # past the protocol's last step: a clear error
    assert select.main(args) == 0
    out = tmp_path / "cld38-5step-smoke" / "selection" / "lwf-step1-2-seed0.json"
    record = json.loads(out.read_text())
    steps = load_protocol(data_root, "cld38-5step").steps
    assert set(record["val_ids_by_step"]) == {"1", "2"} and record["val_ids"] == record["val_ids_by_step"]["1"]
    (c,) = record["candidates"]
    per = c["per_landmark"]
    assert set(per) == {code for s in steps[:3] for code in s.landmarks}  # old by drift, steps 1-2 by labels
    assert c["learned_mre"] == pytest.approx(np.mean([per[code] for code in steps[1].landmarks]))
    assert c["new_mre"] == pytest.approx(c["by_step"]["2"])
    # Scored on the labelled landmarks only (steps 1-2); the drift of step 0's is reported, not scored.
    assert c["score"] == pytest.approx(np.mean([per[code] for s in steps[1:3] for code in s.landmarks]))
    assert c["score_with_drift"] == pytest.approx(np.mean(list(per.values())))
    (kept,) = (out.parent / "checkpoints" / out.stem / "alpha=2").glob("step*.safetensors")
    assert kept.name.startswith("step1-from-")  # step 2, the last, is measured, not kept
    assert (
        "| alpha=2 |" in out.with_suffix(".md").read_text() and "learned (step 1)" in out.with_suffix(".md").read_text()
    )
    # Interrupted after step 1: the rerun resumes from the kept model and measures the same chain.
    out.unlink()
    stamp = kept.stat().st_mtime_ns
    assert select.main(args) == 0
    assert kept.stat().st_mtime_ns == stamp
    assert json.loads(out.read_text())["candidates"][0]["per_landmark"].keys() == per.keys()


def test_rescore_scores_an_older_multi_step_entry_on_its_labelled_landmarks() -> None:
    from types import SimpleNamespace

    vals = {1: SimpleNamespace(codes=["a", "b"]), 2: SimpleNamespace(codes=["c"])}
    old = {"score": 2.0, "per_landmark": {"S": 0.5, "a": 1.0, "b": 2.0, "c": 6.0}}
    new = select.rescore(old, vals)  # type: ignore[arg-type]
    assert new["score"] == pytest.approx(3.0) and new["score_with_drift"] == 2.0  # S (drift) is not scored
    assert select.rescore(new, vals) == new  # already scored so: unchanged
    assert select.rescore(old, {1: vals[1]}) == old  # one step: the score keeps the drift
