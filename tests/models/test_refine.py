"""models.refine and the local stage of train_step: decoding a synthetic blob, head growth, unrefined points,
checkpoints, resume, and a tiny two-step run on real images that trains and predicts both stages."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from models.checkpoint import REFINER_PREFIX, Checkpoint
from models.config import BackboneConfig, CodecConfig, KANetConfig, RefineConfig, RefineTrainConfig, TrainConfig
from models.datasets import load_protocol
from models.evaluate import evaluate
from models.predictor import Predictor
from models.refine import UNREFINED_CONFIDENCE, Refiner, build_crop_network
from models.step_data import StepData
from models.trainer import Progress, TrainReport, train_step

from . import test_trainer_synthetic as trainer_tests

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = BackboneConfig(name="hrnet_w18_tiny")
REFINE = RefineConfig(crop_size=32)


class BlobNet(nn.Module):
    """A stand-in crop network: its heatmap is the crop itself at each heatmap pixel's centre (the mean of the
    2x2 crop pixels around input x = 4u + 1.5), repeated for K landmarks."""

    stride = 4

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        self.weight = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hm = (x[..., 1::4, 1::4] + x[..., 2::4, 2::4] + x[..., 1::4, 2::4] + x[..., 2::4, 1::4]) / 4
        return hm.repeat(1, self.k, 1, 1) * self.weight


def _blob_image(h: int, w: int, centre: tuple[float, float], sigma: float) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * sigma**2)).astype(np.float32)


@pytest.mark.parametrize("spacing", [0.2, 0.4, 0.1])
def test_a_synthetic_blob_is_refined_within_a_tenth_of_a_pixel(spacing: float) -> None:
    """A Gaussian blob of 2 crop heatmap pixels' sigma, estimated 2-4 crop pixels off by the first stage: the
    local stage's crop, decoding and mapping back put it within 0.1 image pixels."""
    config = RefineConfig(crop_size=64, mm_per_pixel=0.2)
    k = image_pixels_per_crop = config.mm_per_pixel / spacing
    centres = [(101.3, 87.6), (40.2, 150.9)]
    images = [_blob_image(220, 180, c, sigma=8 * k) for c in centres]
    offsets = np.array([[[3.4 * k, -0.9 * k]], [[-k, -2 * k]]])  # first-stage errors of 2-4 crop pixels
    estimates = np.array([[c] for c in centres]) + offsets
    refiner = Refiner(BlobNet(1), config, "fp32")  # type: ignore[arg-type]
    refined = refiner.refine(images, estimates, np.ones((2, 1)), np.full((2, 2), spacing))
    assert refined.local.all()
    error = np.abs(refined.points[:, 0] - np.array(centres))
    assert error.max() < 0.1, (error, image_pixels_per_crop)
    assert refined.confidence.min() > 0.9  # the blob's peak is 1


def test_a_second_pass_recentres_the_crop_on_the_first_passs_point() -> None:
    """A blob 24 crop pixels from the estimate, near the edge of a 64-pixel crop: the second pass crops around the
    first pass's point and lands on the blob at least as well."""
    config = RefineConfig(crop_size=64, mm_per_pixel=0.2)
    image = _blob_image(200, 200, (100.0, 100.0), 8.0)
    estimate = np.array([[[76.0, 100.0]]])
    one = Refiner(BlobNet(1), config, "fp32").refine([image], estimate, np.ones((1, 1)), np.full((1, 2), 0.2))  # type: ignore[arg-type]
    two = Refiner(BlobNet(1), config, "fp32", passes=2).refine(  # type: ignore[arg-type]
        [image], estimate, np.ones((1, 1)), np.full((1, 2), 0.2)
    )
    assert np.abs(two.points[0, 0] - [100.0, 100.0]).max() < 0.1
    assert np.abs(two.points[0, 0] - [100.0, 100.0]).max() <= np.abs(one.points[0, 0] - [100.0, 100.0]).max() + 1e-6


def test_a_point_outside_the_image_keeps_its_first_stage_position_with_lower_confidence() -> None:
    image = _blob_image(100, 80, (40.0, 50.0), 8.0)
    estimates = np.array([[[41.0, 49.0], [-3.0, 20.0], [np.nan, np.nan]]])
    refined = Refiner(BlobNet(3), REFINE, "fp32").refine(  # type: ignore[arg-type]
        [image], estimates, np.full((1, 3), 0.8), np.full((1, 2), 0.2)
    )
    assert refined.local.tolist() == [[True, False, False]]
    assert np.array_equal(refined.points[0, 1], [-3.0, 20.0])
    assert refined.confidence[0, 1] == pytest.approx(0.8 * UNREFINED_CONFIDENCE)
    assert np.abs(refined.points[0, 0] - [40.0, 50.0]).max() < 0.2


def test_an_old_landmarks_local_output_is_unchanged_by_head_growth() -> None:
    torch.manual_seed(0)
    net = build_crop_network(REFINE, [3]).eval()
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        before = net(x)
        net.head.grow(2)
        after = net(x)
    assert after.shape == (4, 5, 8, 8)
    assert torch.equal(after[:, :3], before)


# ---- train_step with a local stage ------------------------------------------------------------------------


def _synthetic(codes: list[str], n: int = 2, seed: int = 0) -> StepData:
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, size=(90, 70), dtype=np.uint8) for _ in range(n)]
    keypoints = rng.uniform(15, 55, size=(n, len(codes), 2))
    return StepData(images, keypoints, list(codes), spacing_mm=np.full(n, 0.2), ids=[f"img{i}" for i in range(n)])


def _config(iterations: int, refine_iterations: int, **overrides: object) -> TrainConfig:
    return trainer_tests._config(
        iterations, refine=RefineTrainConfig(iterations=refine_iterations, crops=6), **overrides
    )


@functools.cache
def _two_stage_step0() -> Checkpoint:
    ckpt, _ = train_step(
        None,
        _synthetic(["a", "b"], seed=1),
        "finetune",
        _config(2, 4),
        backbone=TINY,
        codec=CodecConfig(input_size=(64, 80)),
        refine=REFINE,
    )
    return ckpt


def test_a_two_stage_checkpoint_round_trips_and_one_stage_files_are_unchanged() -> None:
    step0 = _two_stage_step0()
    assert step0.refine == REFINE
    assert any(k.startswith(REFINER_PREFIX) for k in step0.state_dict)
    again = Checkpoint.from_bytes(step0.to_bytes())
    assert again.refine == REFINE and again.sha256 == step0.sha256
    for key, value in step0.build_crop_network().state_dict().items():
        assert torch.equal(again.build_crop_network().state_dict()[key], value)
    one, _ = train_step(
        None, _synthetic(["a"]), "finetune", _config(1, 1), backbone=TINY, codec=CodecConfig(input_size=(64, 80))
    )
    assert one.refine is None and "refine" not in one.metadata()
    assert not any(k.startswith(REFINER_PREFIX) for k in one.state_dict)
    with pytest.raises(ValueError, match="one-stage"):
        one.build_crop_network()


@pytest.mark.parametrize("strategy", ["finetune", "lwf", "kamp", "joint"])
def test_later_steps_grow_and_train_the_local_stage(strategy: str) -> None:
    step0 = _two_stage_step0()
    codes = ["a", "b", "c"] if strategy == "joint" else ["c"]
    ckpt, report = train_step(step0, _synthetic(codes, seed=2), strategy, _config(2, 3))
    assert ckpt.refine == REFINE and ckpt.codes == ["a", "b", "c"]
    assert ckpt.build_crop_network().head.step_sizes == [2, 1]
    assert report.refine_seconds > 0 and report.refine_history[-1]["iteration"] == 3
    distils = strategy in ("lwf", "kamp")
    assert (("ksd" in report.refine_history[-1]) or ("lwf" in report.refine_history[-1])) == distils
    # Its crop network answers every landmark, the new one too. The estimates are given inside the image: those of
    # a first stage trained two iterations on noise may lie anywhere, outside too (kept, not refined), which
    # depends on the machine's arithmetic.
    predictor = Predictor(ckpt, device="cpu")
    assert predictor.refiner is not None
    image = _synthetic(["c"], seed=4).images[0]
    estimates = np.array([[[20.0, 30.0], [35.0, 45.0], [50.0, 60.0]]])
    refined = predictor.refiner.refine([image], estimates, np.ones((1, 3)), np.full((1, 2), 0.2))
    assert refined.local.all() and np.isfinite(refined.points).all()


@pytest.mark.parametrize(("refine_alpha", "expected"), [(None, 2.0), (20.0, 20.0)])
def test_the_local_stage_distils_with_its_own_weight(
    refine_alpha: float | None, expected: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RefineTrainConfig.alpha weighs the local stage's distillation; None takes the first stage's alpha."""
    import models.refine_training as refine_training

    step0 = _two_stage_step0()  # (trained first: its own losses are not this test's)
    seen: list[float] = []
    real = refine_training.step_loss

    def spy(strategy, config, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(config.alpha)
        return real(strategy, config, *args, **kwargs)

    monkeypatch.setattr(refine_training, "step_loss", spy)
    config = _config(2, 2, alpha=2.0)
    config.refine.alpha = refine_alpha
    train_step(step0, _synthetic(["c"], seed=6), "kamp_ksd_only", config)
    assert seen and set(seen) == {expected}


class _Interrupted(Exception):
    pass


def test_the_local_stage_resumes_where_it_was_stopped(tmp_path: Path) -> None:
    data = _synthetic(["a", "b"], seed=5)
    config = _config(4, 20, state_every=10)
    kwargs = {"backbone": TINY, "codec": CodecConfig(input_size=(64, 80)), "refine": REFINE}
    reference, _ = train_step(None, data, "finetune", config, **kwargs)  # type: ignore[arg-type]

    def stop(p: Progress) -> None:
        if p.stage == "refine" and p.iteration == 10:
            raise _Interrupted

    state = tmp_path / "state.pt"
    with pytest.raises(_Interrupted):
        train_step(None, data, "finetune", config, state_path=state, progress=stop, **kwargs)  # type: ignore[arg-type]
    assert torch.load(state, weights_only=False)["stage"] == "refine"
    resumed, report = train_step(None, data, "finetune", config, state_path=state, **kwargs)  # type: ignore[arg-type]
    assert report.resumed_from == 4 and not state.exists()
    for key, value in reference.state_dict.items():
        assert torch.equal(resumed.state_dict[key], value), key


# ---- a tiny two-step run on real images -------------------------------------------------------------------


def test_a_two_step_run_on_real_images_trains_and_predicts_both_stages(data_root: Path) -> None:
    protocol = load_protocol(data_root, "cld38-5step")
    dataset = protocol.load_dataset(data_root)
    first, second = protocol.steps[0], protocol.steps[1]
    step0_data = dataset.step_data(first.images[:8], first.landmarks, protocol.annotator)
    step1_data = dataset.step_data(second.images[:8], second.landmarks, protocol.annotator)
    test = dataset.step_data(protocol.test_images[:4], protocol.landmarks_up_to(1), protocol.annotator)
    common: dict[str, object] = {"batch_size": 4, "warmup": 5, "device": "cpu", "state_every": 0}
    refine_train = RefineTrainConfig(iterations=30, crops=16)
    step0, r0 = train_step(
        None,
        step0_data,
        "finetune",
        TrainConfig(iterations=40, refine=refine_train, **common),  # type: ignore[arg-type]
        backbone=TINY,
        codec=CodecConfig(input_size=(128, 160)),
        refine=RefineConfig(crop_size=48),
    )
    step1, r1 = train_step(
        step0,
        step1_data,
        "kamp",
        TrainConfig(iterations=20, refine=refine_train, kanet=KANetConfig(iterations=5), **common),  # type: ignore[arg-type]
    )
    assert step1.codes == protocol.landmarks_up_to(1)
    assert r0.refine_history[0]["gt"] > r0.refine_history[-1]["gt"]  # the local stage learns
    predictor = Predictor(step1, device="cpu")
    assert predictor.stages == 2
    [prediction] = predictor.predict([test.images[0]], [tuple(test.spacing_mm[0])])
    assert [lm.code for lm in prediction.landmarks] == step1.codes
    assert all(lm.stage == "local" and np.isfinite([lm.x, lm.y]).all() for lm in prediction.landmarks)
    two = evaluate(predictor, test)
    one = evaluate(Predictor(step1, device="cpu", local=False), test)
    assert two.codes == one.codes == step1.codes
    assert not np.array_equal(two.errors, one.errors)  # the local stage moved the points
    assert isinstance(r1, TrainReport) and r1.refine_seconds > 0
