"""Deterministic placement of landmark labels on an image, apart from each other and from every marker.

Everything here is in image pixels, with pixel centres at integers (the service's convention): an image of
width W and height H has its pixel centres in [0, W - 1] x [0, H - 1], and every label box is kept in there.

The method, greedy and without randomness:
1. Order the labels: the most crowded point first (the one with the most other points within its label's reach,
   w + h + 2 r), ties by input order. Crowded points have the fewest good places, so they choose first.
2. For each label, candidate boxes stand on rings around its point: the first at 1.5 r (8 directions, the
   box's nearest edge or corner at that distance), the next ones farther by max(r, h / 2) each, with more
   directions as the rings grow; each candidate is moved inside the image.
3. Keep the candidate with, in this order: the least area overlapping the boxes already placed (grown by a small
   gap), the fewest marker discs touched (every point's, its own included), the shortest distance from the point
   to the box, then the first in ring order. So two boxes overlap only when no candidate within the rings is free.
4. A box farther than 2 r from its point gets a leader: its end is the point of the box nearest the point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Distance of the first ring from the point, in marker radii.
FIRST_RING = 1.5
#: A box within this many marker radii of its point reads as its label without a leader.
ADJACENT = 2.0


@dataclass(frozen=True)
class LabelPlacement:
    """One label's box, in image pixels: top-left (x, y) and size (w, h). `leader_end` is where a leader line
    from the point meets the box (the box's point nearest the landmark), or None when the box is adjacent."""

    x: float
    y: float
    w: float
    h: float
    leader_end: tuple[float, float] | None

    @property
    def leader(self) -> bool:
        """Whether the box is displaced from its point and needs a leader line."""
        return self.leader_end is not None

    @property
    def box(self) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) in image pixels."""
        return (self.x, self.y, self.x + self.w, self.y + self.h)


def place_labels(
    points: Sequence[tuple[float, float]],
    sizes: Sequence[tuple[float, float]],
    image_size: tuple[int, int],
    radius: float,
    *,
    rings: int = 16,
    gap: float = 1.0,
) -> list[LabelPlacement]:
    """Place one label box per point, in input order.

    points: (x, y) of each landmark, image pixels (pixel centres at integers).
    sizes: (w, h) of each label's text box, image pixels, as the caller's font draws it.
    image_size: (width, height) of the image, pixels.
    radius: the marker's radius, pixels; labels keep off every marker disc of this radius (plus `gap`).
    rings: how many rings of candidates to search (the bounded search radius).
    gap: the least clear space wanted between two boxes, and between a box and a marker, pixels."""
    if len(points) != len(sizes):
        raise ValueError(f"{len(points)} points but {len(sizes)} label sizes")
    if radius <= 0:
        raise ValueError(f"the marker radius must be positive, not {radius}")
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    dims = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    placed = np.zeros((0, 4))  # (left, top, right, bottom) of the boxes placed so far
    chosen: dict[int, np.ndarray] = {}
    for i in placement_order(pts, dims, radius):
        corner = _best_candidate(pts, i, dims[i], placed, image_size, radius, rings, gap)
        chosen[i] = corner
        placed = np.vstack([placed, np.concatenate([corner, corner + dims[i]])])
    return [_placement(pts[i], chosen[i], dims[i], radius) for i in range(len(pts))]


def placement_order(points: np.ndarray, sizes: np.ndarray, radius: float) -> list[int]:
    """Indices of the labels in the order they choose: the most other points within a label's reach
    (w + h + 2 r, image pixels) first, ties by input order. points and sizes are (N, 2) arrays."""
    if len(points) == 0:
        return []
    dist = np.hypot(*(points[:, None, :] - points[None, :, :]).transpose(2, 0, 1))
    reach = sizes.sum(axis=1) + 2 * radius
    crowd = (dist < reach[:, None]).sum(axis=1) - 1
    return [int(i) for i in np.lexsort((np.arange(len(points)), -crowd))]


def ring_offsets(size: np.ndarray, radius: float, rings: int) -> np.ndarray:
    """(N, 2) top-left corners of the candidate boxes of a label of this (w, h) size, relative to its point,
    image pixels, ring by ring from the nearest. On a ring at distance d in direction u, the box's edge point
    p + d u faces the point: the box's centre is p + d u + (v_x w / 2, v_y h / 2), v = u / max(|u_x|, |u_y|)."""
    w, h = float(size[0]), float(size[1])
    step = max(radius, h / 2)
    offsets = []
    for k in range(rings):
        d = FIRST_RING * radius + k * step
        n = 8 * max(1, math.ceil(2 * math.pi * d / (8 * step)))
        # Start at the upper right (y points down), the usual place of a label, and go clockwise.
        theta = -math.pi / 4 + 2 * math.pi * np.arange(n) / n
        u = np.stack([np.cos(theta), np.sin(theta)], axis=1)
        v = u / np.abs(u).max(axis=1, keepdims=True)
        centre = d * u + v * np.array([w / 2, h / 2])
        offsets.append(centre - np.array([w / 2, h / 2]))
    return np.concatenate(offsets)


def _best_candidate(
    points: np.ndarray,
    i: int,
    size: np.ndarray,
    placed: np.ndarray,
    image_size: tuple[int, int],
    radius: float,
    rings: int,
    gap: float,
) -> np.ndarray:
    """The (x, y) top-left, image pixels, of label i's best candidate box (see the module's rule 3)."""
    corners = inside_image(points[i] + ring_offsets(size, radius, rings), size, image_size)
    boxes = np.concatenate([corners, corners + size], axis=1)
    overlap = overlap_area(boxes, placed, gap)
    touched = discs_touched(boxes, points, radius + gap)
    distance = np.hypot(*(points[i] - nearest_points(boxes, points[i])).T)
    best = np.lexsort((np.arange(len(boxes)), distance, touched, overlap))[0]
    return np.asarray(corners[best])


def inside_image(corners: np.ndarray, size: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(N, 2) top-left corners moved so that their (w, h) boxes lie within the pixel centres of the image,
    [0, width - 1] x [0, height - 1]; a box larger than the image keeps its top-left at 0."""
    limit = np.maximum(np.asarray(image_size, dtype=np.float64) - 1 - size, 0.0)
    return np.clip(corners, 0.0, limit)


def overlap_area(boxes: np.ndarray, others: np.ndarray, gap: float = 0.0) -> np.ndarray:
    """For each of the (N, 4) boxes (left, top, right, bottom; image pixels), the summed area, square pixels, of
    its overlap with the (M, 4) others, each box grown by `gap` (so boxes closer than `gap` count as overlapping)."""
    if len(others) == 0:
        return np.zeros(len(boxes))
    lo = np.maximum(boxes[:, None, :2], others[None, :, :2])
    hi = np.minimum(boxes[:, None, 2:], others[None, :, 2:])
    sides = np.clip(hi - lo + gap, 0.0, None)
    return np.asarray((sides[..., 0] * sides[..., 1]).sum(axis=1))


def nearest_points(boxes: np.ndarray, point: np.ndarray) -> np.ndarray:
    """(N, 2): the point of each (N, 4) box (left, top, right, bottom; image pixels) nearest `point` (x, y)."""
    return np.clip(point, boxes[:, :2], boxes[:, 2:])


def discs_touched(boxes: np.ndarray, centres: np.ndarray, radius: float) -> np.ndarray:
    """For each of the (N, 4) boxes (image pixels), how many discs of this radius (pixels) round the (M, 2)
    centres it reaches into."""
    nearest = np.clip(centres[None, :, :], boxes[:, None, :2], boxes[:, None, 2:])
    dist = np.hypot(*(nearest - centres[None, :, :]).transpose(2, 0, 1))
    return np.asarray((dist < radius).sum(axis=1))


def _placement(point: np.ndarray, corner: np.ndarray, size: np.ndarray, radius: float) -> LabelPlacement:
    """The LabelPlacement of a label at this top-left corner (image pixels), with its leader when displaced."""
    box = np.concatenate([corner, corner + size])[None, :]
    end = nearest_points(box, point)[0]
    displaced = math.dist(point, end) > ADJACENT * radius
    return LabelPlacement(
        x=float(corner[0]),
        y=float(corner[1]),
        w=float(size[0]),
        h=float(size[1]),
        leader_end=(float(end[0]), float(end[1])) if displaced else None,
    )
