"""Checkpoint files: round trip, content hash, atomic save, metadata and rejection of non-checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from models.checkpoint import Checkpoint, LandmarkInfo
from models.config import BackboneConfig, CodecConfig
from models.network import LandmarkNet
from models.predictor import Predictor

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEPS = [0, 0, 1, 1, 1]
CODES = ["S", "N", "D", "U1A", "L1A"]
PARENT = "ab" * 32


@pytest.fixture(scope="module")
def checkpoint() -> Checkpoint:
    """A step-1 checkpoint of an untrained tiny network whose BatchNorm statistics are not the defaults, so
    a load that dropped buffers would change the predictions."""
    torch.manual_seed(0)
    net = LandmarkNet(backbone=BackboneConfig(name="hrnet_w18_tiny"), step_sizes=[2, 3])
    with torch.no_grad():
        net.train()(torch.rand(2, 1, 96, 64))  # update the running statistics
        for p in net.head.parameters():
            p.normal_()  # a head with visible output, not N(0, 0.001)
    return Checkpoint(
        state_dict={k: v.detach().clone() for k, v in net.state_dict().items()},
        landmarks=[LandmarkInfo(code=c, step=s, name=f"landmark {c}") for c, s in zip(CODES, STEPS, strict=True)],
        backbone=BackboneConfig(name="hrnet_w18_tiny"),
        codec=CodecConfig(input_size=(64, 96), sigma=1.5),
        step=1,
        strategy="kamp",
        parent_sha256=PARENT,
        train_config={"iterations": 3, "lr": 0.002},
        report={"triplets": [["S", "D", "U1A"]]},
    )


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [
        rng.integers(0, 256, size=(120, 90), dtype=np.uint8),
        rng.integers(0, 256, size=(200, 300), dtype=np.uint8),
        rng.random((77, 51)),
    ]


def test_save_load_round_trip(checkpoint: Checkpoint, tmp_path: Path) -> None:
    path = tmp_path / "sub" / "model.safetensors"  # the parent folder is created
    sha = checkpoint.save(path)
    loaded = Checkpoint.load(path)
    assert loaded.state_dict.keys() == checkpoint.state_dict.keys()
    for key, value in checkpoint.state_dict.items():
        assert torch.equal(loaded.state_dict[key], value), key
        assert loaded.state_dict[key].dtype == value.dtype
    assert loaded.landmarks == checkpoint.landmarks
    assert loaded.backbone == checkpoint.backbone and loaded.codec == checkpoint.codec
    assert (loaded.step, loaded.strategy, loaded.parent_sha256) == (1, "kamp", PARENT)
    assert loaded.train_config == checkpoint.train_config and loaded.report == checkpoint.report
    assert loaded.created_at == checkpoint.created_at
    # The content hash survives the round trip (children name their parent by it).
    assert loaded.sha256 == sha == checkpoint.sha256


def test_round_trip_gives_identical_predictions(checkpoint: Checkpoint, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    checkpoint.save(path)
    images = _images()
    before_pts, before_conf = Predictor(checkpoint, device="cpu").predict_arrays(images)
    after_pts, after_conf = Predictor(Checkpoint.load(path), device="cpu").predict_arrays(images)
    assert before_pts.shape == (3, 5, 2)
    assert np.array_equal(before_pts, after_pts) and np.array_equal(before_conf, after_conf)


def test_build_model_is_in_eval_mode_with_the_weights(checkpoint: Checkpoint) -> None:
    model = checkpoint.build_model()
    assert not model.training
    assert model.head.step_sizes == [2, 3]
    for key, value in model.state_dict().items():
        assert torch.equal(value, checkpoint.state_dict[key]), key


def test_sha256_is_the_file_hash(checkpoint: Checkpoint, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    returned = checkpoint.save(path)
    on_disk = hashlib.sha256(path.read_bytes()).hexdigest()
    assert returned == on_disk == checkpoint.sha256
    assert len(on_disk) == 64


def test_a_file_from_before_a_metadata_field_keeps_its_own_hash(checkpoint: Checkpoint) -> None:
    # A file written before `head_channels` existed: today's to_bytes would add the field, changing the hash, so a
    # child's parent_sha256 would not match the record of the file it grew from.
    meta = checkpoint.metadata()
    del meta["backbone"]["head_channels"]
    tensors = {k: v.contiguous() for k, v in checkpoint.state_dict.items()}
    old_file = st_save(tensors, metadata={"kamp": json.dumps(meta, sort_keys=True)})
    loaded = Checkpoint.from_bytes(old_file)
    assert loaded.to_bytes() != old_file
    assert loaded.sha256 == hashlib.sha256(old_file).hexdigest()
    changed = replace(loaded, step=2)  # a changed checkpoint is a new file: its hash is of what it would write
    assert changed.sha256 == hashlib.sha256(changed.to_bytes()).hexdigest() != loaded.sha256


def test_save_leaves_no_temporary_file(checkpoint: Checkpoint, tmp_path: Path) -> None:
    checkpoint.save(tmp_path / "model.safetensors")
    checkpoint.save(tmp_path / "model.safetensors")  # overwriting is fine too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_failed_save_leaves_no_file(checkpoint: Checkpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk went away")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk went away"):
        checkpoint.save(tmp_path / "model.safetensors")
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary file


def test_failed_save_keeps_the_previous_file(
    checkpoint: Checkpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"previous version")

    def failing_fsync(fd: int) -> None:
        raise OSError("write failed")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="write failed"):
        checkpoint.save(path)
    assert path.read_bytes() == b"previous version"  # never half-overwritten
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_metadata_in_the_file(checkpoint: Checkpoint, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    checkpoint.save(path)
    # Read the header with safetensors itself, independently of Checkpoint.load.
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["kamp"])
    assert meta["format"] == "kamp-checkpoint" and meta["format_version"] == 1
    assert [lm["code"] for lm in meta["landmarks"]] == CODES
    assert [lm["step"] for lm in meta["landmarks"]] == STEPS
    assert meta["landmarks"][0]["name"] == "landmark S"
    assert meta["backbone"] == {
        "name": "hrnet_w18_tiny",
        "in_channels": 1,
        "pretrained": None,
        "last_relu": True,
        "head_channels": 0,
    }
    assert meta["codec"] == {"input_size": [64, 96], "stride": 4, "sigma": 1.5}
    assert meta["strategy"] == "kamp" and meta["step"] == 1
    assert meta["parent_sha256"] == PARENT
    assert meta == json.loads(json.dumps(checkpoint.metadata()))


def test_codes_and_step_sizes(checkpoint: Checkpoint) -> None:
    assert checkpoint.codes == CODES
    assert checkpoint.step_sizes == [2, 3]  # steps [0, 0, 1, 1, 1]


def test_step_sizes_skip_steps_without_landmarks() -> None:
    landmarks = [LandmarkInfo(code=str(i), step=s) for i, s in enumerate([0, 0, 2, 2, 2, 3])]
    ckpt = Checkpoint(
        state_dict={}, landmarks=landmarks, backbone=BackboneConfig(), codec=CodecConfig(), step=3, strategy="lwf"
    )
    assert ckpt.step_sizes == [2, 3, 1]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"definitely not a checkpoint", id="text"),
        pytest.param(np.random.default_rng(0).bytes(4096), id="random-bytes"),
        pytest.param(b"\x00" * 8, id="zero-header"),
        pytest.param((2).to_bytes(8, "little") + b"[]", id="header-not-a-dict"),
        pytest.param((2**62).to_bytes(8, "little") + b"{}", id="absurd-header-length"),
        pytest.param(st_save({"w": torch.zeros(2)}), id="safetensors-without-metadata"),
        pytest.param(
            st_save({"w": torch.zeros(2)}, metadata={"kamp": json.dumps({"format": "other"})}), id="other-format"
        ),
        pytest.param(st_save({"w": torch.zeros(2)}, metadata={"kamp": "{not json"}), id="metadata-not-json"),
    ],
)
def test_from_bytes_rejects_garbage(data: bytes) -> None:
    with pytest.raises(ValueError):
        Checkpoint.from_bytes(data)


def test_from_bytes_rejects_truncated_file(checkpoint: Checkpoint) -> None:
    with pytest.raises(ValueError):
        Checkpoint.from_bytes(checkpoint.to_bytes()[:-100])


def test_from_bytes_rejects_incomplete_metadata() -> None:
    meta = {"format": "kamp-checkpoint", "format_version": 1}
    with pytest.raises(ValueError):
        Checkpoint.from_bytes(st_save({"w": torch.zeros(2)}, metadata={"kamp": json.dumps(meta)}))


def test_load_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Checkpoint.load(tmp_path / "absent.safetensors")


def test_the_features_before_the_last_relu_survive_a_round_trip_and_older_files_read_after_it(
    checkpoint: Checkpoint, tmp_path: Path
) -> None:
    from dataclasses import replace

    net = LandmarkNet(backbone=BackboneConfig(name="hrnet_w18_tiny", last_relu=False), step_sizes=[2, 3])
    net.load_state_dict(checkpoint.state_dict)
    before = replace(checkpoint, backbone=BackboneConfig(name="hrnet_w18_tiny", last_relu=False))
    before.save(tmp_path / "pre.safetensors")
    loaded = Checkpoint.load(tmp_path / "pre.safetensors")
    assert loaded.backbone.last_relu is False
    x = torch.rand(1, 1, 96, 64)
    with torch.no_grad():
        assert torch.equal(loaded.build_model()(x), net.eval()(x))
    # A file written before the option has no such key: its network is the one it was trained as.
    data = checkpoint.to_bytes()
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    meta = json.loads(header["__metadata__"]["kamp"])
    del meta["backbone"]["last_relu"], meta["backbone"]["head_channels"]
    header["__metadata__"]["kamp"] = json.dumps(meta)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    older = Checkpoint.from_bytes(len(encoded).to_bytes(8, "little") + encoded + data[8 + header_len :])
    assert older.backbone.last_relu is True and older.backbone.head_channels == 0


def test_a_head_with_a_hidden_layer_survives_a_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(5)
    backbone = BackboneConfig(name="hrnet_w18_tiny", head_channels=8)
    net = LandmarkNet(backbone=backbone, step_sizes=[2, 3])
    with torch.no_grad():
        net.train()(torch.rand(2, 1, 96, 64))  # head batch-norm statistics other than the defaults
    landmarks = [LandmarkInfo(code=c, step=s) for c, s in zip(CODES, STEPS, strict=True)]
    Checkpoint(
        state_dict={k: v.detach().clone() for k, v in net.state_dict().items()},
        landmarks=landmarks,
        backbone=backbone,
        codec=CodecConfig(input_size=(64, 96)),
        step=1,
        strategy="kamp",
    ).save(tmp_path / "hidden.safetensors")
    loaded = Checkpoint.load(tmp_path / "hidden.safetensors")
    x = torch.rand(1, 1, 96, 64)
    assert loaded.backbone.head_channels == 8
    with torch.no_grad():
        assert torch.equal(loaded.build_model()(x), net.eval()(x))
