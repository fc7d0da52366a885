"""models.precision: which precision `auto` means, that bf16 moves no decoded landmark, and torch's threads."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import models.precision as precision_module
from models.checkpoint import Checkpoint
from models.codec import HeatmapCodec
from models.config import BackboneConfig, CodecConfig, TrainConfig, from_dict
from models.datasets import load_protocol
from models.network import LandmarkNet
from models.precision import (
    autocast,
    cpu_bf16_flags,
    cpu_has_avx512,
    default_threads,
    memory_format,
    prepare_input,
    prepare_module,
    resolve_precision,
    set_torch_threads,
)
from models.predictor import Predictor
from models.step_data import StepData
from models.trainer import train_step

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[2]
#: The step-0 model of cld38-5step (`cpu` profile, seed 0, trained in fp32) that the benchmark keeps in git.
STEP0 = REPO / "bench" / "results" / "cld38-5step-cpu" / "checkpoints" / "seed0" / "shared" / "step0.safetensors"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    amx = tmp_path / "amx"
    amx.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_bf16 amx_tile\n")
    old = tmp_path / "old"
    old.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma\n")
    assert cpu_bf16_flags(str(amx)) == {"amx_bf16", "avx512_bf16"}
    assert cpu_bf16_flags(str(old)) == frozenset()
    assert cpu_bf16_flags(str(tmp_path / "missing")) == frozenset()
    assert cpu_has_avx512(str(amx)) and not cpu_has_avx512(str(old))
    assert not cpu_has_avx512(str(tmp_path / "missing"))


def test_auto_is_bf16_only_where_the_cpu_has_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision_module, "cpu_bf16_flags", lambda: frozenset({"amx_bf16"}))
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(precision_module, "cpu_bf16_flags", lambda: frozenset())
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16" and resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        resolve_precision("fp16", "cpu")


def test_train_config_refuses_an_unknown_precision_and_reads_old_amp() -> None:
    with pytest.raises(ValueError, match="unknown precision"):
        from_dict(TrainConfig, {"precision": "half"})
    # Checkpoints written before the setting carry `amp`; it is dropped, the default applies.
    assert from_dict(TrainConfig, {"amp": True, "iterations": 3}).precision == "auto"


def test_bf16_layout_keeps_values_and_float32_weights() -> None:
    net = prepare_module(LandmarkNet(backbone=BackboneConfig(name="hrnet_w18_tiny"), step_sizes=[3]), "bf16")
    conv = next(
        m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[1] > 1 and m.weight.shape[-1] > 1
    )
    assert conv.weight.dtype == torch.float32 and conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(2, 1, 32, 24)
    y = prepare_input(x, "bf16")
    assert torch.equal(x, y) and y.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), autocast(torch.device("cpu"), "bf16"):
        assert net.eval()(y).dtype == torch.bfloat16
    with torch.no_grad(), autocast(torch.device("cpu"), "fp32"):
        assert net(x).dtype == torch.float32


def test_fp32_is_channels_last_only_on_a_cpu_without_avx512(monkeypatch: pytest.MonkeyPatch) -> None:
    nhwc, plain = torch.channels_last, torch.contiguous_format
    for avx512 in (True, False):
        monkeypatch.setattr(precision_module, "cpu_has_avx512", lambda avx512=avx512: avx512)
        assert memory_format("bf16", "cpu") == nhwc and memory_format("bf16", "cuda") == nhwc
        assert memory_format("fp32", "cuda") == plain
        assert memory_format("fp32", "cpu") == (plain if avx512 else nhwc)
    # prepare_module and prepare_input take the layout of the device their tensors lie on.
    net = prepare_module(LandmarkNet(backbone=BackboneConfig(name="hrnet_w18_tiny"), step_sizes=[3]), "fp32")
    conv = next(
        m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[1] > 1 and m.weight.shape[-1] > 1
    )
    assert conv.weight.is_contiguous(memory_format=nhwc)
    x = torch.rand(2, 1, 32, 24)
    assert prepare_input(x, "fp32").is_contiguous(memory_format=nhwc)
    with torch.no_grad():
        assert torch.allclose(net.eval()(prepare_input(x, "fp32")), net(x), atol=1e-5)


def test_codec_round_trip_through_bf16_heatmaps_moves_no_peak() -> None:
    """Heatmaps stored in bf16 (as the network emits them) decode within 0.05 heatmap px of the float32 ones,
    and both within 0.05 px of the encoded points."""
    codec = HeatmapCodec(CodecConfig(input_size=(160, 200)))
    g = torch.Generator().manual_seed(0)
    w, h = codec.heatmap_size
    points = torch.rand(4, 19, 2, generator=g) * torch.tensor([w - 8.0, h - 8.0]) + 4.0  # (B, K, 2) heatmap px
    heatmaps = codec.encode(points)
    fp32, _ = codec.decode(heatmaps)
    bf16, _ = codec.decode(heatmaps.to(torch.bfloat16).float())
    assert (fp32 - points).norm(dim=-1).max() < 0.05
    assert (bf16 - fp32).norm(dim=-1).max() < 0.05


def _test_images(data_root: Path, n: int) -> StepData:
    protocol = load_protocol(data_root, "cld38-5step")
    ds = protocol.load_dataset(data_root)
    return ds.step_data(protocol.test_images[:n], protocol.steps[0].landmarks, protocol.annotator)


def test_a_trained_model_decodes_the_same_points_in_bf16(data_root: Path) -> None:
    """The kept step-0 model on 8 test images: every landmark within 0.05 heatmap px between the precisions."""
    checkpoint = Checkpoint.load(STEP0)
    images = _test_images(data_root, 8).images
    fp32 = Predictor(checkpoint, device="cpu", precision="fp32")
    bf16 = Predictor(checkpoint, device="cpu", precision="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    a, _ = fp32.predict_arrays(images)  # (N, K, 2) image pixels
    b, _ = bf16.predict_arrays(images)
    codec = HeatmapCodec(checkpoint.codec)
    to_heatmap = [codec.image_to_heatmap(codec.to_input(im)[1]) for im in images]
    shift = np.stack(
        [np.linalg.norm(t.apply(p) - t.apply(q), axis=-1) for t, p, q in zip(to_heatmap, a, b, strict=True)]
    )
    assert shift.max() < 0.05, shift.max()  # heatmap px
    assert a.dtype == b.dtype == np.float64


def test_the_checkpoint_records_the_precision_it_trained_in(data_root: Path) -> None:
    data = _test_images(data_root, 2)
    common = {"iterations": 2, "batch_size": 2, "warmup": 1, "device": "cpu", "state_every": 0}
    for precision in ("fp32", "bf16"):
        config = TrainConfig(**common, precision=precision)  # type: ignore[arg-type]
        ck, report = train_step(
            None,
            data,
            "finetune",
            config,
            backbone=BackboneConfig(name="hrnet_w18_tiny"),
            codec=CodecConfig(input_size=(64, 80)),
        )
        assert report.precision == precision and ck.report["precision"] == precision
        assert ck.train_config["precision"] == precision
        assert all(
            v.dtype == torch.float32 and v.is_contiguous() for v in ck.state_dict.values() if v.is_floating_point()
        )
        assert np.isfinite(report.loss_history[-1]["gt"])


def test_thread_count_follows_the_setting_then_omp(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        assert set_torch_threads(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert default_threads() == 1
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.setattr(precision_module, "available_cores", lambda: 3)
        assert default_threads() == 3
        with pytest.raises(ValueError, match="at least one thread"):
            set_torch_threads(0)
    finally:
        torch.set_num_threads(before)


def test_a_thread_sets_its_own_count() -> None:
    """OpenMP's count is per calling thread: a thread that sets 1 computes with 1 whatever the caller has."""
    seen: list[int] = []

    def run() -> None:
        set_torch_threads(1)
        seen.append(torch.get_num_threads())

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen == [1]
