"""Tests of models.datasets on the real shared data (../shared/data; skipped where it is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.datasets import (
    DatasetInfo,
    Landmark,
    Protocol,
    available_protocols,
    load_dataset,
    load_protocol,
)

PROTOCOLS = ("cld38-5step", "isbi19-5step", "chest6-2step")


@pytest.fixture(scope="module")
def isbi(data_root: Path) -> DatasetInfo:
    return load_dataset(data_root / "isbi2015")


@pytest.fixture(scope="module")
def cld(data_root: Path) -> DatasetInfo:
    return load_dataset(data_root / "cldetection2023")


@pytest.fixture(scope="module")
def chest(data_root: Path) -> DatasetInfo:
    return load_dataset(str(data_root / "chest"))


def test_isbi_metadata(isbi: DatasetInfo) -> None:
    assert isbi.name == "isbi2015"
    assert len(isbi.image_ids) == 400 and isbi.image_ids[0] == "001" and isbi.image_ids == sorted(isbi.image_ids)
    assert len(isbi.landmarks) == 19
    assert isbi.landmarks[0] == Landmark(1, "S", "Sella")
    assert isbi.codes[-1] == "Ar"
    assert isbi.pixel_spacing_mm == pytest.approx(0.2)
    assert isbi.image_size == (968, 1200)
    assert isbi.annotators == ["senior", "junior"]
    assert {k: len(v) for k, v in isbi.splits.items()} == {"train": 150, "test1": 150, "test2": 100}


def test_isbi_keypoints_and_image(isbi: DatasetInfo) -> None:
    kp = isbi.keypoints(["001", "002"], ["S", "N"], "senior")
    assert kp.shape == (2, 2, 2) and kp.dtype == np.float64
    assert tuple(kp[0, 0]) == (417.25, 497.75)  # first senior row of landmarks.csv
    assert not np.isnan(isbi.keypoints(isbi.image_ids, annotator="junior")).any()
    assert isbi.image_path("001").name == "001.jpg"
    image = isbi.load_image("001")
    assert image.shape == (1200, 968) and image.dtype == np.uint8  # (H, W)
    assert isbi.load_image("001") is image  # cached
    assert not image.flags.writeable


def test_isbi_step_data(isbi: DatasetInfo) -> None:
    ids = ["001", "002", "003"]
    data = isbi.step_data(ids, ["S", "N", "Or"], "senior")
    assert len(data) == 3 and data.ids == ids and data.codes == ["S", "N", "Or"]
    assert data.keypoints.shape == (3, 3, 2)
    assert data.spacing_mm.shape == (3, 2) and np.all(data.spacing_mm == 0.2)
    assert data.images[0].shape == (1200, 968)
    fake = [np.zeros((4, 5), np.uint8)] * 3
    assert isbi.step_data(ids, ["S"], "senior", images=fake).images[0].shape == (4, 5)
    with pytest.raises(ValueError):
        isbi.step_data(ids, ["S"], "senior", images=fake[:2])


def test_invalid_requests(isbi: DatasetInfo) -> None:
    with pytest.raises(ValueError, match="Xx"):
        isbi.keypoints(["001"], ["S", "Xx"], "senior")
    with pytest.raises(ValueError, match="nobody"):
        isbi.keypoints(["001"], ["S"], "nobody")
    with pytest.raises(ValueError, match="999"):
        isbi.keypoints(["999"], ["S"], "senior")
    with pytest.raises(FileNotFoundError, match="999"):
        isbi.image_path("999")


def test_cldetection_uses_isbi_images(cld: DatasetInfo, data_root: Path) -> None:
    assert len(cld.landmarks) == 38 and cld.codes[:19] == load_dataset(data_root / "isbi2015").codes
    assert cld.image_dir == (data_root / "isbi2015" / "images").resolve()
    assert len(cld.image_ids) == 266 and cld.annotators == ["cld"]
    assert cld.splits == {}
    assert cld.image_path("001") == (data_root / "isbi2015" / "images" / "001.jpg").resolve()
    assert not np.isnan(cld.keypoints(cld.image_ids[:5], annotator="cld")).any()


def test_chest_has_no_spacing(chest: DatasetInfo) -> None:
    assert chest.pixel_spacing_mm is None and len(chest.landmarks) == 6
    data = chest.step_data(chest.image_ids[:2], ["RApex", "LCardio"], "gu2net")
    assert np.isnan(data.spacing_mm).all() and data.spacing_mm.shape == (2, 2)
    assert data.images[0].shape == (512, 512) and data.images[0].dtype == np.uint8


def test_available_protocols(data_root: Path) -> None:
    assert available_protocols(data_root) == sorted(PROTOCOLS)
    with pytest.raises(ValueError, match="isbi19-5step"):
        load_protocol(data_root, "nope")


@pytest.mark.parametrize("name", PROTOCOLS)
def test_protocol_is_consistent(data_root: Path, name: str) -> None:
    protocol = load_protocol(data_root, name)
    assert isinstance(protocol, Protocol) and protocol.name == name
    dataset = protocol.load_dataset(data_root)
    assert protocol.annotator in dataset.annotators
    # Landmark sets of the steps are disjoint and known to the dataset.
    codes = protocol.landmarks
    assert len(codes) == len(set(codes)) and set(codes) <= set(dataset.codes)
    assert protocol.landmarks_up_to(protocol.num_steps - 1) == codes
    assert protocol.landmark_step[protocol.steps[-1].landmarks[0]] == protocol.num_steps - 1
    # Images of different steps are disjoint, and disjoint from the validation and test images.
    seen: set[str] = set()
    for step in protocol.steps:
        assert step.images and not seen & set(step.images)
        seen |= set(step.images)
    assert protocol.test_images and not seen & set(protocol.test_images)
    assert not seen & set(protocol.val_images) and not set(protocol.test_images) & set(protocol.val_images)
    every = seen | set(protocol.test_images) | set(protocol.val_images)
    every |= {i for ids in protocol.extra_tests.values() for i in ids}
    assert every <= set(dataset.image_ids)


def test_protocol_details(data_root: Path) -> None:
    isbi19 = load_protocol(data_root, "isbi19-5step")
    assert isbi19.dataset == "isbi2015" and isbi19.annotator == "senior" and isbi19.num_steps == 5
    assert len(isbi19.landmarks_up_to(0)) == 11 and len(isbi19.landmarks_up_to(1)) == 13
    assert len(isbi19.test_images) == 150 and len(isbi19.extra_tests["test2"]) == 100
    assert isbi19.val_images == []
    with pytest.raises(IndexError):
        isbi19.landmarks_up_to(5)
    chest = load_protocol(data_root, "chest6-2step")
    assert (len(chest.val_images), len(chest.test_images)) == (34, 50)
    assert chest.landmark_step == {"RApex": 0, "LApex": 0, "RCPA": 0, "LCPA": 0, "RCardio": 1, "LCardio": 1}


def test_protocol_step_data_shapes(data_root: Path, isbi: DatasetInfo) -> None:
    protocol = load_protocol(data_root, "isbi19-5step")
    step = protocol.steps[1]
    data = isbi.step_data(step.images[:4], step.landmarks, protocol.annotator)
    assert data.keypoints.shape == (4, 2, 2) and data.codes == ["LIT", "UIT"]
    test = isbi.step_data(protocol.test_images[:2], protocol.landmarks_up_to(2), protocol.annotator)
    assert test.keypoints.shape == (2, 15, 2) and not np.isnan(test.keypoints).any()
