"""Label placement for rendered landmarks: known answers, crowded and border points, a real cephalogram's 38
labels at the rendered font size, and the rendered PNG itself."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from server.predict.labels import FIRST_RING, LabelPlacement, place_labels
from server.predict.outputs import label_boxes, label_style, render_png
from server.predict.schemas import PredictedLandmark

R = 5.0
SIZE = (200, 160)


def _overlap(a: LabelPlacement, b: LabelPlacement) -> float:
    """The area, square pixels, that two placed boxes share."""
    (al, at, ar, ab), (bl, bt, br, bb) = a.box, b.box
    return max(0.0, min(ar, br) - max(al, bl)) * max(0.0, min(ab, bb) - max(at, bt))


def _distance(point: tuple[float, float], place: LabelPlacement) -> float:
    """From the point to the nearest point of its box, pixels."""
    left, top, right, bottom = place.box
    return math.dist(point, (min(max(point[0], left), right), min(max(point[1], top), bottom)))


def _assert_readable(points: list[tuple[float, float]], places: list[LabelPlacement], size: tuple[int, int]) -> None:
    """No two boxes overlap, every box lies within the image's pixel centres, none covers a marker."""
    for a, b in itertools.combinations(places, 2):
        assert _overlap(a, b) == 0, (a, b)
    for p in places:
        left, top, right, bottom = p.box
        assert left >= 0 and right <= size[0] - 1 and top >= 0 and bottom <= size[1] - 1, p
        assert all(_distance(q, p) >= R for q in points), p
    for q, p in zip(points, places, strict=True):
        assert p.leader == (_distance(q, p) > 2 * R)


def test_a_lone_point_gets_its_label_at_the_upper_right_without_a_leader() -> None:
    (p,) = place_labels([(100.0, 80.0)], [(30.0, 16.0)], SIZE, R)
    d = FIRST_RING * R / math.sqrt(2)
    # The box's lower-left corner sits on the first ring, up and to the right of the point.
    assert (p.x, p.y, p.w, p.h) == pytest.approx((100 + d, 80 - d - 16, 30, 16))
    assert not p.leader and p.leader_end is None


def test_coincident_points_get_separate_boxes_and_the_crowd_gets_leaders() -> None:
    points = [(100.0, 80.0)] * 2
    two = place_labels(points, [(40.0, 16.0), (15.0, 16.0)], SIZE, R)
    _assert_readable(points, two, SIZE)
    assert not two[0].leader  # the first in input order takes the upper right
    # Ten at one place cannot all stand on the first ring: the displaced ones get leaders ending on their box.
    points = [(100.0, 80.0)] * 10
    ten = place_labels(points, [(30.0, 16.0)] * 10, SIZE, R)
    _assert_readable(points, ten, SIZE)
    assert not ten[0].leader and sum(p.leader for p in ten) >= 2
    for p in ten:
        if p.leader_end is not None:
            ex, ey = p.leader_end
            left, top, right, bottom = p.box
            assert left <= ex <= right and top <= ey <= bottom
            assert ex in (left, right) or ey in (top, bottom)  # on the edge, facing the point
            assert math.dist(points[0], p.leader_end) == pytest.approx(_distance(points[0], p))


def test_the_near_pairs_of_a_cephalogram_stay_apart() -> None:
    # The distances (pixels at 968 x 1200) of the pairs whose labels used to stack: UIT/LIT 3.5, U1A/A 11,
    # L1A/B 26, Gn/Me 29, U6/L6 39.
    codes = ["UIT", "LIT", "U1A", "A", "L1A", "B", "Gn", "Me", "U6", "L6"]
    points = [(290, 432), (292.5, 434.5), (271, 329), (272, 318), (262, 518), (287, 510)]
    points += [(232, 640), (256, 623), (190, 388), (203, 424)]
    r, font, stroke = label_style(968, 1200)
    sizes = [(right - left, bottom - top) for left, top, right, bottom in label_boxes(codes, font, stroke)]
    places = place_labels(points, sizes, (968, 1200), r)
    _assert_readable(points, places, (968, 1200))
    assert all(_distance(q, p) <= 40 for q, p in zip(points, places, strict=True))


@pytest.mark.parametrize("point", [(0.0, 0.0), (199.0, 0.0), (0.0, 159.0), (199.0, 159.0), (199.0, 80.0), (3, 157)])
def test_points_at_the_border_keep_their_box_inside_the_image(point: tuple[float, float]) -> None:
    places = place_labels([point], [(40.0, 16.0)], SIZE, R)
    _assert_readable([point], places, SIZE)
    assert not places[0].leader


def test_a_label_wider_than_the_image_starts_at_its_left_edge() -> None:
    (p,) = place_labels([(5.0, 5.0)], [(50.0, 8.0)], (20, 40), R)
    assert p.x == 0 and p.y + p.h <= 39


def _cld_points(data_root: Path, image_id: str) -> tuple[list[str], list[tuple[float, float]]]:
    with (data_root / "cldetection2023" / "landmarks.csv").open() as f:
        rows = [row for row in csv.DictReader(f) if row["image_id"] == image_id]
    rows.sort(key=lambda row: int(row["landmark_index"]))
    return [row["landmark_code"] for row in rows], [(float(row["x"]), float(row["y"])) for row in rows]


def test_a_real_cephalograms_38_labels_at_the_rendered_size_do_not_overlap(data_root: Path) -> None:
    dataset = json.loads((data_root / "cldetection2023" / "dataset.json").read_text())
    size = tuple(dataset["image_size"])
    assert size == (968, 1200)
    r, font, stroke = label_style(*size)
    for image_id in dataset["image_ids"][:4]:
        codes, points = _cld_points(data_root, image_id)
        assert len(codes) == 38
        sizes = [(right - left, bottom - top) for left, top, right, bottom in label_boxes(codes, font, stroke)]
        places = place_labels(points, sizes, (968, 1200), r)
        _assert_readable(points, places, (968, 1200))
        assert place_labels(points, sizes, (968, 1200), r) == places  # deterministic


def test_placement_is_deterministic_and_checks_its_input() -> None:
    rng = np.random.default_rng(7)
    points = [(float(x), float(y)) for x, y in rng.uniform(20, 140, size=(25, 2))]
    sizes = [(float(w), 14.0) for w in rng.uniform(10, 40, size=25)]
    first = place_labels(points, sizes, SIZE, R)
    assert place_labels(points, sizes, SIZE, R) == first
    assert place_labels([], [], SIZE, R) == []
    with pytest.raises(ValueError, match="label sizes"):
        place_labels(points, sizes[:-1], SIZE, R)
    with pytest.raises(ValueError, match="radius"):
        place_labels(points, sizes, SIZE, 0)


def _landmark(code: str, confidence: float) -> PredictedLandmark:
    return PredictedLandmark(
        code=code, name="", step=0, x=150, y=120, x_mm=None, y_mm=None, confidence=confidence, stage="local"
    )


def test_render_png_draws_two_coincident_labels_in_two_places() -> None:
    # Green (confident) "Gn" and red (unsure) "Me" at the same pixel: their text must not be drawn in one box.
    pixels = np.full((240, 300), 128 * 257, dtype=np.uint16)
    png = Image.open(io.BytesIO(render_png(pixels, [_landmark("Gn", 0.9), _landmark("Me", 0.1)])))
    rgb = np.asarray(png.convert("RGB")).astype(int)
    r, font, stroke = label_style(300, 240)
    ((_, top, _, bottom),) = label_boxes(["Gn"], font, stroke)
    yy, xx = np.mgrid[: rgb.shape[0], : rgb.shape[1]]
    away = np.hypot(xx - 150, yy - 120) > r + 2  # leave out the rings
    green = away & (rgb[..., 1] - rgb[..., 0] > 80)
    red = away & (rgb[..., 0] - rgb[..., 1] > 80)
    assert green.sum() > 20 and red.sum() > 20
    centres = [np.array([xx[mask].mean(), yy[mask].mean()]) for mask in (green, red)]
    # Drawn at one place the two centres would nearly coincide; apart they are at least a text height away.
    assert np.linalg.norm(centres[0] - centres[1]) > bottom - top
