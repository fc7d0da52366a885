"""Triplets (old landmark <- two new landmarks) that KA-Net associates."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np

Triplet = tuple[str, str, str]


def select_triplets(
    old_positions: Mapping[str, np.ndarray],
    new_positions: Mapping[str, np.ndarray],
    *,
    max_triplets: int,
) -> list[Triplet]:
    """Choose anatomically adjacent triplets from data.

    Each candidate (old o, new a, new b) is scored by the mean over images of |o - a| + |o - b|; the best are
    taken greedily, each old landmark and each new pair at most once. With a single new landmark, a = b.

    Args:
        old_positions: code -> (N, 2) positions of the old landmarks on the step's images, as the old model
            predicts them (the step has no labels for them). Any consistent unit (mm or pixels).
        new_positions: code -> (N, 2) labelled positions of the new landmarks on the same images; NaN where
            unlabelled.
    Returns:
        Up to max_triplets (old, new_a, new_b), best first.
    """
    new_codes = list(new_positions)
    pairs = list(itertools.combinations(new_codes, 2)) or [(c, c) for c in new_codes]
    scored: list[tuple[float, Triplet]] = []
    for o, pos_o in old_positions.items():
        for a, b in pairs:
            d = np.linalg.norm(pos_o - new_positions[a], axis=-1) + np.linalg.norm(pos_o - new_positions[b], axis=-1)
            if np.isfinite(d).any():
                scored.append((float(np.nanmean(d)), (o, a, b)))
    scored.sort(key=lambda s: s[0])
    chosen: list[Triplet] = []
    used_old: set[str] = set()
    used_pairs: set[tuple[str, str]] = set()
    for _, (o, a, b) in scored:
        if len(chosen) >= max_triplets:
            break
        if o in used_old or (a, b) in used_pairs:
            continue
        chosen.append((o, a, b))
        used_old.add(o)
        used_pairs.add((a, b))
    return chosen


def random_triplets(
    old_codes: Sequence[str], new_codes: Sequence[str], count: int, rng: np.random.Generator
) -> list[Triplet]:
    """The ablation's random association: distinct random old landmarks, each with a random new pair."""
    olds = rng.permutation(list(old_codes))[: max(0, count)]
    out: list[Triplet] = []
    for o in olds:
        if len(new_codes) >= 2:
            a, b = rng.choice(len(new_codes), size=2, replace=False)
        else:
            a = b = 0
        out.append((str(o), new_codes[int(a)], new_codes[int(b)]))
    return out
