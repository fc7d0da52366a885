"""Cephalometric constructions and the catalogue: hand-made points with known answers."""

from __future__ import annotations

import copy
import csv
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from models.analyses import CatalogueError, coverage, load_catalogue, measure, to_catalogue
from models.analyses import constructions as geo
from models.analyses.catalogue import parse_catalogue


def pts(*xy: tuple[float, float]) -> list[np.ndarray]:
    return [np.array([p], dtype=np.float64) for p in xy]


def test_a_right_angle_is_90_and_a_straight_one_180() -> None:
    a, v, b = pts((0, -5), (0, 0), (7, 0))
    assert geo.angle_at(a, v, b)[0] == pytest.approx(90.0)
    a, v, b = pts((-3, 0), (0, 0), (4, 0))
    assert geo.angle_at(a, v, b)[0] == pytest.approx(180.0)


def test_a_point_on_the_line_is_at_0_mm_and_ahead_is_positive() -> None:
    a, b = pts((0, 0), (0, 10))  # a vertical line (y down)
    assert geo.point_to_line(*pts((0, 4)), a, b, "anterior")[0] == pytest.approx(0.0)
    assert geo.point_to_line(*pts((3, 4)), a, b, "anterior")[0] == pytest.approx(3.0)
    assert geo.point_to_line(*pts((-2, 4)), a, b, "anterior")[0] == pytest.approx(-2.0)
    # The sign does not depend on the line's direction.
    assert geo.point_to_line(*pts((3, 4)), b, a, "anterior")[0] == pytest.approx(3.0)
    assert geo.point_to_line(*pts((3, 4)), a, b, "posterior")[0] == pytest.approx(-3.0)


def test_clockwise_is_as_seen_on_the_image() -> None:
    right, down_right = pts((1, 0), (1, 1))  # y points down: (1, 1) is below the x axis on the image
    assert geo.signed_vector_angle(right, down_right, "clockwise")[0] == pytest.approx(45.0)
    assert geo.signed_vector_angle(right, down_right, "counterclockwise")[0] == pytest.approx(-45.0)
    assert geo.vector_angle(right, down_right)[0] == pytest.approx(45.0)


def test_projected_distance_along_the_line() -> None:
    a, b = pts((0, 0), (10, 0))
    p, q = pts((7, -3), (2, 5))
    assert geo.projected_distance(p, q, a, b, "anterior")[0] == pytest.approx(5.0)
    assert geo.projected_distance(p, q, b, a, "anterior")[0] == pytest.approx(5.0)
    assert geo.projected_distance(q, p, a, b, "anterior")[0] == pytest.approx(-5.0)


def test_signed_distance_and_perpendicular() -> None:
    p, q = pts((3, 4), (0, 0))
    assert geo.signed_distance(p, q, "anterior")[0] == pytest.approx(5.0)
    assert geo.signed_distance(q, p, "anterior")[0] == pytest.approx(-5.0)
    through, other = geo.perpendicular_through(*pts((5, 5), (0, 0), (10, 0)))
    assert other[0] - through[0] == pytest.approx([0.0, 1.0])


# A schematic right-facing profile (image pixels, y down; 0.1 mm/px) with known answers.
FACE = {
    "S": (0.0, 0.0),
    "N": (700.0, 0.0),  # SN horizontal
    "A": (700.0, 500.0),  # straight below N: SNA = 90
    "B": (600.0, 1000.0),
    "Po": (-100.0, 100.0),
    "Or": (600.0, 100.0),  # Frankfort horizontal, parallel to SN
    "Go": (0.0, 800.0),
    "Me": (600.0, 1100.0),
    "Gn": (650.0, 1080.0),
    "UIT": (720.0, 700.0),
    "LIT": (700.0, 690.0),
    "PNS": (100.0, 400.0),
    "ANS": (750.0, 400.0),  # palatal plane parallel to Frankfort
    "Pog": (650.0, 1050.0),
}


def value(result, analysis: str, code: str) -> float:  # type: ignore[no-untyped-def]
    return next(v for v in result.values if v.analysis == analysis and v.code == code).value


def test_measurements_of_a_schematic_face() -> None:
    result = measure(FACE, (0.1, 0.1))
    assert value(result, "steiner", "SNA") == pytest.approx(90.0)
    sna_b = np.degrees(np.arctan2(1000, 100))  # N->S points back, N->B down and 100 px back
    assert value(result, "steiner", "SNB") == pytest.approx(sna_b)
    assert value(result, "steiner", "ANB") == pytest.approx(90.0 - sna_b)
    assert value(result, "tweed", "FMA") == pytest.approx(np.degrees(np.arctan2(300, 600)))
    assert value(result, "isbi2015", "FHI") == pytest.approx(800 / np.hypot(100, 1100))
    assert value(result, "isbi2015", "MW") == pytest.approx(np.hypot(20, 10) * 0.1)  # upper incisor ahead: +
    # ODI = angle(Me->Go, B->A) + 0 (palatal plane parallel to Frankfort)
    me_go, b_a = np.array([-600.0, -300.0]), np.array([100.0, -500.0])
    cos = me_go @ b_a / np.linalg.norm(me_go) / np.linalg.norm(b_a)
    assert value(result, "isbi2015", "ODI") == pytest.approx(np.degrees(np.arccos(cos)))


def test_a_left_facing_image_measures_as_its_mirror() -> None:
    mirrored = {c: (2000.0 - x, y) for c, (x, y) in FACE.items()}
    right, left = measure(FACE, (0.1, 0.1)), measure(mirrored, (0.1, 0.1))
    assert [v.code for v in right.values] == [v.code for v in left.values]
    for a, b in zip(right.values, left.values, strict=True):
        assert a.value == pytest.approx(b.value, abs=1e-9), a.code


def test_the_face_s_direction_comes_from_any_pair_that_tells_it() -> None:
    """Without S, N, Po and Or (a project whose first step holds teeth only), the molars behind the incisors
    tell the direction; with no such pair, signed measurements are omitted rather than given a guessed sign."""
    teeth = {c: FACE[c] for c in ("UIT", "LIT", "A", "B", "Pog")} | {"U6": (450.0, 705.0), "L6": (450.0, 715.0)}
    mirrored = {c: (2000.0 - x, y) for c, (x, y) in teeth.items()}
    right, left = measure(teeth, (0.1, 0.1)), measure(mirrored, (0.1, 0.1))
    assert value(right, "isbi2015", "MW") == pytest.approx(np.hypot(20, 10) * 0.1)  # upper incisor ahead: +
    assert [(v.code, round(v.value, 9)) for v in right.values] == [(v.code, round(v.value, 9)) for v in left.values]

    unknown = measure({c: teeth[c] for c in ("UIT", "LIT", "A", "B", "Pog")}, (0.1, 0.1))
    omitted = {(o.analysis, o.code): o for o in unknown.omitted}
    assert "face's direction" in omitted[("isbi2015", "MW")].reason  # signed: which incisor is ahead?
    assert ("isbi2015", "MW") not in {(v.analysis, v.code) for v in unknown.values}


def test_signs_follow_the_published_conventions() -> None:
    face = dict(FACE)
    face["UIT"] = (680.0, 700.0)  # upper incisor behind the lower: anterior cross bite
    result = measure(face, (0.1, 0.1))
    mw = next(v for v in result.values if v.analysis == "isbi2015" and v.code == "MW")
    assert mw.value < 0 and mw.class_code == "C3"
    face["ANS"] = (750.0, 450.0)  # palatal plane tipped anteriorly down: a positive palatal angle raises ODI
    assert value(measure(face, (0.1, 0.1)), "isbi2015", "ODI") > value(result, "isbi2015", "ODI")


def test_without_spacing_lengths_are_omitted_with_the_reason() -> None:
    result = measure(FACE, None)
    omitted = {(o.analysis, o.code): o for o in result.omitted}
    assert "spacing" in omitted[("isbi2015", "MW")].reason
    assert value(result, "steiner", "SNA") == pytest.approx(90.0)  # angles are still taken
    assert ("isbi2015", "FHI") not in omitted  # and ratios


def test_missing_landmarks_are_named() -> None:
    result = measure(FACE, (0.1, 0.1))
    omitted = {(o.analysis, o.code): o for o in result.omitted}
    assert omitted[("wits", "AO-BO")].missing == ("U6", "L6")
    assert "U6" in omitted[("wits", "AO-BO")].reason


def test_classes_and_deviation() -> None:
    ml = measure(FACE, (0.1, 0.1), analyses=["steiner"])
    sna = next(v for v in ml.values if v.code == "SNA")
    assert sna.deviation_sd == pytest.approx((90 - 82) / 2)
    assert sna.class_code == "prognathic"
    # A boundary value belongs to the first class listed that holds it (the normal range).
    catalogue = load_catalogue()
    anb = catalogue.analysis("isbi2015").measurement("ANB")
    assert anb.classify(5.7).code == "C1" and anb.classify(5.71).code == "C2"  # type: ignore[union-attr]
    mw = catalogue.analysis("isbi2015").measurement("MW")
    assert [mw.classify(v).code for v in (-0.1, 0.0, 1.0, 2.0, 4.5, 4.6)] == ["C3", "C2", "C2", "C1", "C1", "C4"]  # type: ignore[union-attr]


def test_the_range_widens_with_the_landmark_errors_and_holds_the_value() -> None:
    small = measure(FACE, (0.1, 0.1), analyses=["steiner"], landmark_error={c: 0.5 for c in FACE})
    large = measure(FACE, (0.1, 0.1), analyses=["steiner"], landmark_error={c: 2.0 for c in FACE})
    for a, b in zip(small.values, large.values, strict=True):
        assert a.low is not None and a.high is not None and b.low is not None and b.high is not None
        assert a.low <= a.value <= a.high
        assert b.high - b.low > 2 * (a.high - a.low)
    none = measure(FACE, (0.1, 0.1), analyses=["steiner"])
    assert all(v.low is None for v in none.values)


def test_the_range_of_sna_matches_its_propagated_error() -> None:
    # SNA's vertex N and the arm ends S (700 px = 70 mm away) and A (50 mm): moving each point by sigma (per axis)
    # moves the angle by about sigma / arm; the 90% range is about 2 x 1.645 SDs of the propagated error.
    sigma = 1.0 * np.sqrt(2 / np.pi)  # the per-axis SD of a 1 mm mean radial error
    arm_s, arm_a = 70.0, 50.0
    sd_deg = np.degrees(
        np.sqrt((sigma / arm_s) ** 2 + (sigma / arm_a) ** 2 + (sigma / arm_s) ** 2 + (sigma / arm_a) ** 2)
    )
    m = measure(FACE, (0.1, 0.1), analyses=["steiner"], landmark_error={c: 1.0 for c in FACE}, samples=4000)
    sna = next(v for v in m.values if v.code == "SNA")
    assert sna.high - sna.low == pytest.approx(2 * 1.645 * sd_deg, rel=0.1)  # type: ignore[operator]


def test_every_catalogue_code_is_a_landmark_of_the_default_mapping(data_root: Path) -> None:
    catalogue = load_catalogue()
    cld = json.loads((data_root / "cldetection2023" / "dataset.json").read_text())
    known = {lm["code"] for lm in cld["landmarks"]}
    used = {c for a in catalogue.analyses for m in a.measurements for c in catalogue.landmarks_of(a, m)}
    assert used <= set(catalogue.landmarks) <= known
    # With all 38 landmarks every measurement is computable; with ISBI's 19 the ISBI 2015 eight are.
    assert all(not c.missing for c in coverage(known))
    isbi = json.loads((data_root / "isbi2015" / "dataset.json").read_text())
    by_code = {c.analysis: c for c in coverage(lm["code"] for lm in isbi["landmarks"])}
    assert by_code["isbi2015"].computable == ["ANB", "SNB", "SNA", "ODI", "APDI", "FHI", "FMA", "MW"]
    assert by_code["wits"].missing == {"AO-BO": ["U6", "L6"]}


def test_tweeds_triangle_closes_on_real_annotations(data_root: Path) -> None:
    with open(data_root / "cldetection2023" / "landmarks.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["image_id"] == "001"]
    points = {r["landmark_code"]: (float(r["x"]), float(r["y"])) for r in rows}
    result = measure(points, (0.2, 0.2), analyses=["tweed", "steiner", "isbi2015"])
    assert value(result, "tweed", "FMA") + value(result, "tweed", "IMPA") + value(
        result, "tweed", "FMIA"
    ) == pytest.approx(180)
    # Steiner's and the challenge's SNA are one construction with two sets of classes.
    assert value(result, "steiner", "SNA") == pytest.approx(value(result, "isbi2015", "SNA"))
    assert 60 < value(result, "steiner", "SNA") < 100 and 10 < value(result, "steiner", "L1-NB-deg") < 50


def test_project_codes_map_to_the_catalogues() -> None:
    points = {"sella": (1.0, 2.0), "N": (3.0, 4.0), "other": (0.0, 0.0)}
    assert to_catalogue(points, {"S": "sella"}) == {"S": (1.0, 2.0), "N": (3.0, 4.0)}


def test_an_inconsistent_catalogue_is_refused() -> None:
    data = json.loads(resources.files("models.analyses").joinpath("catalogue.json").read_text())
    bad_unit = copy.deepcopy(data)
    bad_unit["analyses"][0]["measurements"][0]["unit"] = "furlong"
    bad_code = copy.deepcopy(data)
    bad_code["analyses"][0]["measurements"][0]["construction"]["points"][0] = "Xx"
    bad_ref = copy.deepcopy(data)
    bad_ref["analyses"][0]["measurements"][2]["construction"]["terms"][0][0] = "nope"
    bad_side = copy.deepcopy(data)
    steiner = bad_side["analyses"][0]["measurements"]
    next(m for m in steiner if m["code"] == "U1-NA-mm")["construction"]["positive"] = "forwards"
    bad_shape = copy.deepcopy(data)
    bad_shape["analyses"][0]["measurements"][0]["construction"]["points"] = ["S", "N"]
    bad_class = copy.deepcopy(data)
    bad_class["analyses"][0]["measurements"][0]["classes"][0] |= {"min": 90, "max": 80}
    cases = ((bad_unit, "unit"), (bad_code, "Xx"), (bad_ref, "nope"), (bad_side, "positive"), (bad_shape, "points"))
    for broken, words in (*cases, (bad_class, "min > max")):
        with pytest.raises(CatalogueError, match=words):
            parse_catalogue(broken)


def _one(points: dict, analysis: str, code: str) -> float:  # type: ignore[type-arg]
    return value(measure(points, (0.1, 0.1), analyses=[analysis]), analysis, code)


def test_each_signed_measurement_has_the_published_sign() -> None:
    face = dict(FACE)
    # Downs' convexity: positive when A lies ahead of N-Pog.
    assert _one(face | {"A": (720.0, 500.0), "Pog": (650.0, 1050.0)}, "downs", "convexity") > 0
    assert _one(face | {"A": (600.0, 500.0)}, "downs", "convexity") < 0
    # Downs' A-B plane: negative when B lies behind A.
    assert _one(face | {"A": (700.0, 500.0), "B": (650.0, 1000.0)}, "downs", "AB-plane") < 0
    assert _one(face | {"A": (700.0, 500.0), "B": (750.0, 1000.0)}, "downs", "AB-plane") > 0
    # The occlusal cant: positive when the occlusal plane's anterior end is lower than its posterior end.
    molars = {"U6": (400.0, 640.0), "L6": (400.0, 660.0)}
    assert _one(face | molars, "downs", "OP-FH") > 0  # incisors at y ~ 695, molars at 650
    assert _one(face | {"U6": (400.0, 740.0), "L6": (400.0, 760.0)}, "downs", "OP-FH") < 0
    # Wits: positive when A's foot on the occlusal plane lies ahead of B's.
    assert _one(face | molars | {"B": (600.0, 1000.0)}, "wits", "AO-BO") > 0
    assert _one(face | molars | {"B": (800.0, 1000.0)}, "wits", "AO-BO") < 0
    # McNamara: A ahead of the nasion perpendicular is positive (FH is horizontal here: the perpendicular is x = N).
    assert _one(face | {"A": (710.0, 500.0)}, "mcnamara", "A-Nperp") == pytest.approx(1.0)
    assert _one(face | {"A": (690.0, 500.0)}, "mcnamara", "A-Nperp") == pytest.approx(-1.0)
    # Steiner: the upper incisal edge ahead of NA, in mm and as the axis' angle; a retroclined incisor is negative.
    incisor = {"U1A": (700.0, 550.0), "UIT": (720.0, 700.0), "L1A": (650.0, 850.0), "LIT": (700.0, 690.0)}
    assert _one(face | incisor, "steiner", "U1-NA-mm") == pytest.approx(2.0)
    assert _one(face | incisor, "steiner", "U1-NA-deg") > 0
    assert _one(face | incisor | {"U1A": (740.0, 550.0)}, "steiner", "U1-NA-deg") < 0
    assert _one(face | incisor, "steiner", "L1-NB-deg") > 0
    assert _one(face | incisor | {"L1A": (760.0, 850.0)}, "steiner", "L1-NB-deg") < 0
    # Ricketts: a lip behind the E-line (Prn-PogS) is negative.
    soft = {"Prn": (900.0, 450.0), "PogS": (760.0, 1100.0), "UL": (800.0, 700.0), "LL": (830.0, 800.0)}
    assert _one(face | soft, "ricketts-eline", "UL-E") < 0
    assert _one(face | soft | {"UL": (880.0, 700.0)}, "ricketts-eline", "UL-E") > 0
