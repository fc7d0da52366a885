"""Readers for the shared landmark data layout (see ../shared/data/README.md).

A data root holds one folder per dataset (`dataset.json`, `landmarks.csv`, images) and `protocols.json`, the
incremental keypoint learning protocols. Coordinates are (x, y) pixels of the stored image, with the centre
of pixel (column i, row j) at (i, j).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from models.step_data import StepData

#: Image file extensions tried, in order, by DatasetInfo.image_path.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".png", ".bmp", ".tif")

#: Environment variable that overrides the default data root.
DATA_ROOT_ENV = "KAMP_DATA_ROOT"


def default_data_root() -> Path:
    """The shared data folder: $KAMP_DATA_ROOT if set, else <repository>/../shared/data (may not exist)."""
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


class Landmark(NamedTuple):
    """One landmark of a dataset: 1-based number (in dataset order), short code and full name."""

    number: int
    code: str
    name: str


Labels = dict[tuple[str, str], dict[str, tuple[float, float]]]


@dataclass
class DatasetInfo:
    """A landmark dataset: its metadata (dataset.json) and labels (landmarks.csv). Build with load_dataset.

    Attributes:
        name: dataset name, e.g. "isbi2015".
        modality: imaging modality, free text.
        root: the dataset folder.
        image_dir: the resolved image folder (may lie outside root, e.g. cldetection2023 -> isbi2015/images).
        image_size: (W, H) of the stored images, in pixels.
        pixel_spacing_mm: isotropic mm per pixel of the stored images; None when unknown (errors in pixels).
        landmarks: the landmarks, in dataset order.
        annotators: names of the annotators whose labels landmarks.csv holds.
        splits: official splits, split name -> image ids; may be empty.
        image_ids: sorted ids of all images labelled in landmarks.csv.
    """

    name: str
    modality: str
    root: Path
    image_dir: Path
    image_size: tuple[int, int]
    pixel_spacing_mm: float | None
    landmarks: list[Landmark]
    annotators: list[str]
    splits: dict[str, list[str]]
    image_ids: list[str]
    labels: Labels = field(default_factory=dict, repr=False)
    _images: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def codes(self) -> list[str]:
        """All landmark codes, in dataset order."""
        return [lm.code for lm in self.landmarks]

    def _check_codes(self, codes: Sequence[str]) -> None:
        known = set(self.codes)
        unknown = [c for c in codes if c not in known]
        if unknown:
            raise ValueError(f"unknown landmark codes for dataset {self.name!r}: {unknown}")

    def _check_annotator(self, annotator: str) -> None:
        if annotator not in self.annotators:
            raise ValueError(f"unknown annotator {annotator!r} for dataset {self.name!r}: {self.annotators}")

    def _check_ids(self, image_ids: Sequence[str]) -> None:
        known = set(self.image_ids)
        unknown = [i for i in image_ids if i not in known]
        if unknown:
            shown = unknown[:10] + (["..."] if len(unknown) > 10 else [])
            raise ValueError(f"{len(unknown)} image ids not in dataset {self.name!r}: {shown}")

    def keypoints(
        self, image_ids: Sequence[str], codes: Sequence[str] | None = None, annotator: str | None = None
    ) -> np.ndarray:
        """Labelled landmark positions.

        Args:
            image_ids: N image ids of this dataset.
            codes: K landmark codes (default: all, in dataset order).
            annotator: whose labels (default: the first annotator of the dataset).

        Returns:
            (N, K, 2) float64 (x, y) in pixels of the stored image; NaN where a landmark is not labelled.
        """
        codes = self.codes if codes is None else list(codes)
        annotator = self.annotators[0] if annotator is None else annotator
        self._check_codes(codes)
        self._check_annotator(annotator)
        self._check_ids(image_ids)
        out = np.full((len(image_ids), len(codes), 2), np.nan)
        for i, image_id in enumerate(image_ids):
            points = self.labels.get((image_id, annotator), {})
            for k, code in enumerate(codes):
                if code in points:
                    out[i, k] = points[code]
        return out

    def image_path(self, image_id: str) -> Path:
        """Path of an image file, trying the extensions of IMAGE_EXTENSIONS; FileNotFoundError if none."""
        for ext in IMAGE_EXTENSIONS:
            path = self.image_dir / f"{image_id}{ext}"
            if path.is_file():
                return path
        raise FileNotFoundError(
            f"no image {image_id!r} of dataset {self.name!r} in {self.image_dir} (tried {IMAGE_EXTENSIONS})"
        )

    def load_image(self, image_id: str) -> np.ndarray:
        """The image as a read-only (H, W) uint8 array (mode "L"), cached on this instance.

        The array is shared by every caller (steps, strategies): copy it before modifying it in place.
        """
        image = self._images.get(image_id)
        if image is None:
            with Image.open(self.image_path(image_id)) as im:
                image = np.array(im.convert("L"), dtype=np.uint8)
            image.flags.writeable = False
            self._images[image_id] = image
        return image

    def clear_cache(self) -> None:
        """Forget the cached images."""
        self._images.clear()

    def step_data(
        self,
        image_ids: Sequence[str],
        codes: Sequence[str] | None = None,
        annotator: str | None = None,
        *,
        images: Sequence[np.ndarray] | None = None,
    ) -> StepData:
        """StepData of the given images and landmarks.

        Args:
            image_ids: N image ids (also the StepData ids).
            codes: K landmark codes (default: all); see keypoints.
            annotator: whose labels (default: the first annotator).
            images: N images to use instead of loading them from disk (e.g. already preprocessed).

        Returns:
            StepData with keypoints (N, K, 2) in pixels and spacing_mm (N, 2) = pixel_spacing_mm, or NaN
            when the dataset has no spacing.
        """
        image_ids = list(image_ids)
        keypoints = self.keypoints(image_ids, codes, annotator)
        if images is None:
            images = [self.load_image(i) for i in image_ids]
        elif len(images) != len(image_ids):
            raise ValueError(f"got {len(images)} images for {len(image_ids)} image ids")
        spacing = np.nan if self.pixel_spacing_mm is None else self.pixel_spacing_mm
        return StepData(
            images=list(images),
            keypoints=keypoints,
            codes=self.codes if codes is None else list(codes),
            spacing_mm=np.full((len(image_ids), 2), spacing, dtype=np.float64),
            ids=image_ids,
        )


def _read_labels(path: Path, codes: set[str]) -> Labels:
    """landmarks.csv as {(image_id, annotator): {code: (x, y)}}."""
    labels: Labels = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            code = row["landmark_code"]
            if code not in codes:
                raise ValueError(f"{path}: unknown landmark code {code!r} for image {row['image_id']!r}")
            key = (row["image_id"], row["annotator"])
            labels.setdefault(key, {})[code] = (float(row["x"]), float(row["y"]))
    return labels


def load_dataset(path: Path | str) -> DatasetInfo:
    """Read a dataset folder (e.g. <data root>/isbi2015): its dataset.json and landmarks.csv."""
    root = Path(path).expanduser().resolve()
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"no dataset.json in {root}")
    meta: dict[str, Any] = json.loads(meta_path.read_text())
    landmarks = [Landmark(int(lm["index"]), str(lm["code"]), str(lm["name"])) for lm in meta["landmarks"]]
    labels = _read_labels(root / "landmarks.csv", {lm.code for lm in landmarks})
    annotators = list(meta.get("annotators") or sorted({a for _, a in labels}))
    spacing = meta.get("pixel_spacing_mm")
    width, height = meta["image_size"]
    return DatasetInfo(
        name=str(meta.get("name", root.name)),
        modality=str(meta.get("modality", "")),
        root=root,
        image_dir=(root / meta.get("image_dir", "images")).resolve(),
        image_size=(int(width), int(height)),
        pixel_spacing_mm=None if spacing is None else float(spacing),
        landmarks=landmarks,
        annotators=annotators,
        splits={str(k): list(v) for k, v in (meta.get("splits") or {}).items()},
        image_ids=sorted({image_id for image_id, _ in labels}),
        labels=labels,
    )


# --------------------------------------------------------------------------------------------------------
# Incremental keypoint learning protocols


@dataclass
class ProtocolStep:
    """One incremental step: its new landmark codes and the images labelled with (only) them."""

    landmarks: list[str]
    images: list[str]


@dataclass
class Protocol:
    """An incremental keypoint learning protocol of protocols.json. Build with load_protocol.

    Attributes:
        name: protocol name, e.g. "isbi19-5step".
        dataset: the dataset folder name under the data root.
        annotator: whose labels the protocol uses.
        description: free text.
        steps: the steps, in training order.
        test_images: images evaluated after every step on all landmarks learned so far.
        val_images: validation images (may be empty).
        extra_tests: further test sets, name -> image ids (may be empty).
    """

    name: str
    dataset: str
    annotator: str
    description: str
    steps: list[ProtocolStep]
    test_images: list[str]
    val_images: list[str] = field(default_factory=list)
    extra_tests: dict[str, list[str]] = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    @property
    def landmarks(self) -> list[str]:
        """All landmark codes of the protocol, in step order."""
        return [code for step in self.steps for code in step.landmarks]

    @property
    def landmark_step(self) -> dict[str, int]:
        """The step (0-based) at which each landmark is learned."""
        return {code: t for t, step in enumerate(self.steps) for code in step.landmarks}

    def landmarks_up_to(self, t: int) -> list[str]:
        """Codes of the landmarks learned at steps 0..t, in step order."""
        if not 0 <= t < self.num_steps:
            raise IndexError(f"protocol {self.name!r} has steps 0..{self.num_steps - 1}, got {t}")
        return [code for step in self.steps[: t + 1] for code in step.landmarks]

    def load_dataset(self, data_root: Path | str) -> DatasetInfo:
        """The dataset this protocol uses, read from data_root."""
        return load_dataset(Path(data_root) / self.dataset)


def _read_protocols(data_root: Path | str) -> dict[str, dict[str, Any]]:
    path = Path(data_root) / "protocols.json"
    if not path.is_file():
        raise FileNotFoundError(f"no protocols.json in {data_root}")
    return json.loads(path.read_text())["protocols"]


def available_protocols(data_root: Path | str) -> list[str]:
    """Names of the protocols in <data_root>/protocols.json, sorted."""
    return sorted(_read_protocols(data_root))


def _image_list(value: Any) -> list[str]:
    """An image list given either as a list or as {"images": [...]}."""
    if isinstance(value, dict):
        value = value.get("images", [])
    return [str(v) for v in value or []]


def load_protocol(data_root: Path | str, name: str) -> Protocol:
    """Read protocol `name` from <data_root>/protocols.json; ValueError listing the known ones if unknown."""
    protocols = _read_protocols(data_root)
    if name not in protocols:
        raise ValueError(f"unknown protocol {name!r}; available: {sorted(protocols)}")
    p = protocols[name]
    steps = [ProtocolStep(list(s["landmarks"]), _image_list(s["images"])) for s in p["steps"]]
    codes = [code for step in steps for code in step.landmarks]
    repeated = sorted({c for c in codes if codes.count(c) > 1})
    if repeated:
        raise ValueError(f"protocol {name!r} learns landmarks at more than one step: {repeated}")
    return Protocol(
        name=name,
        dataset=str(p["dataset"]),
        annotator=str(p["annotator"]),
        description=str(p.get("description", "")),
        steps=steps,
        test_images=_image_list(p.get("test")),
        val_images=_image_list(p.get("val")),
        extra_tests={str(k): _image_list(v) for k, v in (p.get("extra_tests") or {}).items()},
    )
