"""models.trainer.train_step on small synthetic data, for fast runs: every strategy, resume after an
interruption, and bad input. (The real two-step run: tests/models/test_trainer.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import models.strategies as strategies_module
import models.trainer as trainer_module
from models.checkpoint import Checkpoint
from models.config import BackboneConfig, CodecConfig, KANetConfig, TrainConfig
from models.network import LandmarkNet
from models.registry import STRATEGIES
from models.step_data import StepData
from models.trainer import Progress, TrainReport, train_step

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = BackboneConfig(name="hrnet_w18_tiny")


# ---- synthetic data for fast runs -------------------------------------------------------------------------

OLD = ["a", "b", "c"]
NEW = ["d", "e"]
SMALL_CODEC = CodecConfig(input_size=(64, 64))


def _synthetic(codes: list[str], n: int = 2, seed: int = 0) -> StepData:
    """n small random images of different sizes with every landmark labelled inside them."""
    rng = np.random.default_rng(seed)
    sizes = [(70, 90), (96, 64), (80, 80)]
    images = [rng.integers(0, 256, size=sizes[i % 3], dtype=np.uint8) for i in range(n)]
    keypoints = np.stack([rng.uniform(0.2, 0.8, size=(len(codes), 2)) * [im.shape[1], im.shape[0]] for im in images])
    return StepData(images, keypoints, list(codes), spacing_mm=np.full(n, 0.1), ids=[f"img{i}" for i in range(n)])


def _config(iterations: int, **overrides: object) -> TrainConfig:
    base: dict[str, object] = {
        "iterations": iterations,
        "batch_size": 2,
        "warmup": 2,
        "device": "cpu",
        "state_every": 0,
        "kanet": KANetConfig(iterations=3, hidden=8),
    }
    base.update(overrides)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def synthetic_step0() -> Checkpoint:
    ckpt, _ = train_step(None, _synthetic(OLD, seed=1), "finetune", _config(2), backbone=TINY, codec=SMALL_CODEC)
    return ckpt


# ---- (b) every strategy ---------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_runs_a_step(strategy: str, synthetic_step0: Checkpoint) -> None:
    joint = strategy.startswith("joint")
    # The joint baselines see the old landmarks' labels as well; incremental strategies only the new ones.
    data = _synthetic(OLD + NEW if joint else NEW, seed=2)
    config = _config(3, init="scratch" if joint else "previous")
    ckpt, report = train_step(synthetic_step0, data, strategy, config, names={"d": "dee"})
    assert ckpt.codes == OLD + NEW
    assert [lm.step for lm in ckpt.landmarks] == [0, 0, 0, 1, 1]
    assert ckpt.landmarks[3].name == "dee"
    assert ckpt.strategy == strategy and ckpt.step == 1 and ckpt.parent_sha256 == synthetic_step0.sha256
    assert report.new_codes == NEW and report.old_codes == OLD
    assert all(torch.isfinite(v).all() for v in ckpt.state_dict.values() if v.is_floating_point())
    if strategy in ("kamp", "kamp_random"):
        assert report.triplets and all(o in OLD and a in NEW and b in NEW for o, a, b in report.triplets)
        assert "ka" in report.loss_history[-1]
    else:
        assert report.triplets == []
    # The trained model loads and predicts every landmark.
    with torch.no_grad():
        assert ckpt.build_model()(torch.rand(1, 1, 64, 64)).shape == (1, 5, 16, 16)


@pytest.mark.parametrize("strategy", ["kamp_ksd_only", "kamp"])
def test_feature_term_is_trained_and_logged(strategy: str, synthetic_step0: Checkpoint) -> None:
    """With feature_weight > 0 the trainer computes the new model's features even without a KA term, and l_FD
    (positive once the backbone moves) is in the loss history."""
    config = _config(4, feature_weight=1.0)
    _, report = train_step(synthetic_step0, _synthetic(NEW, seed=2), strategy, config)
    assert all("fd" in entry for entry in report.loss_history)
    assert report.loss_history[-1]["fd"] > 0


def test_teachers_stay_in_eval_mode(synthetic_step0: Checkpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    """The previous model and KA-Net are frozen teachers: in eval mode at every call, so their BatchNorm uses
    (and never updates) its running statistics, and no gradient reaches them."""
    teacher_calls: list[tuple[bool, bool]] = []
    kanet_calls: list[bool] = []
    built: list[LandmarkNet] = []  # the teacher, and the copy source of the student (never called itself)
    forward_with_features = LandmarkNet.forward_with_features
    build_model = Checkpoint.build_model
    ka_prediction = strategies_module.ka_prediction

    def spy_build(self: Checkpoint, *args: object, **kwargs: object) -> LandmarkNet:
        built.append(build_model(self, *args, **kwargs))
        return built[-1]

    def spy_teacher(self: LandmarkNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if any(self is m for m in built):  # the student calls it too (KA-Net reads its features)
            teacher_calls.append((self.training, any(p.requires_grad for p in self.parameters())))
        return forward_with_features(self, x)

    def spy_kanet(ka, features, batch):  # type: ignore[no-untyped-def]
        kanet_calls.append(ka.kanet.training)
        return ka_prediction(ka, features, batch)

    monkeypatch.setattr(Checkpoint, "build_model", spy_build)
    monkeypatch.setattr(LandmarkNet, "forward_with_features", spy_teacher)
    monkeypatch.setattr(strategies_module, "ka_prediction", spy_kanet)
    before = {k: v.clone() for k, v in synthetic_step0.state_dict.items()}
    train_step(synthetic_step0, _synthetic(NEW, seed=3), "kamp", _config(4))
    assert teacher_calls and not any(training or grad for training, grad in teacher_calls)
    assert kanet_calls and not any(kanet_calls)
    assert all(torch.equal(before[k], v) for k, v in synthetic_step0.state_dict.items())


# ---- (c) resume -------------------------------------------------------------------------------------------


class _Interrupted(Exception):
    """Stands for a crash or a cancelled job in the middle of training."""


def _resume_inputs() -> tuple[StepData, TrainConfig]:
    return _synthetic(NEW, seed=3), _config(10, state_every=5)


@pytest.fixture(scope="module")
def uninterrupted(synthetic_step0: Checkpoint) -> tuple[Checkpoint, TrainReport]:
    data, config = _resume_inputs()
    return train_step(synthetic_step0, data, "kamp", config)


def _assert_same_weights(a: Checkpoint, b: Checkpoint) -> None:
    assert a.state_dict.keys() == b.state_dict.keys()
    for key, value in a.state_dict.items():
        assert torch.equal(value, b.state_dict[key]), key


@pytest.mark.parametrize("how", ["progress-callback", "crash-at-iteration-7"])
def test_resume_after_interruption_matches_uninterrupted_run(
    how: str,
    synthetic_step0: Checkpoint,
    uninterrupted: tuple[Checkpoint, TrainReport],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """KAMP step of 10 iterations with a state every 5: interrupted after the state at 5, then resumed."""
    data, config = _resume_inputs()
    state = tmp_path / "state.pt"
    progress = None
    if how == "progress-callback":
        # Progress comes every 10 iterations (and at stage ends), so the first training report -- at
        # iteration 10, before any state of that iteration -- is where a callback can stop this run.
        def progress(p: Progress) -> None:
            if p.stage == "train":
                raise _Interrupted(f"stopped at {p.iteration}")

    else:
        calls = {"n": 0}
        real_step_loss = trainer_module.step_loss

        def crashing_step_loss(*args: object, **kwargs: object) -> object:
            if calls["n"] == 7:  # the 8th iteration, index 7
                raise _Interrupted("crash at iteration 7")
            calls["n"] += 1
            return real_step_loss(*args, **kwargs)

        monkeypatch.setattr(trainer_module, "step_loss", crashing_step_loss)

    with pytest.raises(_Interrupted):
        train_step(synthetic_step0, data, "kamp", config, state_path=state, progress=progress)
    assert state.is_file()
    monkeypatch.undo()

    resumed, report = train_step(synthetic_step0, data, "kamp", config, state_path=state)
    assert report.resumed_from == 5
    assert not state.exists()  # removed once the step completes
    reference, reference_report = uninterrupted
    _assert_same_weights(resumed, reference)
    assert report.triplets == reference_report.triplets and report.kanet_loss == reference_report.kanet_loss


def test_resume_reproduces_loss_history(
    synthetic_step0: Checkpoint, uninterrupted: tuple[Checkpoint, TrainReport], tmp_path: Path
) -> None:
    data, config = _resume_inputs()
    state = tmp_path / "state.pt"

    def stop(p: Progress) -> None:
        if p.stage == "train":
            raise _Interrupted

    with pytest.raises(_Interrupted):
        train_step(synthetic_step0, data, "kamp", config, state_path=state, progress=stop)
    _, report = train_step(synthetic_step0, data, "kamp", config, state_path=state)
    expected = uninterrupted[1].loss_history
    assert len(report.loss_history) == len(expected)
    for got, want in zip(report.loss_history, expected, strict=True):
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-5), key


def test_state_of_other_inputs_is_ignored(synthetic_step0: Checkpoint, tmp_path: Path) -> None:
    data, config = _resume_inputs()
    state = tmp_path / "state.pt"

    def stop(p: Progress) -> None:
        if p.stage == "train":
            raise _Interrupted

    # A state of a finetune run with these images ...
    with pytest.raises(_Interrupted):
        train_step(synthetic_step0, data, "finetune", config, state_path=state, progress=stop)
    assert state.is_file()
    # ... does not resume a run of another strategy or seed: it starts over.
    other = _config(10, state_every=5, seed=1)
    resumed, report = train_step(synthetic_step0, data, "lwf", other, state_path=state)
    assert report.resumed_from == 0
    fresh, _ = train_step(synthetic_step0, data, "lwf", other)
    _assert_same_weights(resumed, fresh)
    assert not state.exists()


def test_a_step_0_state_of_another_network_is_ignored(tmp_path: Path) -> None:
    data, state = _synthetic(OLD), tmp_path / "state.pt"
    config = _config(10, state_every=5)

    def stop(p: Progress) -> None:
        if p.stage == "train" and p.iteration >= 6:
            raise _Interrupted

    with pytest.raises(_Interrupted):
        train_step(None, data, "finetune", config, backbone=TINY, codec=SMALL_CODEC, state_path=state, progress=stop)
    assert state.is_file()
    # The same images and settings with the features before the last ReLU: another network, so it starts over.
    preact = BackboneConfig(name="hrnet_w18_tiny", last_relu=False)
    model, report = train_step(None, data, "finetune", config, backbone=preact, codec=SMALL_CODEC, state_path=state)
    assert report.resumed_from == 0 and model.backbone.last_relu is False


# ---- (d) bad input --------------------------------------------------------------------------------------


def test_unknown_strategy_raises(synthetic_step0: Checkpoint) -> None:
    with pytest.raises(ValueError, match="unknown strategy"):
        train_step(synthetic_step0, _synthetic(NEW), "kamp_plus", _config(1))


def test_no_labelled_landmark_raises(synthetic_step0: Checkpoint) -> None:
    data = _synthetic(NEW)
    data.keypoints[:] = np.nan
    with pytest.raises(ValueError, match="no labelled landmark"):
        train_step(synthetic_step0, data, "kamp", _config(1))
    with pytest.raises(ValueError):
        train_step(None, data, "finetune", _config(1), backbone=TINY, codec=SMALL_CODEC)


def test_empty_data_raises(synthetic_step0: Checkpoint) -> None:
    empty = StepData([], np.zeros((0, 2, 2)), list(NEW))
    with pytest.raises(ValueError, match="at least one image"):
        train_step(synthetic_step0, empty, "kamp", _config(1))


def test_step0_without_landmarks_raises() -> None:
    # No codes at all: nothing is labelled, so the "no labelled landmark" check fires first.
    data = _synthetic(OLD)
    with pytest.raises(ValueError):
        train_step(None, StepData(data.images, data.keypoints[:, :0], []), "finetune", _config(1), backbone=TINY)
