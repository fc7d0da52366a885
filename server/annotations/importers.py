"""Parsers of bulk annotation formats into {image reference: {code: [x, y]}} in our pixel-centre frame.

- COCO keypoints JSON: categories[].keypoints names the landmarks (codes of the set); annotations[].keypoints
  is [x, y, v, ...] with v = 0 for "not labelled". COCO puts the top-left CORNER of the image at (0, 0), so a
  pixel's centre is at (i + 0.5, j + 0.5): we subtract 0.5. Images are referred to by images[].file_name.
- ISBI 2015 / CL-Detection 2023 text: one file per image, named after it (001.txt for 001.bmp); line i holds
  "x,y" of the set's i-th landmark in integer pixel indices (pixel centres); lines beyond the set are ignored
  (ISBI files carry extra lines of other information).
"""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from ..problems import Problem

Points = dict[str, list[float]]


def _bad(detail: str) -> Problem:
    return Problem(422, detail, slug="bad-import")


def parse_coco(data: bytes, codes: Sequence[str]) -> dict[str, Points]:
    """{file_name: points}; the category's keypoint names must all be landmark codes of the set."""
    try:
        doc = json.loads(data)
        images = {img["id"]: _file_name(n, img["file_name"]) for n, img in enumerate(doc["images"])}
        categories = {c["id"]: _keypoint_names(n, c["keypoints"]) for n, c in enumerate(doc["categories"])}
        annotations: list[Mapping[str, Any]] = doc["annotations"]
    except RecursionError as exc:  # a document nested deeper than the parser's stack
        raise _bad("not a COCO keypoints document: nested too deeply") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise _bad(f"not a COCO keypoints document: {exc!r}") from exc
    if not isinstance(annotations, list):
        raise _bad(f"not a COCO keypoints document: 'annotations' must be a list, got {type(annotations).__name__}")
    out: dict[str, Points] = {}
    for n, ann in enumerate(annotations):
        try:
            names = categories[ann["category_id"]]
            name = images[ann["image_id"]]
            kp = [float(v) for v in ann["keypoints"]]
        except OverflowError as exc:  # an integer literal of hundreds of digits
            raise _bad(f"annotation {n}: keypoints must be finite numbers") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise _bad(f"annotation {n}: {exc!r} (needs image_id, category_id and keypoints)") from exc
        unknown = [k for k in names if k not in codes]
        if unknown:
            raise _bad(f"category keypoints not in the set: {', '.join(unknown)}")
        if len(kp) != 3 * len(names):
            raise _bad(f"annotation {n}: {len(kp)} keypoint values for {len(names)} keypoints (x, y, v each)")
        if not all(math.isfinite(v) for v in kp):
            raise _bad(f"annotation {n}: keypoints must be finite numbers")
        points = {names[i]: [kp[3 * i] - 0.5, kp[3 * i + 1] - 0.5] for i in range(len(names)) if kp[3 * i + 2] > 0}
        if not points:
            raise _bad(f"annotation {n} ({name!r}) labels no keypoint (every visibility flag is 0)")
        if name in out:
            raise _bad(f"image {name!r} has more than one annotation")
        out[name] = points
    return out


def _file_name(n: int, name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise _bad(f"image {n}: file_name must be a non-empty string, got {reprlib.repr(name)}")
    return name


def _keypoint_names(n: int, names: Any) -> list[str]:
    if not isinstance(names, list) or not all(isinstance(k, str) for k in names):
        raise _bad(f"category {n}: keypoints must be a list of landmark codes, got {reprlib.repr(names)}")
    return names


def parse_isbi_text(files: Mapping[str, bytes], codes: Sequence[str]) -> dict[str, Points]:
    """{image stem: points} from ISBI / CL-Detection text files (first len(codes) lines are the set's)."""
    out: dict[str, Points] = {}
    for filename, data in files.items():
        stem = PurePosixPath(filename.replace("\\", "/")).stem
        lines = [ln.strip() for ln in data.decode("utf-8", errors="replace").splitlines() if ln.strip()]
        if len(lines) < len(codes):
            raise _bad(f"{filename}: {len(lines)} lines for the set's {len(codes)} landmarks")
        points: Points = {}
        for code, line in zip(codes, lines, strict=False):
            parts = line.replace(";", ",").replace(" ", ",").split(",")
            try:
                x, y = float(parts[0]), float(parts[1])
            except (IndexError, ValueError) as exc:
                raise _bad(f"{filename}: line for {code} is not 'x,y': {line!r}") from exc
            if not (math.isfinite(x) and math.isfinite(y)):
                raise _bad(f"{filename}: {code} is not a finite point")
            points[code] = [x, y]
        out[stem] = points
    return out
